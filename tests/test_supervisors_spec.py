"""ChildSpec is checked data: bad fields fail at construction, naming the field and the value."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from kernel import Actor, Crash, KernelError
from supervisors import ChildSpec, SupervisorError
from supervisors.spec import check_children, is_clean_exit, wants_restart


class Worker(Actor):
    pass


async def raw_process(ctx: Any) -> None:
    return None


def test_defaults_follow_otp() -> None:
    spec = ChildSpec("w", Worker)
    assert (spec.args, spec.kwargs, spec.restart, spec.type, spec.worker, spec.name) == (
        (),
        {},
        "permanent",
        "worker",
        None,
        None,
    )
    assert spec.shutdown == 5.0 and spec.shutdown_timeout == 5.0
    sup = ChildSpec("s", Worker, type="supervisor")
    assert sup.shutdown == "infinity" and sup.shutdown_timeout is None


def test_start_may_be_an_async_function() -> None:
    assert ChildSpec("p", raw_process).start is raw_process


def test_args_and_kwargs_are_copied_so_later_mutation_cannot_change_restarts() -> None:
    args = [1, 2]
    kwargs = {"a": 1}
    spec = ChildSpec("w", Worker, args=args, kwargs=kwargs)  # type: ignore[arg-type]
    args.append(3)
    kwargs["b"] = 2
    assert spec.args == (1, 2) and spec.kwargs == {"a": 1}


@pytest.mark.parametrize(
    ("shutdown", "normalised", "timeout"),
    [
        (0, 0.0, 0.0),
        (2, 2.0, 2.0),
        (0.5, 0.5, 0.5),
        ("brutal_kill", "brutal_kill", 0.0),
        ("infinity", "infinity", None),
        (float("inf"), "infinity", None),
    ],
)
def test_shutdown_values(shutdown: Any, normalised: Any, timeout: float | None) -> None:
    spec = ChildSpec("w", Worker, shutdown=shutdown)
    assert spec.shutdown == normalised and spec.shutdown_timeout == timeout


@pytest.mark.parametrize(
    ("field", "kwargs", "error"),
    [
        ("id", {"id": ["not", "hashable"]}, TypeError),
        ("start", {"start": 42}, TypeError),
        ("start", {"start": object}, TypeError),
        ("start", {"start": print}, TypeError),
        ("args", {"args": 5}, TypeError),
        ("kwargs", {"kwargs": [1]}, TypeError),
        ("kwargs", {"kwargs": {1: 2}}, TypeError),
        ("restart", {"restart": "permanant"}, ValueError),
        ("restart", {"restart": None}, ValueError),
        ("shutdown", {"shutdown": -1}, ValueError),
        ("shutdown", {"shutdown": float("nan")}, ValueError),
        ("shutdown", {"shutdown": "soon"}, TypeError),
        ("shutdown", {"shutdown": True}, TypeError),
        ("type", {"type": "manager"}, ValueError),
        ("worker", {"worker": "1"}, TypeError),
        ("worker", {"worker": -1}, ValueError),
        ("name", {"name": {}}, TypeError),
    ],
)
def test_bad_field_names_the_field_and_the_value(field: str, kwargs: dict[str, Any], error: type) -> None:
    full: dict[str, Any] = {"id": "w", "start": Worker, **kwargs}
    with pytest.raises(error) as info:
        ChildSpec(**full)
    message = str(info.value)
    assert f"ChildSpec {field}" in message
    assert repr(full[field]) in message


def test_spec_is_frozen_and_pickles() -> None:
    spec = ChildSpec(("cart", 42), Worker, args=(1,), kwargs={"x": 2}, restart="transient")
    with pytest.raises(AttributeError):
        spec.restart = "temporary"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(spec)) == spec


def test_check_children_rejects_non_specs_and_duplicates() -> None:
    a, b = ChildSpec("a", Worker), ChildSpec("b", Worker)
    assert check_children([a, b]) == [a, b]
    assert check_children(()) == []
    with pytest.raises(TypeError, match=r"children\[1\]"):
        check_children([a, "b"])
    with pytest.raises(TypeError, match="children must be a list"):
        check_children("ab")
    with pytest.raises(SupervisorError, match="'a'") as info:
        check_children([a, b, ChildSpec("a", Worker)])
    assert info.value.reason == "duplicate"


def test_supervisor_error_is_a_kernel_error_that_pickles_with_its_fields() -> None:
    err = SupervisorError("running", ("cart", 42))
    assert isinstance(err, KernelError)
    assert "('cart', 42)" in str(err) and "terminate_child" in str(err)
    back = pickle.loads(pickle.dumps(err))
    assert (back.reason, back.child_id, back.detail, str(back)) == (
        err.reason,
        err.child_id,
        err.detail,
        str(err),
    )


@pytest.mark.parametrize(
    ("reason", "clean"),
    [
        ("normal", True),
        ("shutdown", True),
        (("shutdown", "bye"), True),
        ("killed", False),
        ("worker_down", False),
        (Crash("ValueError", "boom"), False),
        (("shutdown",), False),
    ],
)
def test_restart_table(reason: Any, clean: bool) -> None:
    assert is_clean_exit(reason) is clean
    assert wants_restart("permanent", reason) is True
    assert wants_restart("transient", reason) is (not clean)
    assert wants_restart("temporary", reason) is False
