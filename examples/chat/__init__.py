"""Chat rooms as persistent actors with pub/sub members: run ``python -m examples.chat``."""

from .demo import ChatReport, demo, serve, show
from .room import Member, Room, ask_room, room_name

__all__ = ["ChatReport", "Member", "Room", "ask_room", "demo", "room_name", "serve", "show"]
