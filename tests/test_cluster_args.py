"""``Node(cluster=, listen=, lease=, tls=)``: bad arguments are refused at construction, naming them."""

from __future__ import annotations

import pytest

from kernel import TLS, Node, Pid
from kernel.terms import _pid, set_home

DSN = "postgresql://user@127.0.0.1:5432/db"


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"cluster": "mysql://x/y", "listen": "127.0.0.1:7000"}, ValueError, "cluster must be a PostgreSQL DSN"),
    ({"cluster": 5, "listen": "127.0.0.1:7000"}, ValueError, "cluster must be a PostgreSQL DSN"),
    ({"cluster": DSN}, ValueError, "listen is required with cluster"),
    ({"cluster": DSN, "listen": 7000}, TypeError, "listen must be a 'host:port' string"),
    ({"cluster": DSN, "listen": "127.0.0.1"}, ValueError, "listen"),
    ({"cluster": DSN, "listen": "127.0.0.1:0"}, ValueError, "listen"),
    ({"cluster": DSN, "listen": "127.0.0.1:70000"}, ValueError, "listen"),
    ({"cluster": DSN, "listen": "127.0.0.1:7000", "lease": 0}, ValueError, "lease must be"),
    ({"cluster": DSN, "listen": "127.0.0.1:7000", "lease": True}, ValueError, "lease must be"),
    ({"cluster": DSN, "listen": "127.0.0.1:7000", "tls": "cert.pem"}, TypeError, "tls must be a kernel.TLS"),
    ({"listen": "127.0.0.1:7000"}, ValueError, "listen is only used with cluster"),
])
def test_bad_cluster_arguments_are_refused_naming_them(kwargs: dict[str, object], error: type[Exception],
                                                        match: str) -> None:
    with pytest.raises(error, match=match):
        Node(workers=1, **kwargs)  # type: ignore[arg-type]


def test_tls_alone_is_refused_and_names_its_missing_files(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="tls is only used with cluster"):
        Node(workers=1, tls=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="certfile"):
        TLS("/nonexistent/cert.pem", "/nonexistent/key.pem", "/nonexistent/ca.pem")


def test_a_valid_cluster_node_keeps_its_settings_until_started() -> None:
    node = Node(workers=1, name="n1", cluster=DSN, listen="127.0.0.1:7000", lease=3)
    assert (node.cluster, node.lease, node.node_id, node.members) == (DSN, 3.0, 0, {})


def test_pids_say_their_node_only_across_nodes() -> None:
    assert repr(Pid(1, 42)) == "<1.42>" and repr(Pid(1, 42, 2, 7)) == "<1.42.2@7>"
    with pytest.raises(ValueError, match="node must be a positive int"):
        set_home(0)
    # Unpickling maps this node's own id back to 0, and keeps another node's.
    from kernel import terms

    before = terms._home
    terms._home = 5
    try:
        assert _pid(1, 2, 0, 5) == Pid(1, 2) and _pid(1, 2, 0, 6) == Pid(1, 2, 0, 6)
    finally:
        terms._home = before
