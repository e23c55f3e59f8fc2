"""The envelopes that travel between a node's processes: one place encodes, one place decodes.

Every envelope is a plain tuple whose first item is its kind, so it pickles at C speed; pids travel as
their three ints. Envelopes addressed to an actor carry ``(serial, incarnation)`` of the target; the
worker index is implied by the connection they are written to.

| kind      | fields after the kind                                           |
|-----------|-----------------------------------------------------------------|
| SEND      | serial, inc, message                       -> handle_info       |
| CAST      | serial, inc, message                       -> handle_cast       |
| CALL      | serial, inc, request, caller pid, ref      -> handle_call       |
| REPLY     | inc, ref, ok, value           (to the caller's runtime)         |
| LINK      | serial, inc, from pid                                           |
| UNLINK    | serial, inc, from pid                                           |
| EXIT      | serial, inc, from pid, reason, via_link                         |
| MONITOR   | serial, inc, watcher pid, ref                                   |
| DEMONITOR | serial, inc, ref                                                |
| DOWN      | serial, inc, ref, pid, reason                                   |
| STOP      | serial, inc, reason, caller pid, ref   (orderly stop, replied)  |
| RPC       | caller pid, ref, op, pickled args  (to a runtime, replied)      |
| NOTE      | op, args                      (one-way, to a runtime)           |

A SEND, CAST or CALL whose message is not plain (``serialize.plain``) travels as kind + ``PACKED``
with the message pickled on its own, beside a plain header: a receiver that cannot unpickle it (a
class it cannot import) still knows whom to answer ``NotSerializable``. RPC arguments always travel
so, for the same reason (spawn arguments).
"""

from __future__ import annotations

import struct

SEND = 0
CAST = 1
CALL = 2
REPLY = 3
LINK = 4
UNLINK = 5
EXIT = 6
MONITOR = 7
DEMONITOR = 8
DOWN = 9
STOP = 10
RPC = 11
NOTE = 12

#: Added to SEND, CAST or CALL: the message field holds the message's own pickle.
PACKED = 16

#: Mailbox-only kinds (never on the wire): an exit signal from the parent of a trapping actor.
PARENT_EXIT = 20

#: Length prefix of every message in a frame.
HEADER = struct.Struct("!I")

#: Default bound on one encoded message (``Node(max_message=...)`` changes it): the sender refuses a
#: larger one with ``MessageTooLarge``; a peer announcing one is dropped before anything is allocated.
MAX_MESSAGE = 64 * 1024 * 1024

#: Default bound on the bytes buffered towards one peer process (``Node(send_buffer=...)``): past it a
#: sending actor is paused between messages until the peer drains; past ``OVERLOAD_FACTOR`` times it
#: sends are refused (``Overloaded``). Erlang's distribution buffer busy limit.
SEND_BUFFER = 8 * 1024 * 1024
#: Past this many times ``send_buffer`` towards one peer, a send, cast or call is refused.
OVERLOAD_FACTOR = 4

#: The smallest bound a node accepts: a tick's batch of small messages can always be split to fit it.
MIN_MESSAGE = 64 * 1024
