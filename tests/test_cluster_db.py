"""kernel.cluster: membership leases, the fenced name directory and fenced checkpoints, on a real server.

Each test gets a database of its own on the session's ``postgres`` server (or, where the server must go
away, a server of its own). Leases are judged by the database's clock only; waits poll the database
until the condition holds, bounded.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernel.cluster import (
    Directory,
    LeaseKeeper,
    Membership,
    PgCheckpointStore,
    PgGroupCommitter,
    Write,
    install,
    secret,
)
from kernel.cluster.schema import SCHEMA_VERSION, TABLES
from kernel.errors import CheckpointWriteFailed, ClusterSchemaMismatch, Fenced, LeaseExpired, NodeNameInUse
from kernel.pgserver import FAST, PostgresServer
from tests.support.cluster import database

#: Bound of every wait on a database condition (seconds).
BOUND = 20.0


@pytest.fixture
def db(postgres: PostgresServer) -> Iterator[str]:
    """A fresh database on the session server, with the cluster schema; its DSN. Dropped afterwards."""
    with database(postgres, schema=True) as dsn:
        yield dsn


def run(coro: Coroutine[Any, Any, None]) -> None:
    """Run one test body to completion, bounded."""
    asyncio.run(asyncio.wait_for(coro, BOUND * 2))


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll the database (``check`` asks it) until the condition holds, within BOUND seconds."""
    deadline = time.monotonic() + BOUND
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what} after {BOUND}s")
        await asyncio.sleep(0.02)


async def expire(conn: asyncpg.Connection, node: str) -> None:
    """End ``node``'s lease now, by the database's clock (what a lease running out does)."""
    await conn.execute("UPDATE pyotp_members SET lease_expires = now() - interval '1 second' WHERE node = $1",
                       node)


# ---------------------------------------------------------------------------------------------- schema


def test_install_is_idempotent_concurrent_and_refuses_a_newer_schema(db: str) -> None:
    async def body() -> None:
        conns = [await asyncpg.connect(db) for _ in range(4)]
        try:
            assert await asyncio.gather(*(install(c) for c in conns)) == [SCHEMA_VERSION] * 4
            found = {r[0] for r in await conns[0].fetch(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE 'pyotp_%'")}
            assert found == set(TABLES)
            await conns[0].execute("INSERT INTO pyotp_schema(version, secret) VALUES ($1, $2)",
                                   SCHEMA_VERSION + 1, b"x" * 32)
            with pytest.raises(ClusterSchemaMismatch, match="upgrade this node"):
                await install(conns[1])
        finally:
            for c in conns:
                await c.close()

    run(body())


def test_the_secret_is_made_once_and_an_older_schema_is_refused(db: str) -> None:
    async def body() -> None:
        conn = await asyncpg.connect(db)
        try:
            first = await secret(conn)
            assert isinstance(first, bytes) and len(first) == 32
            await install(conn)
            assert await secret(conn) == first  # every node of the cluster reads the same key
            await conn.execute("DELETE FROM pyotp_schema")
            await conn.execute("INSERT INTO pyotp_schema(version, secret) VALUES (1, $1)", b"y" * 32)
            with pytest.raises(ClusterSchemaMismatch, match="no migration"):
                await install(conn)
        finally:
            await conn.close()

    run(body())


def test_a_second_live_node_under_one_name_is_refused_until_the_first_lease_runs_out(db: str) -> None:
    async def body() -> None:
        conn = await asyncpg.connect(db)
        try:
            first = Membership(conn, "dup", "127.0.0.1:7001", lease=30.0)
            await first.join()
            second = Membership(conn, "dup", "127.0.0.1:7002", lease=30.0)
            with pytest.raises(NodeNameInUse, match=r"127\.0\.0\.1:7001"):
                await second.join()
            await first.renew()  # the first keeps its row
            await expire(conn, "dup")
            assert (await second.join()).address == "127.0.0.1:7002"  # a dead predecessor's name is free
        finally:
            await conn.close()

    run(body())


def test_a_node_keeps_its_id_across_rejoins_and_ids_are_never_reused(db: str) -> None:
    async def body() -> None:
        conn = await asyncpg.connect(db)
        try:
            a = Membership(conn, "a", "127.0.0.1:7001", lease=30.0, workers=2)
            b = Membership(conn, "b", "127.0.0.1:7002", lease=30.0)
            ma, mb = await a.join(), await b.join()
            assert ma.id != mb.id and ma.workers == 2 and mb.workers == 0
            again = await a.join()
            assert again.id == ma.id and again.incarnation > ma.incarnation
            await expire(conn, "a")  # the node process named "a" died; a new one takes its name
            restarted = Membership(conn, "a", "127.0.0.1:7001", lease=30.0)
            assert (await restarted.join()).id not in (ma.id, mb.id)
            assert {m.node: m.id for m in await a.live()} == {"a": restarted.id, "b": mb.id}
        finally:
            await conn.close()

    run(body())


# ------------------------------------------------------------------------------------------ membership


def test_join_renew_and_expiry_are_judged_by_the_database_clock(db: str) -> None:
    async def body() -> None:
        conn = await asyncpg.connect(db)
        try:
            a = Membership(conn, "a", "127.0.0.1:7001", lease=1.0)
            first = await a.join()
            assert [m.node for m in await a.live()] == ["a"]
            assert await a.renew() >= first.lease_expires
            # Nobody renews: the row stays, but the database's clock passes its lease.
            await until(lambda: _absent(a, "a"), "expired")
            assert await conn.fetchval("SELECT count(*) FROM pyotp_members") == 1
            with pytest.raises(LeaseExpired, match="join the cluster again"):
                await a.renew()  # an expired lease stays expired
            again = await a.join()
            assert again.incarnation > first.incarnation
            assert [m.node for m in await a.live()] == ["a"]
            await a.leave()
            assert await a.live() == []
            with pytest.raises(LeaseExpired, match="not joined"):
                await a.renew()
        finally:
            await conn.close()

    run(body())


async def _absent(m: Membership, node: str) -> bool:
    return node not in [x.node for x in await m.live()]


def test_a_rejoin_gets_a_later_incarnation_even_within_one_clock_tick(db: str) -> None:
    async def body() -> None:
        conn = await asyncpg.connect(db)
        try:
            a = Membership(conn, "a", "127.0.0.1:7001", lease=30.0)
            seen = [(await a.join()).incarnation for _ in range(20)]
            assert seen == sorted(set(seen))
        finally:
            await conn.close()

    run(body())


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="node"):
        Membership(None, "", "127.0.0.1:1")
    with pytest.raises(ValueError, match="address"):
        Membership(None, "a", "")
    with pytest.raises(ValueError, match="lease"):
        Membership(None, "a", "127.0.0.1:1", lease=0)
    m = Membership(None, "a", "127.0.0.1:1", lease=3.0)
    with pytest.raises(ValueError, match="interval"):
        LeaseKeeper(m, lambda lost: None, interval=2.5, margin=1.0)
    with pytest.raises(ValueError, match="margin"):
        LeaseKeeper(m, lambda lost: None, margin=3.0)
    with pytest.raises(LeaseExpired, match="join"):
        LeaseKeeper(m, lambda lost: None).start()
    with pytest.raises(ValueError, match="fence"):
        asyncio.run(PgCheckpointStore(None).write("k", 0, b""))
    with pytest.raises(TypeError, match="bytes"):
        asyncio.run(PgCheckpointStore(None).write("k", 1, "text"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="name"):
        asyncio.run(Directory(None, m).lookup(""))


# ---------------------------------------------------------------------------------------- lease keeper


def test_the_keeper_keeps_a_lease_alive_well_past_its_length(db: str) -> None:
    async def body() -> None:
        conn, watch = await asyncpg.connect(db), await asyncpg.connect(db)
        lost: list[LeaseExpired] = []
        try:
            a = Membership(conn, "a", "127.0.0.1:7001", lease=1.0)
            await a.join()
            keeper = LeaseKeeper(a, lost.append)
            keeper.start()
            began = time.monotonic()
            # Four renews at lease/3 span more than one lease; the row must be live all along.
            await until(lambda: _renewed(keeper, 4), "renewed 4 times")
            assert time.monotonic() - began > a.lease
            assert await watch.fetchval("SELECT lease_expires > now() FROM pyotp_members") is True
            assert lost == []
            await keeper.stop()
        finally:
            await conn.close()
            await watch.close()

    run(body())


async def _renewed(keeper: LeaseKeeper, n: int) -> bool:
    return keeper.renewals >= n


def test_the_keeper_calls_on_lost_before_the_lease_runs_out_when_renews_block(db: str) -> None:
    """A renew stuck on a lock (a database that does not answer): on_lost fires while the lease, by the
    database's own clock, still runs, so the node has the margin to stop its persistent actors."""
    async def body() -> None:
        conn, locker = await asyncpg.connect(db), await asyncpg.connect(db)
        fired: asyncio.Future[tuple[float, bool]] = asyncio.get_running_loop().create_future()

        async def on_lost(lost: LeaseExpired) -> None:
            still = await locker.fetchval(
                "SELECT lease_expires > clock_timestamp() FROM pyotp_members WHERE node = 'a'")
            fired.set_result((time.monotonic(), still))

        try:
            a = Membership(conn, "a", "127.0.0.1:7001", lease=3.0)
            await a.join()
            keeper = LeaseKeeper(a, on_lost, interval=0.5, margin=1.0)
            keeper.start()
            await until(lambda: _renewed(keeper, 1), "renewed once")
            tx = locker.transaction()
            await tx.start()
            await locker.execute("SELECT * FROM pyotp_members WHERE node = 'a' FOR UPDATE")
            last_renew = a.renewed_at
            assert last_renew is not None
            at, still_live = await asyncio.wait_for(fired, BOUND)
            assert still_live, "on_lost came after the database had expired the lease"
            assert at < last_renew + a.lease
            assert keeper.lost is not None and "TimeoutError" in str(keeper.lost)
            await tx.rollback()
            await keeper.stop()
        finally:
            await conn.close()
            await locker.close()

    run(body())


def test_the_keeper_calls_on_lost_at_once_when_the_database_ends_the_lease(db: str) -> None:
    async def body() -> None:
        conn, other = await asyncpg.connect(db), await asyncpg.connect(db)
        lost: asyncio.Future[LeaseExpired] = asyncio.get_running_loop().create_future()
        try:
            a = Membership(conn, "a", "127.0.0.1:7001", lease=30.0)
            await a.join()
            keeper = LeaseKeeper(a, lost.set_result, interval=0.1)
            keeper.start()
            await expire(other, "a")
            began = time.monotonic()
            reason = await asyncio.wait_for(lost, BOUND)
            assert "clock passed it" in str(reason)
            assert time.monotonic() - began < 10.0  # far sooner than lease - margin
            await keeper.stop()
        finally:
            await conn.close()
            await other.close()

    run(body())


def test_the_keeper_self_fences_when_the_server_goes_away() -> None:
    """The database stops mid-run (its own server: the session's must stay up): on_lost fires before
    the lease the database last granted would run out."""
    with PostgresServer(settings=FAST) as server:
        async def body() -> None:
            conn = await asyncpg.connect(server.dsn)
            await install(conn)
            fired: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            a = Membership(conn, "a", "127.0.0.1:7001", lease=3.0)
            await a.join()
            keeper = LeaseKeeper(a, lambda lost: fired.set_result(time.monotonic()), interval=0.5, margin=1.0)
            keeper.start()
            try:
                await until(lambda: _renewed(keeper, 1), "renewed once")
                await asyncio.to_thread(server.stop)
                at = await asyncio.wait_for(fired, BOUND)
                assert a.renewed_at is not None and at < a.renewed_at + a.lease
                assert keeper.failures >= 1
            finally:
                await keeper.stop()
                conn.terminate()

        asyncio.run(asyncio.wait_for(body(), BOUND * 2))


# ------------------------------------------------------------------------------------------- directory


def test_concurrent_claims_leave_one_holder_and_takeovers_raise_the_fence(db: str) -> None:
    async def body() -> None:
        nodes, per_node = 4, 6
        conns = [await asyncpg.connect(db) for _ in range(nodes * per_node)]
        admin = await asyncpg.connect(db)
        try:
            members = [Membership(conns[i], f"n{i}", f"127.0.0.1:{7000 + i}", lease=60.0)
                       for i in range(nodes)]
            for m in members:
                await m.join()
            # Six connections per node, each claiming the same name at once.
            dirs = [Directory(conns[i], members[i % nodes]) for i in range(nodes * per_node)]
            fences: list[int] = []
            for _round in range(5):
                claims = await asyncio.gather(*(d.claim("counter") for d in dirs))
                holders = {(c.node, c.incarnation, c.fence) for c in claims}
                assert len(holders) == 1, holders
                ((node, _, fence),) = holders
                assert all(c.mine == (c.node == d.membership.node) for c, d in zip(claims, dirs, strict=True))
                fences.append(fence)
                await expire(admin, node)
                for m in members:
                    if m.node == node:
                        await m.join()
            assert fences == sorted(set(fences)), fences
        finally:
            for c in [*conns, admin]:
                await c.close()

    run(body())


def test_a_takeover_refuses_the_old_holders_writes_and_a_release_frees_the_name(db: str) -> None:
    async def body() -> None:
        ca, cb = await asyncpg.connect(db), await asyncpg.connect(db)
        try:
            a = Membership(ca, "a", "127.0.0.1:1", lease=60.0)
            b = Membership(cb, "b", "127.0.0.1:2", lease=60.0)
            await a.join()
            await b.join()
            da, dbb = Directory(ca, a), Directory(cb, b)
            sa, sb = PgCheckpointStore(ca), PgCheckpointStore(cb)
            first = await da.claim("cart")
            assert first.mine and first.fence == 1
            assert await da.claim("cart") == first  # a re-claim by the holder keeps its fence
            routed = await dbb.claim("cart")
            assert not routed.mine and (routed.node, routed.address, routed.fence) == ("a", "127.0.0.1:1", 1)
            assert await sa.write("cart", 1, b"v1") == 1
            await expire(cb, "a")
            assert await dbb.lookup("cart") is None  # its holder's lease ran out
            taken = await dbb.claim("cart")
            assert taken.mine and taken.fence == 2
            assert (await sb.read("cart")) == ("cart", 1, b"v1", 0, 1)  # restored from a's last write
            with pytest.raises(Fenced, match="held under fence 2") as refused:
                await sa.write("cart", 1, b"zombie")
            assert (refused.value.fence, refused.value.current) == (1, 2)
            assert not (await da.claim("cart")).mine  # a, expired, is told the holder to route to
            with pytest.raises(LeaseExpired):
                await da.claim("free")  # but may not take a name: its own lease ran out
            assert await sb.write("cart", 2, b"v2") == 2
            assert not await dbb.release("cart", 1)
            assert await dbb.release("cart", 2)
            with pytest.raises(Fenced, match="nobody holds"):
                await sb.write("cart", 2, b"after release")
            await a.join()
            again = await da.claim("cart")
            assert again.mine and again.fence == 3  # the fence grows across a release too
            assert (await sa.read("cart")).state == b"v2"  # type: ignore[union-attr]
        finally:
            await ca.close()
            await cb.close()

    run(body())


@pytest.mark.parametrize("batched", [False, True])
def test_a_takeover_waits_for_a_write_in_flight_and_restores_it(db: str, batched: bool) -> None:
    """The write locks its name's row: a takeover that comes while the write's transaction is open waits
    for it, so the new holder restores the acknowledged write instead of losing it."""
    async def body() -> None:
        zc, tc, admin = [await asyncpg.connect(db) for _ in range(3)]
        try:
            z = Membership(zc, "z", "127.0.0.1:1", lease=60.0)
            t = Membership(tc, "t", "127.0.0.1:2", lease=60.0)
            await z.join()
            await t.join()
            fence = (await Directory(zc, z).claim("k")).fence
            tx = zc.transaction()
            await tx.start()
            store = PgCheckpointStore(zc)
            if batched:
                (seq,) = await store.write_batch([Write("k", fence, b"in flight")])
            else:
                seq = await store.write("k", fence, b"in flight")
            await expire(admin, "z")
            takeover = asyncio.ensure_future(Directory(tc, t).claim("k"))
            pid = tc.get_server_pid()

            async def waiting() -> bool:
                return await admin.fetchval(
                    "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid) is True

            await until(waiting, "waiting for the write's lock")
            await tx.commit()  # acknowledged now
            assert (await takeover).fence == fence + 1
            restored = await PgCheckpointStore(tc).read("k")
            assert restored is not None and (restored.state, restored.seq) == (b"in flight", seq)
            with pytest.raises(Fenced):
                await PgCheckpointStore(zc).write("k", fence, b"after the takeover")
        finally:
            for c in (zc, tc, admin):
                await c.close()

    run(body())


def test_leave_frees_the_names_of_the_node(db: str) -> None:
    async def body() -> None:
        ca, cb = await asyncpg.connect(db), await asyncpg.connect(db)
        try:
            a = Membership(ca, "a", "127.0.0.1:1", lease=60.0)
            b = Membership(cb, "b", "127.0.0.1:2", lease=60.0)
            await a.join()
            await b.join()
            await Directory(ca, a).claim("x")
            await a.leave()
            taken = await Directory(cb, b).claim("x")
            assert taken.mine and taken.fence == 2
        finally:
            await ca.close()
            await cb.close()

    run(body())


# ---------------------------------------------------------------------------------------------- store


def test_a_batch_commits_in_one_transaction_in_order_each_write_fenced(db: str) -> None:
    async def body() -> None:
        pool = await asyncpg.create_pool(db, min_size=1, max_size=2)
        try:
            a = Membership(pool, "a", "127.0.0.1:1", lease=60.0)
            await a.join()
            d, store = Directory(pool, a), PgCheckpointStore(pool)
            fx, fy = (await d.claim("x")).fence, (await d.claim("y")).fence
            results = await store.write_batch([Write("x", fx, b"x1"), Write("y", fy, b"y1"),
                                               Write("x", fx, b"x2", version=3), Write("z", 1, b"no claim"),
                                               Write("y", fy + 1, b"future fence")])
            assert results[:3] == [1, 1, 2]
            assert isinstance(results[3], Fenced) and results[3].current is None
            assert isinstance(results[4], Fenced) and results[4].current == fy
            assert await store.read("x") == ("x", fx, b"x2", 3, 2)
            assert (await store.read("y")).state == b"y1"  # type: ignore[union-attr]
            assert await store.read("z") is None
            assert await store.write_batch([]) == []
        finally:
            await pool.close()

    run(body())


def test_a_failed_transaction_is_a_typed_error(db: str) -> None:
    async def body() -> None:
        conn = await asyncpg.connect(db)
        await conn.close()
        store = PgCheckpointStore(conn)
        with pytest.raises(CheckpointWriteFailed, match="InterfaceError"):
            await store.write("x", 1, b"")
        with pytest.raises(CheckpointWriteFailed, match="InterfaceError"):
            await store.write_batch([Write("x", 1, b"")])

    run(body())


def test_the_group_committer_batches_concurrent_writers_and_fences_each(db: str) -> None:
    async def body() -> None:
        pool = await asyncpg.create_pool(db, min_size=1, max_size=2)
        try:
            a = Membership(pool, "a", "127.0.0.1:1", lease=60.0)
            await a.join()
            d = Directory(pool, a)
            fences = {f"k{i}": (await d.claim(f"k{i}")).fence for i in range(50)}
            committer = PgGroupCommitter(PgCheckpointStore(pool))
            writes = [committer.commit(k, f, k.encode()) for k, f in fences.items()]
            writes.append(committer.commit("k0", fences["k0"] + 7, b"stale"))
            results = await asyncio.gather(*writes, return_exceptions=True)
            assert results[:50] == [1] * 50
            assert isinstance(results[50], Fenced)
            assert committer.batches < 51  # the first write went alone, the rest together
            await committer.flush()
        finally:
            await pool.close()

    run(body())


def test_a_failed_batch_fails_the_queued_writes_of_its_keys_claims_too(db: str) -> None:
    """A write queued behind a failed one of the same claim was built on the state that failed to commit:
    it fails too, instead of committing the change the database refused; other keys commit."""
    async def body() -> None:
        pool = await asyncpg.create_pool(db, min_size=1, max_size=2)
        try:
            # A write the database refuses (what a full disk or a broken constraint does), on one row only.
            await pool.execute("""
                CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN IF NEW.state = 'poison'::bytea THEN RAISE EXCEPTION 'poisoned write'; END IF;
                RETURN NEW; END $$;
                CREATE TRIGGER refuse_poison BEFORE INSERT OR UPDATE ON pyotp_checkpoints
                FOR EACH ROW EXECUTE FUNCTION refuse_poison()""")
            a = Membership(pool, "a", "127.0.0.1:1", lease=60.0)
            await a.join()
            d = Directory(pool, a)
            fk, fj = (await d.claim("k")).fence, (await d.claim("j")).fence
            store = PgCheckpointStore(pool)
            assert await store.write("k", fk, b"v0") == 1
            committer = PgGroupCommitter(store)
            # The first write goes alone; the other two queue behind it, for the next transaction.
            results = await asyncio.gather(committer.commit("k", fk, b"poison"),
                                           committer.commit("k", fk, b"v2 on top of poison"),
                                           committer.commit("j", fj, b"j1"), return_exceptions=True)
            assert isinstance(results[0], CheckpointWriteFailed) and "poisoned write" in str(results[0])
            assert isinstance(results[1], CheckpointWriteFailed), results[1]
            assert results[2] == 1
            assert (await store.read("k")).state == b"v0"  # type: ignore[union-attr]
            assert committer.batches == 2
        finally:
            await pool.close()

    run(body())


# ------------------------------------------------------------------------------------- property test


@dataclass
class Model:
    """What the database must say, from the schedule alone."""

    live: dict[str, bool] = field(default_factory=dict)
    incarnation: dict[str, int] = field(default_factory=dict)
    holder: tuple[str, int] | None = None  # (node, incarnation) of the current claim
    fence: int = 0  # the name's current fence (0: never claimed)
    known: dict[str, int] = field(default_factory=dict)  # the last fence each node was granted
    acked: tuple[bytes, int] | None = None  # the last acknowledged write: state, seq

    def held_by_live(self) -> bool:
        return self.holder is not None and self.live[self.holder[0]] and \
            self.incarnation[self.holder[0]] == self.holder[1]


NODES = ("a", "b", "c")
node_st = st.sampled_from(NODES)
step_st = st.one_of(
    st.tuples(st.just("claim"), node_st),
    st.tuples(st.just("expire"), node_st),
    st.tuples(st.just("rejoin"), node_st),
    st.tuples(st.just("write"), node_st),
    st.tuples(st.just("release"), node_st),
    # A zombie writes under the fence it knows while another node takes the name over and restores it.
    st.tuples(st.just("race"), node_st, node_st).filter(lambda s: s[1] != s[2]),
)
_names = itertools.count()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(schedule=st.lists(step_st, min_size=1, max_size=25))
def test_no_two_holders_commit_and_no_acknowledged_write_is_lost(db: str,
                                                                  schedule: list[tuple[str, ...]]) -> None:
    name = f"n{next(_names)}"  # each example has a name of its own; the nodes rejoin

    async def body() -> None:
        conns = {n: await asyncpg.connect(db) for n in NODES}
        admin = await asyncpg.connect(db)
        model = Model()
        # Node names of this example's own: a node name is one node process's while its lease lives.
        members = {n: Membership(conns[n], f"{n}-{name}", f"127.0.0.1:{i + 1}", lease=60.0)
                   for i, n in enumerate(NODES)}
        dirs = {n: Directory(conns[n], members[n]) for n in NODES}
        stores = {n: PgCheckpointStore(conns[n]) for n in NODES}
        writes = itertools.count()

        async def claim(n: str) -> None:
            if not model.live[n]:
                if model.held_by_live():  # an expired node is still told whom to route to
                    assert not (await dirs[n].claim(name)).mine
                    return
                with pytest.raises(LeaseExpired):  # but takes nothing
                    await dirs[n].claim(name)
                return
            got = await dirs[n].claim(name)
            if model.held_by_live():
                assert (got.node, got.fence, got.mine) == (members[model.holder[0]].node,  # type: ignore[index]
                                                           model.fence,
                                                           model.holder == (n, model.incarnation[n]))
            else:
                assert got.mine and got.fence == model.fence + 1  # a takeover raises the fence
                model.fence, model.holder = got.fence, (n, model.incarnation[n])
            if got.mine:
                model.known[n] = got.fence

        async def write(n: str) -> None:
            fence = model.known.get(n)
            if fence is None:
                return
            state = f"{n}:{next(writes)}".encode()
            try:
                seq = await stores[n].write(name, fence, state)
            except Fenced:
                assert not (model.holder is not None and fence == model.fence), "the holder was refused"
                return
            # Only the current claim commits: a fence taken over (or released) never does again.
            assert model.holder is not None and fence == model.fence, "a superseded holder committed"
            assert seq == (model.acked[1] + 1 if model.acked else 1)
            model.acked = (state, seq)

        async def step(op: tuple[str, ...]) -> None:
            kind, n = op[0], op[1]
            if kind == "claim":
                await claim(n)
            elif kind == "expire":
                await expire(admin, members[n].node)
                model.live[n] = False
            elif kind == "rejoin":
                await members[n].join()
                model.live[n], model.incarnation[n] = True, model.incarnation[n] + 1
            elif kind == "write":
                await write(n)
            elif kind == "release":
                fence = model.known.get(n)
                if fence is not None:
                    freed = await dirs[n].release(name, fence)
                    assert freed == (model.holder is not None and fence == model.fence)
                    if freed:
                        model.holder = None
            else:
                await race(n, op[2])

        async def race(zombie: str, taker: str) -> None:
            fence = model.known.get(zombie)
            if fence is None:
                return
            if model.held_by_live():  # make the takeover possible: the holder's lease runs out first
                assert model.holder is not None
                await expire(admin, members[model.holder[0]].node)
                model.live[model.holder[0]] = False
            if not model.live[taker]:
                return
            before = model.fence

            async def take() -> tuple[int, bytes | None, int]:
                got = await dirs[taker].claim(name)
                restored = await stores[taker].read(name)
                if restored is None:
                    return got.fence, None, 0
                return got.fence, restored.state, restored.seq

            state = f"{zombie}:{next(writes)}".encode()
            done, taken = await asyncio.gather(stores[zombie].write(name, fence, state), take(),
                                               return_exceptions=True)
            assert not isinstance(taken, BaseException), taken
            new_fence, restored_state, restored_seq = taken
            assert new_fence == before + 1
            if isinstance(done, Fenced):
                pass
            else:
                assert not isinstance(done, BaseException), done
                assert fence == before and model.holder is not None, "a superseded holder committed"
                # Acknowledged before the takeover, so the new holder restored it: nothing acked is lost.
                assert (restored_state, restored_seq) == (state, done)
                model.acked = (state, done)
            model.fence, model.holder = new_fence, (taker, model.incarnation[taker])
            model.known[taker] = new_fence

        try:
            for n in NODES:
                await members[n].join()
                model.live[n], model.incarnation[n] = True, 0
            for op in schedule:
                await step(op)
                current = await stores["a"].read(name)
                if model.acked is None:
                    assert current is None
                else:  # every acknowledged write of the current holder is readable
                    assert current is not None and (current.state, current.seq) == model.acked
        finally:
            for c in [*conns.values(), admin]:
                await c.close()

    asyncio.run(asyncio.wait_for(body(), BOUND * 2))


def test_the_bench_runs_end_to_end(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    """tools/bench/cluster_db.py yields its rows (no timing is asserted: figures are judged by the bench)."""
    from tools.bench.cluster_db import main

    assert main(["--n", "20", "--rounds", "1", "--dsn", db]) == 0
    out = capsys.readouterr().out
    for row in ("SELECT 1 (floor)", "claim (free name)", "claim (held: route)", "renew", "fenced/raw"):
        assert row in out
