"""kernel.cluster.backend: persistence's committer and checkpoint service on PostgreSQL, fenced by claims.

Everything runs against a real server (the session's ``postgres``, a database per test; or a server of
its own where it must go away). The committer's writer thread drives the backend; the test's own loop
plays the other nodes (memberships, takeovers) on connections of its own.
"""

from __future__ import annotations

import asyncio
import functools
import pickle
import re
import time
import types
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from datetime import datetime
from typing import Any

import asyncpg
import pytest

from kernel.cluster import Membership, install
from kernel.cluster.backend import PgBackend
from kernel.errors import CheckpointWriteFailed, HeldElsewhere, LeaseExpired, StaleEpoch
from kernel.persistence.codec import key_to_text
from kernel.persistence.service import CheckpointService
from kernel.persistence.store import Activate, Activation, GroupCommitter, Write
from kernel.pgserver import FAST, PostgresServer
from tests.support.cluster import database

#: Bound of every test body (seconds).
BOUND = 40.0


@pytest.fixture
def db(postgres: PostgresServer) -> Iterator[str]:
    """A fresh database on the session server with the cluster schema; its DSN. Dropped afterwards."""
    with database(postgres, schema=True) as dsn:
        yield dsn


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, BOUND))


async def committer_for(dsn: str, node: str, incarnation: datetime) -> GroupCommitter:
    """A group committer whose writer thread builds and drives a PgBackend, as a worker's does."""
    return await GroupCommitter.open_backend(functools.partial(PgBackend, dsn, node, incarnation))


async def expire(conn: asyncpg.Connection, node: str) -> None:
    """End ``node``'s lease now, by the database's clock (what a lease running out does)."""
    await conn.execute("UPDATE pyotp_members SET lease_expires = now() - interval '1 second' WHERE node = $1",
                       node)


def state(value: Any) -> bytes:
    return pickle.dumps(value, protocol=5)


def test_activate_write_and_restore_round_trip_with_term_keys(db: str) -> None:
    async def body() -> None:
        conn = await asyncpg.connect(db)
        try:
            a = Membership(conn, "a", "127.0.0.1:7001", lease=60.0)
            await a.join()
            assert a.incarnation is not None
            key = ("cart", 42)
            first = await committer_for(db, "a", a.incarnation)
            try:
                act = await first.activate(key)
                assert act == Activation(1, None)
                assert await first.commit(key, act.epoch, state({"items": 1}), class_name="app.Cart",
                                          version=3) is True
                assert await first.commit(key, act.epoch, state({"items": 1})) is False  # unchanged
                # Many writes of one key under one fence in one batch: the last one lands.
                done = await asyncio.gather(*(first.commit(key, act.epoch, state({"items": n}))
                                              for n in range(2, 12)))
                assert done[-1] is True
                record = await first.load(key)
                assert record is not None and record.key == key and record.epoch == 1
                assert record.state() == {"items": 11}
                stats = first.statistics()
                assert (stats.unchanged, stats.stale, stats.failures) == (1, 0, 0)
                letter = await first.dead_letter(key, b"poison", "ZeroDivisionError", 2)
            finally:
                await first.close()
            row = await conn.fetchrow("SELECT key, fence, codec, class_name FROM pyotp_checkpoints")
            assert tuple(row) == (key_to_text(key), 1, "pickle", "")  # the last write named no class
            assert await conn.fetchval("SELECT error FROM pyotp_dead_letters WHERE id = $1 AND key = $2",
                                       letter, key_to_text(key)) == "ZeroDivisionError"
            # A new incarnation of the actor on the same node (a worker replaced) restores and fences.
            second = await committer_for(db, "a", a.incarnation)
            try:
                again = await second.activate(key)
                assert again.epoch == 2 and again.record is not None
                assert again.record.state() == {"items": 11}
                with pytest.raises(StaleEpoch) as refused:
                    await second.commit(key, 1, state("from the replaced worker"))
                assert (refused.value.epoch, refused.value.current) == (1, 2)
                assert (await second.load(key)).state() == {"items": 11}  # type: ignore[union-attr]
            finally:
                await second.close()
        finally:
            await conn.close()

    run(body())


@pytest.mark.parametrize("takeover", ["rejoined", "expired"])
def test_after_a_takeover_the_old_holders_writes_are_refused_and_invisible(db: str, takeover: str) -> None:
    """Another identity takes the name over (the node joined again as a new incarnation, or its lease
    ran out and another node claimed it): every write of the old holder is refused with StaleEpoch,
    unchanged ones too, and the new holder restored the old one's last acknowledged write."""
    async def body() -> None:
        ca, cb = await asyncpg.connect(db), await asyncpg.connect(db)
        old = new = None
        try:
            a = Membership(ca, "a", "127.0.0.1:7001", lease=60.0)
            await a.join()
            assert a.incarnation is not None
            old = await committer_for(db, "a", a.incarnation)
            act = await old.activate("wallet")
            assert await old.commit("wallet", act.epoch, state(100)) is True
            if takeover == "rejoined":  # the same node process, joining again (on another connection)
                b = Membership(cb, "a", "127.0.0.1:7001", lease=60.0)
                b.id = a.id
            else:
                b = Membership(cb, "b", "127.0.0.1:7002", lease=60.0)
            await b.join()
            assert b.incarnation is not None
            new = await committer_for(db, b.node, b.incarnation)
            if takeover == "expired":
                with pytest.raises(HeldElsewhere, match=re.escape("'a' (127.0.0.1:7001")) as held:
                    await new.activate("wallet")
                assert (held.value.node, held.value.address, held.value.fence) == ("a", "127.0.0.1:7001", 1)
                await expire(cb, "a")
            taken = await new.activate("wallet")
            assert taken.epoch == act.epoch + 1
            assert taken.record is not None and taken.record.state() == 100
            with pytest.raises(StaleEpoch):  # unchanged: not rewritten, but still fenced
                await old.commit("wallet", act.epoch, state(100))
            with pytest.raises(StaleEpoch) as refused:
                await old.commit("wallet", act.epoch, state(90))
            assert (refused.value.epoch, refused.value.current) == (act.epoch, taken.epoch)
            assert old.statistics().stale == 2
            with pytest.raises(LeaseExpired):
                await old.activate("other")  # the old identity may take no name any more
            assert (await new.load("wallet")).state() == 100  # type: ignore[union-attr]
            assert await new.commit("wallet", taken.epoch, state(80)) is True
            row = await ca.fetchrow("SELECT fence, seq, state FROM pyotp_checkpoints WHERE key = 'wallet'")
            assert tuple(row) == (taken.epoch, 2, state(80))  # two writes committed: 100, then 80
        finally:
            for committer in (old, new):
                if committer is not None:
                    await committer.close()
            await ca.close()
            await cb.close()

    run(body())


def joined(dsn: str, *nodes: str) -> list[datetime]:
    """Join ``nodes`` to the cluster (60 s leases); their incarnations."""
    async def join() -> list[datetime]:
        conn = await asyncpg.connect(dsn)
        try:
            found = []
            for i, node in enumerate(nodes):
                m = Membership(conn, node, f"127.0.0.1:{7001 + i}", lease=60.0)
                await m.join()
                assert m.incarnation is not None
                found.append(m.incarnation)
            return found
        finally:
            await conn.close()

    return asyncio.run(join())


def test_one_batch_applies_activations_and_writes_in_order_in_one_transaction(db: str) -> None:
    """The writer thread's view: ``apply`` itself, a blocking call. Activations and writes interleave in
    one transaction, each in its place: a write after a re-activation under the old fence is refused, a
    key activated twice gets two fences, a key held by another node is refused alone."""
    ia, ib = joined(db, "a", "b")
    a, b = PgBackend(db, "a", ia), PgBackend(db, "b", ib.isoformat())
    try:
        (held,) = b.apply([Activate("elsewhere")])
        assert isinstance(held, Activation) and held.epoch == 1
        d = [state(n) for n in range(4)]
        results = a.apply([Activate("z"), Activate("z"), Activate("x"), Activate("y"), Activate("elsewhere"),
                           Write("x", 1, d[0]), Activate("x"), Write("x", 1, d[1]), Write("x", 2, d[2]),
                           Write("y", 1, d[3])])
        assert results[:4] == [Activation(1, None), Activation(2, None), Activation(1, None),
                               Activation(1, None)]
        assert isinstance(results[4], HeldElsewhere) and (results[4].node, results[4].fence) == ("b", 1)
        assert results[5] is True
        again = results[6]
        assert isinstance(again, Activation) and again.epoch == 2
        assert again.record is not None and again.record.state() == 0  # the write just before it
        assert isinstance(results[7], StaleEpoch) and (results[7].epoch, results[7].current) == (1, 2)
        assert results[8:] == [True, True]
        assert a.transactions == 1
        record = a.load("x")
        assert record is not None and (record.epoch, record.state()) == (2, 2)
        assert b.apply([Write("elsewhere", 1, d[0])]) == [True]
    finally:
        a.close()
        b.close()
        a.close()  # idempotent


def test_concurrent_first_activations_from_three_nodes_leave_one_holder(db: str) -> None:
    async def body() -> None:
        conn = await asyncpg.connect(db)
        committers: list[GroupCommitter] = []
        try:
            members = [Membership(conn, n, f"127.0.0.1:{7001 + i}", lease=60.0) for i, n in enumerate("abc")]
            for m in members:
                await m.join()
                assert m.incarnation is not None
                committers.append(await committer_for(db, m.node, m.incarnation))
            for round_ in range(5):
                key = ("entity", round_)
                outcomes = await asyncio.gather(*(c.activate(key) for c in committers),
                                                return_exceptions=True)
                won = [i for i, o in enumerate(outcomes) if isinstance(o, Activation)]
                assert len(won) == 1, outcomes
                winner = members[won[0]].node
                for o in outcomes:
                    if not isinstance(o, Activation):
                        assert isinstance(o, HeldElsewhere) and (o.node, o.fence) == (winner, 1), o
        finally:
            for c in committers:
                await c.close()
            await conn.close()

    run(body())


def test_the_service_passes_a_refused_activation_on_at_once(db: str) -> None:
    """A key held elsewhere is an answer for the routing, not a transient lock to retry for seconds
    (the service retries messages that say "locked" or "busy": this key says both)."""
    async def body() -> None:
        conn = await asyncpg.connect(db)
        holder = None
        try:
            a = Membership(conn, "a", "127.0.0.1:7001", lease=60.0)
            b = Membership(conn, "b", "127.0.0.1:7002", lease=60.0)
            await a.join()
            await b.join()
            assert a.incarnation is not None and b.incarnation is not None
            key = "locked busy cart"
            holder = await committer_for(db, "a", a.incarnation)
            await holder.activate(key)
            service = CheckpointService.on(functools.partial(PgBackend, db, "b", b.incarnation), "pg")
            try:
                actor: Any = types.SimpleNamespace(key=key)  # the service reads only its key here
                began = time.monotonic()
                with pytest.raises(HeldElsewhere, match="node 'a'"):
                    await service.activate(actor)
                assert time.monotonic() - began < 2.0
            finally:
                await service.close()
        finally:
            if holder is not None:
                await holder.close()
            await conn.close()

    run(body())


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll the database (``check`` asks it) until the condition holds, within BOUND / 2 seconds."""
    deadline = time.monotonic() + BOUND / 2
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what} after {BOUND / 2}s")
        await asyncio.sleep(0.02)


def test_a_takeover_waits_for_the_old_holders_write_in_flight_and_restores_it(db: str) -> None:
    """The write locks its name's row for its transaction: a takeover that comes while the old holder's
    write is in flight waits for it, so the write the old holder acknowledges is the state the new
    holder restores, never lost behind its back. (A trigger holds the write inside its transaction on
    an advisory lock the test owns.)"""
    async def body() -> None:
        admin, cb = await asyncpg.connect(db), await asyncpg.connect(db)
        old = new = None
        try:
            await admin.execute("""
                CREATE FUNCTION hold_write() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN IF NEW.class_name = 'hold' THEN PERFORM pg_advisory_xact_lock_shared(4242); END IF;
                RETURN NEW; END $$;
                CREATE TRIGGER hold_write BEFORE INSERT OR UPDATE ON pyotp_checkpoints
                FOR EACH ROW EXECUTE FUNCTION hold_write()""")
            a = Membership(admin, "a", "127.0.0.1:7001", lease=60.0)
            b = Membership(cb, "b", "127.0.0.1:7002", lease=60.0)
            await a.join()
            await b.join()
            assert a.incarnation is not None and b.incarnation is not None
            old = await committer_for(db, "a", a.incarnation)
            new = await committer_for(db, "b", b.incarnation)
            act = await old.activate("k")
            await admin.execute("SELECT pg_advisory_lock(4242)")
            write = asyncio.ensure_future(old.commit("k", act.epoch, state("in flight"), class_name="hold"))

            async def waiting(event: str) -> bool:
                return bool(await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND wait_event = any($1::text[])",
                    ["advisory"] if event == "advisory" else ["tuple", "transactionid"]))

            await until(lambda: waiting("advisory"), "holding the write")
            await expire(cb, "a")
            takeover = asyncio.ensure_future(new.activate("k"))
            await until(lambda: waiting("row"), "waiting for the write's row lock")
            assert not takeover.done()
            await admin.execute("SELECT pg_advisory_unlock(4242)")
            assert await write is True  # acknowledged
            taken = await takeover
            assert taken.epoch == act.epoch + 1
            assert taken.record is not None and taken.record.state() == "in flight"
            with pytest.raises(StaleEpoch):
                await old.commit("k", act.epoch, state("after the takeover"))
        finally:
            for committer in (old, new):
                if committer is not None:
                    await committer.close()
            await admin.close()
            await cb.close()

    run(body())


def test_many_concurrent_writes_share_few_transactions(db: str) -> None:
    async def body() -> None:
        conn = await asyncpg.connect(db)
        try:
            a = Membership(conn, "a", "127.0.0.1:7001", lease=60.0)
            await a.join()
            assert a.incarnation is not None
            committer = await committer_for(db, "a", a.incarnation)
            try:
                keys = [("k", i) for i in range(300)]
                acts = await asyncio.gather(*(committer.activate(k) for k in keys))
                assert all(act.epoch == 1 for act in acts)
                before = committer.statistics()
                results = await asyncio.gather(*(committer.commit(k, 1, state(i))
                                                 for i, k in enumerate(keys)))
                assert results == [True] * len(keys)
                after = committer.statistics()
                # The first write goes alone; the others wait for it and share the next transaction.
                assert after.commits - before.commits <= 3, after
                assert after.rows_written == len(keys)
            finally:
                await committer.close()
            assert await conn.fetchval("SELECT count(*) FROM pyotp_checkpoints") == len(keys)
            assert await conn.fetchval("SELECT max(seq) FROM pyotp_checkpoints") == 1
        finally:
            await conn.close()

    run(body())


def test_a_write_during_an_outage_fails_and_loses_nothing_committed_before() -> None:
    """The server goes away (its own server: the session's must stay up): a durable write fails with
    CheckpointWriteFailed, and so does the next write built on it; once the server is back the backend
    connects again, and what was committed before the outage is all there."""
    with PostgresServer(settings=FAST) as server:
        async def body() -> None:
            conn = await asyncpg.connect(server.dsn)
            await install(conn)
            a = Membership(conn, "a", "127.0.0.1:7001", lease=120.0)
            await a.join()
            assert a.incarnation is not None
            await conn.close()
            committer = await committer_for(server.dsn, "a", a.incarnation)
            try:
                for key in ("x", "y"):
                    act = await committer.activate(key)
                    assert await committer.commit(key, act.epoch, state(f"{key}1")) is True
                await asyncio.to_thread(server.halt)
                failed = await asyncio.gather(committer.commit("x", 1, state("x2")),
                                              committer.commit("x", 1, state("x3 built on x2")),
                                              return_exceptions=True)
                assert all(isinstance(f, CheckpointWriteFailed) for f in failed), failed
                assert committer.statistics().failures >= 1
                await asyncio.to_thread(server.restart)
                assert await committer.commit("y", 1, state("y2")) is True  # connected again
                assert (await committer.load("x")).state() == "x1"  # type: ignore[union-attr]
                assert (await committer.load("y")).state() == "y2"  # type: ignore[union-attr]
            finally:
                await committer.close()

        asyncio.run(asyncio.wait_for(body(), BOUND))


def test_the_checkpoint_service_runs_on_a_backend_it_is_given(db: str) -> None:
    """CheckpointService.on(factory): the factory runs on the writer thread at first use (here a dead
    letter, written in the background) and the service closes the backend with itself."""
    async def body() -> None:
        conn = await asyncpg.connect(db)
        try:
            a = Membership(conn, "a", "127.0.0.1:7001", lease=60.0)
            await a.join()
            assert a.incarnation is not None
            built: list[PgBackend] = []

            def open_backend() -> PgBackend:
                built.append(PgBackend(db, "a", a.incarnation.isoformat()))  # type: ignore[union-attr]
                return built[-1]

            service = CheckpointService.on(open_backend, "cluster database, as node 'a'")
            assert service.path == "cluster database, as node 'a'" and built == []
            service.dead_letter("k", b"message", "boom", 1)
            await service.close()
            assert len(built) == 1
            assert await conn.fetchval("SELECT count(*) FROM pyotp_dead_letters WHERE node = 'a'") == 1
        finally:
            await conn.close()

    run(body())


def test_bad_arguments_are_named(db: str) -> None:
    with pytest.raises(ValueError, match="dsn"):
        PgBackend("sqlite:///x", "a", datetime.now().astimezone())
    with pytest.raises(ValueError, match="node"):
        PgBackend(db, "", datetime.now().astimezone())
    with pytest.raises(ValueError, match="incarnation"):
        PgBackend(db, "a", datetime.now())  # naive: not what a join returns
    with pytest.raises(CheckpointWriteFailed, match="cannot connect"):
        PgBackend(db.replace(db.rsplit("/", 1)[1], "no_such_database"), "a", datetime.now().astimezone())
    with pytest.raises(TypeError, match="backend"):
        CheckpointService.on(None, "x")  # type: ignore[arg-type]
