"""Transport: how bytes leave one OS process and reach another (internal; import from ``kernel``).

* ``wire``: the envelope tags and frame sizes every side agrees on.
* ``serialize``: pickling of messages (cloudpickle, pids and refs by value).
* ``sockets``: the listener and the peer connections between processes, with the uid check and the
  HMAC handshake that come before anything is unpickled.
"""
