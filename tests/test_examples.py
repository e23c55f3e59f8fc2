"""Every example's demo runs here and the claims it prints are asserted from the facts it returns."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import kernel


def test_tickets_sells_exactly_the_vault_and_loses_nothing_to_a_crash() -> None:
    from examples.tickets import demo

    report = kernel.run(demo(workers=2, tickets=3_000, agents=3, customers=12, crash_on_sale=50))
    assert [r.scenario for r in report.results] == ["A", "B"]
    for r in report.results:
        assert r.receipts == r.tickets == r.vault_sold == 3_000, r
        assert r.unique and r.in_vault == 0 and r.checked_out == 0 and r.anomalies == 0, r
        assert r.crashes >= 1, r  # the injected fault did fire, and still nothing was lost
        assert r.rate > 0
    assert report.results[0].reclaimed >= 1  # a stash was taken back from the dead agent's drawer
    assert report.ok, report.claims


def test_tickets_module_runs_from_a_shell_and_exits_zero() -> None:
    done = subprocess.run([sys.executable, "-m", "examples.tickets", "--tickets", "2000"],
                          capture_output=True, text=True, timeout=50)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "python -m tools.observer" in done.stdout
    assert "FAILED" not in done.stdout


def test_uploads_actor_limiter_holds_and_the_naive_one_does_not() -> None:
    from examples.uploads import demo

    report = kernel.run(demo(workers=2, limit=3, users=8, clients=8, requests=5))
    right, naive = report.results
    assert right.mode == "actor" and naive.mode == "naive"
    assert right.disk_peak <= 3 and right.limiter_peak <= 3 and right.users_over == 0
    assert right.disk_peak == 3 and right.rejected > 0  # the limit was reached, not just unexercised
    assert right.limiters_per_user == 1  # Entities("quotas"): one limiter per user, whatever the races
    assert naive.disk_peak > 3 and naive.users_over >= 1
    assert report.ok, report.claims


@pytest.mark.timeout(120)  # the app boots in a process of its own (kernel run --asgi), slow on a loaded box
def test_cart_races_resolve_and_a_worker_kill_loses_no_acknowledged_item() -> None:
    from examples.cart import demo

    report = kernel.run(demo(workers=2, households=8, shoppers=16, adds=8))
    assert report.race_consistent == report.households  # one of checkout/delete won whole, cart empty
    assert report.checkout_won + report.delete_won == report.households
    assert set(report.posters_bought.values()) == {1}  # one per customer, from two devices at once
    assert report.server_errors == 0  # every request answered, also across the worker kill
    assert report.adds_acknowledged == report.shoppers * 2 * 8
    assert report.items_in_carts == report.adds_acknowledged and report.carts_exact == report.shoppers
    assert report.carts_restored > 0  # the killed worker's carts came back from their checkpoints
    assert report.worker_killed[0] != report.worker_killed[1]
    assert report.stopped_cleanly  # SIGINT -> exit 0
    assert report.ok, report.claims


def test_cart_remembers_what_a_key_did_not_its_answer_and_replays_without_a_second_effect() -> None:
    import pickle

    from examples.cart.cart import _KEEP_KEYS, Cart

    async def body() -> None:
        cart = Cart()
        await cart.init("ann")

        async def ask(*request: Any) -> tuple[str, Any]:
            answer: tuple[str, Any] = await cart.handle_call(request, None)
            return answer

        assert await ask("add", "k1", "tee", 2) == ("ok", {"user": "ann", "items": {"tee": 2}, "orders": [],
                                                          "restores": 0})
        await ask("add", "k2", "mug", 1)
        # A retried add: not applied again, answered with the cart as it is now.
        assert await ask("add", "k1", "tee", 2) == ("ok", {"user": "ann", "items": {"tee": 2, "mug": 1},
                                                          "orders": [], "restores": 0, "replayed": True})
        refused = await ask("remove", "k3", "socks")
        assert refused[0] == "refused" and await ask("remove", "k3", "socks") == refused
        await ask("add", "k4", "socks", 1)
        assert await ask("remove", "k3", "socks") == refused  # the key's answer, not a second try
        placed = await ask("checkout", "k5")
        assert placed[0] == "ok" and placed[1]["items"] == {"tee": 2, "mug": 1, "socks": 1}
        assert await ask("checkout", "k5") == ("ok", {**placed[1], "replayed": True})
        assert cart.state["items"] == {} and len(cart.state["orders"]) == 1
        await ask("add", "k6", "mug", 3)
        removed = await ask("delete", "k7")
        assert removed == ("ok", {"removed": {"mug": 3}})
        assert await ask("delete", "k7") == ("ok", {"removed": {"mug": 3}, "replayed": True})

        # The memory is a window of the latest keys, each a few bytes: the state stays about the cart's size.
        for i in range(1_000):
            await ask("add", f"user.web.{i}", "tee", 1)
        assert list(cart.state["done"]) == [f"user.web.{i}" for i in range(1_000 - _KEEP_KEYS, 1_000)]
        assert cart.state["items"] == {"tee": 1_000}
        assert len(pickle.dumps(cart.state, protocol=5)) < 40 * _KEEP_KEYS
        assert (await ask("add", "user.web.999", "tee", 1))[1]["items"] == {"tee": 1_000}

        # A checkpoint written before this memory (full answers under "answers") still replays them.
        old = {"user": "bo", "items": {"tee": 1}, "orders": [], "bought_limited": [], "restores": 0,
               "answers": {"x": ("ok", {"user": "bo", "items": {"tee": 1}, "orders": [], "restores": 0})}}
        await cart.restore(old)
        assert await ask("add", "x", "tee", 1) == ("ok", {"user": "bo", "items": {"tee": 1}, "orders": [],
                                                         "restores": 0, "replayed": True})
        assert cart.state["items"] == {"tee": 1} and "answers" not in cart.state

    kernel.run(body())


def test_chat_history_survives_a_crash_reaches_late_joiners_and_passivation() -> None:
    from examples.chat import demo

    report = kernel.run(demo(workers=2, members=4, lines=5))
    assert report.everyone_saw_all  # every member's view == the room's history, same order
    assert report.late_joiner_got == report.posts - 2  # history on join (before its own and the last line)
    assert report.restored_equal and report.history_after_crash == report.history_before_crash > 0
    assert report.passivated  # exit "normal" by idle_timeout, name freed
    assert report.revived_equal and report.restores >= 2  # after the crash, and after passivation
    assert report.ok, report.claims


@pytest.mark.timeout(180)
def test_every_demo_module_exits_zero_from_a_shell() -> None:
    for name in ("uploads", "chat", "cart"):
        done = subprocess.run([sys.executable, "-m", f"examples.{name}"], capture_output=True, text=True,
                              timeout=100)
        assert done.returncode == 0, (name, done.stdout, done.stderr)
        assert "FAILED" not in done.stdout
