"""Transport: how bytes leave one OS process and reach another (internal; import from ``kernel``).

* ``wire``: the envelope tags and frame sizes every side agrees on.
* ``serialize``: pickling of messages (cloudpickle, pids and refs by value).
* ``sockets``: the listener and the peer connections between processes, with the uid check and the
  HMAC handshake that come before anything is unpickled.
* ``address``: where a process listens (``Address``; ``UnixAddress`` within one node).
* ``tcp``: ``TcpAddress`` (``host:port``, with ``TLS`` when the node has a certificate) between the nodes
  of a cluster, and ``parse_listen`` for a ``listen="host:port"`` argument.
"""
