"""Restart intensity: a pure function of timestamps, as OTP's ``add_restart``.

A supervisor may restart at most ``max_restarts`` children within any ``max_seconds`` window; one
more restart than that means the fault is not local, and the supervisor gives up (escalation). The
policy lives here, away from any process, so it can be tested with a fake clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from itertools import takewhile

__all__ = ["RestartIntensity", "add_restart", "check_intensity"]


def add_restart(restarts: tuple[float, ...], now: float, period: float) -> tuple[float, ...]:
    """Record a restart at ``now`` and forget the ones that fell out of the window.

    Args:
        restarts: earlier restart times, newest first.
        now: the time of this restart (same clock as ``restarts``).
        period: the window length in seconds.

    Returns:
        The restarts still inside ``[now - period, now]``, newest first, ``now`` included. As in
        OTP, a restart exactly ``period`` seconds old still counts.
    """
    threshold = now - period
    return (now, *takewhile(lambda t: t >= threshold, restarts))


def check_intensity(max_restarts: object, max_seconds: object) -> tuple[int, float]:
    """Validate the supervisor flags, naming the bad argument (OTP's ``check_flags``).

    Raises:
        TypeError: ``max_restarts`` is not an int or ``max_seconds`` not a number.
        ValueError: ``max_restarts`` is negative or ``max_seconds`` is not a positive finite number.
    """
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int):
        raise TypeError(f"max_restarts must be an int >= 0, got {max_restarts!r}")
    if max_restarts < 0:
        raise ValueError(f"max_restarts must be an int >= 0, got {max_restarts!r}")
    if isinstance(max_seconds, bool) or not isinstance(max_seconds, int | float):
        raise TypeError(f"max_seconds must be a number > 0, got {max_seconds!r}")
    if not (max_seconds > 0 and math.isfinite(max_seconds)):
        raise ValueError(f"max_seconds must be a finite number > 0, got {max_seconds!r}")
    return max_restarts, float(max_seconds)


class RestartIntensity:
    """The restart budget of one supervisor.

    Invariant: ``restarts`` holds only the restart times inside the current window, newest first, so
    its length is the number of restarts that count against ``max_restarts``.

    Args:
        max_restarts: restarts allowed within any ``max_seconds`` window (0 means none).
        max_seconds: the window length in seconds.
        clock: a monotonic clock in seconds; inject a fake one in tests.
    """

    __slots__ = ("_clock", "max_restarts", "max_seconds", "restarts")

    def __init__(
        self,
        max_restarts: int = 3,
        max_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_restarts, self.max_seconds = check_intensity(max_restarts, max_seconds)
        self._clock = clock
        self.restarts: tuple[float, ...] = ()

    def add(self) -> bool:
        """Count one restart now.

        Returns:
            True if the restart is within budget; False if it is one too many, in which case the
            supervisor must stop its children and exit ``"shutdown"``.
        """
        self.restarts = add_restart(self.restarts, self._clock(), self.max_seconds)
        return len(self.restarts) <= self.max_restarts
