"""Restart intensity as a pure function of timestamps: no processes, a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisors.intensity import RestartIntensity, add_restart, check_intensity


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_add_restart_keeps_only_the_window_newest_first() -> None:
    assert add_restart((), 10.0, 5.0) == (10.0,)
    assert add_restart((9.0, 7.0, 4.0), 10.0, 5.0) == (10.0, 9.0, 7.0)


def test_a_restart_exactly_period_old_still_counts_as_in_otp() -> None:
    assert add_restart((5.0,), 10.0, 5.0) == (10.0, 5.0)
    assert add_restart((4.999,), 10.0, 5.0) == (10.0,)


def test_more_than_max_restarts_within_the_window_is_one_too_many() -> None:
    clock = FakeClock()
    budget = RestartIntensity(3, 5.0, clock=clock)
    assert [budget.add() for _ in range(3)] == [True, True, True]
    assert budget.add() is False


def test_zero_max_restarts_escalates_on_the_first_restart() -> None:
    assert RestartIntensity(0, 5.0, clock=FakeClock()).add() is False


def test_spaced_restarts_never_trip_the_limit() -> None:
    # OTP's multiple_restarts case: intensity 1, period 1, crashes 2.1 s apart.
    clock = FakeClock()
    budget = RestartIntensity(1, 1.0, clock=clock)
    for _ in range(4):
        assert budget.add() is True
        clock.now += 2.1


def test_old_restarts_fall_out_of_the_window() -> None:
    clock = FakeClock()
    budget = RestartIntensity(2, 5.0, clock=clock)
    assert budget.add() and budget.add()
    clock.now += 5.01
    assert budget.add() is True
    assert budget.restarts == (clock.now,)


@given(st.lists(st.floats(min_value=0.0, max_value=3.0), max_size=30), st.integers(0, 5))
def test_add_never_allows_more_than_max_restarts_inside_any_window(gaps: list[float], max_r: int) -> None:
    clock = FakeClock()
    budget = RestartIntensity(max_r, 5.0, clock=clock)
    for gap in gaps:
        clock.now += gap
        ok = budget.add()
        in_window = [t for t in budget.restarts if t >= clock.now - 5.0]
        assert list(budget.restarts) == in_window
        assert ok == (len(in_window) <= max_r)


@pytest.mark.parametrize(
    ("max_restarts", "max_seconds", "error", "names"),
    [
        ("3", 5.0, TypeError, "max_restarts"),
        (True, 5.0, TypeError, "max_restarts"),
        (-1, 5.0, ValueError, "max_restarts"),
        (3, "5", TypeError, "max_seconds"),
        (3, 0, ValueError, "max_seconds"),
        (3, -1.0, ValueError, "max_seconds"),
        (3, float("inf"), ValueError, "max_seconds"),
        (3, float("nan"), ValueError, "max_seconds"),
    ],
)
def test_bad_flags_name_the_argument_and_value(
    max_restarts: object, max_seconds: object, error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=names) as info:
        check_intensity(max_restarts, max_seconds)
    bad = max_restarts if names == "max_restarts" else max_seconds
    assert repr(bad) in str(info.value)
