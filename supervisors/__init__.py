"""Supervisors: OTP's supervision trees on top of the kernel's public API.

A supervisor is an actor that traps exits, starts its children in order, restarts them by strategy
and restart type, bounds restarts by an intensity (escalating when it is exceeded) and stops its
children in reverse order. ``ChildSpec`` is checked data; the restart intensity is a pure function;
everything a supervisor does to a child goes through ``kernel``'s public functions.
"""

from .api import (
    count_children,
    delete_child,
    restart_child,
    start_child,
    terminate_child,
    which_children,
)
from .asgi import AsgiFront, asgi_front
from .dynamic import DynamicSupervisor
from .entities import Entities, EntitiesSupervisor
from .errors import SupervisorError
from .intensity import RestartIntensity, add_restart
from .placement import HashPlacement, Placement
from .spec import ChildSpec
from .supervisor import Supervisor

__all__ = [
    "AsgiFront",
    "ChildSpec",
    "DynamicSupervisor",
    "Entities",
    "EntitiesSupervisor",
    "HashPlacement",
    "Placement",
    "RestartIntensity",
    "Supervisor",
    "SupervisorError",
    "add_restart",
    "asgi_front",
    "count_children",
    "delete_child",
    "restart_child",
    "start_child",
    "terminate_child",
    "which_children",
]
