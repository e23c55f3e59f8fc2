"""Row 3: a corrupt newest checkpoint row, and a torn WAL tail.

Corrupt row: a node writes a persistent actor's state and shuts down; with no node running, the
``data`` blob (or the ``codec`` name) of its row is overwritten with sqlite3 directly; a new node on the
same file starts the actor again. Must hold: the spawn fails with ``ActorExited(Crash(...))`` naming the
decode error (or the previous state comes back) -- ``init`` never runs, the corrupt row is left as it
was for an operator to inspect (not overwritten by an empty state), the name is free again, and a
second and third attempt fail the same way. Figure: silent empty starts 0.

Torn WAL: a child process commits batches (every key of batch s gets seq s) into a WAL that is never
checkpointed, and is SIGKILLed; the ``-wal`` file is then cut in the middle of a frame. Must hold: the
file opens, passes ``integrity_check``, and holds exactly the last batch whose commit frame lies wholly
before the cut (parsed from the WAL frame headers: an oracle independent of SQLite's recovery), all
keys at one seq. Figure: integrity failures 0, wrong states 0.
"""

from __future__ import annotations

import os
import pickle
import random
import signal
import sqlite3
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from kernel import Actor, ActorExited, Checkpoint, Crash, Node, checkpoints
from kernel.persistence.codec import key_to_text
from tests.reliability.support import integrity_and_rows, record, run_node, scale, soak_timeout

INITS = "r3-inits"  # a file next to the state file: one line per init() that ran


class Keeper(Actor):
    checkpoint = Checkpoint(every=1, durable=True)

    async def init(self, journal: str) -> None:
        with open(journal, "a") as f:  # the probe for "a silent empty start"
            f.write(f"{self.name!r}\n")
        self.state = {"items": []}

    async def restore(self, state: Any) -> None:
        self.state = state

    async def handle_call(self, request: Any, caller: Any) -> Any:
        if request == "get":
            return self.state
        self.state = {"items": [*self.state["items"], request]}
        return len(self.state["items"])


class JsonKeeper(Keeper):
    checkpoint_codec = "json"


CLASSES = {"pickle": Keeper, "json": JsonKeeper}
GOOD = {"items": ["a", "b", "c"]}


def _corruptions(data: bytes) -> dict[str, tuple[str, Any]]:
    """Name -> (column, new value) for the row of the key."""
    rnd = random.Random(3)
    return {
        "truncated": ("data", data[: len(data) // 2]),
        "empty": ("data", b""),
        "random_bytes": ("data", rnd.randbytes(len(data))),
        "bad_first_byte": ("data", b"\xff" + data[1:]),
        "unknown_codec": ("codec", "no-such-codec"),
    }


def _update(path: str, key: Any, column: str, value: Any) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            n = conn.execute(f"UPDATE checkpoints SET {column} = ? WHERE key = ?",
                             (value, key_to_text(key))).rowcount
        assert n == 1
    finally:
        conn.close()


def _raw_row(path: str, key: Any) -> tuple[Any, ...]:
    conn = sqlite3.connect(path)
    try:
        row = conn.execute("SELECT data, codec FROM checkpoints WHERE key = ?",
                           (key_to_text(key),)).fetchone()
        return tuple(row)
    finally:
        conn.close()


def _inits(journal: str) -> list[str]:
    try:
        with open(journal) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def _seed(path: str, names: list[tuple[str, str]], journal: str) -> None:
    """One node writes GOOD for every (codec, variant) name, then shuts down (no node runs after)."""

    async def body(node: Node) -> None:
        for name in names:
            pid = await node.spawn(CLASSES[name[0]], journal, name=name, worker=0)
            for item in ("a", "b", "c"):
                await node.call(pid, item)
            assert await node.call(pid, "get") == GOOD
            await node.stop(pid)

    run_node(body, workers=1, state=path)


def _restart(path: str, names: list[tuple[str, str]], journal: str, attempts: int) -> dict[Any, list[Any]]:
    """A new node starts each actor ``attempts`` times; each outcome is an exception or the state."""

    async def body(node: Node) -> dict[Any, list[Any]]:
        outcomes: dict[Any, list[Any]] = {}
        for name in names:
            for _ in range(attempts):
                try:
                    pid = await node.spawn(CLASSES[name[0]], journal, name=name, worker=0)
                except ActorExited as exc:
                    outcomes.setdefault(name, []).append(exc)
                    assert await node.whereis(name) is None, "stale name after a failed restore"
                    continue
                outcomes.setdefault(name, []).append(await node.call(pid, "get"))
                await node.stop(pid)
        return outcomes

    outcomes: dict[Any, list[Any]] = run_node(body, workers=1, state=path)
    return outcomes


def test_corrupt_checkpoint_row_crashes_clearly_never_starts_empty(tmp_path: Path) -> None:
    path = str(tmp_path / "r3.db")
    journal = str(tmp_path / INITS)
    variants = list(_corruptions(b"x"))
    names = [(codec, v) for codec in CLASSES for v in variants]
    _seed(path, names, journal)
    assert len(_inits(journal)) == len(names)
    corrupt_rows = {}
    for name in names:
        column, value = _corruptions(_raw_row(path, name)[0])[name[1]]
        _update(path, name, column, value)  # sqlite3 directly, no node running
        corrupt_rows[name] = _raw_row(path, name)
    outcomes = _restart(path, names, journal, attempts=3)
    tally = {"variants": len(names), "attempts": 0, "silent_empty_starts": 0, "clear_crashes": 0,
             "previous_state": 0, "other": 0}
    crashes: dict[str, str] = {}
    for name in names:
        for out in outcomes[name]:
            tally["attempts"] += 1
            if isinstance(out, ActorExited) and isinstance(out.reason, Crash):
                tally["clear_crashes"] += 1
                crashes["/".join(name)] = f"{out.reason.type_name}: {out.reason.message[:50]}"
            elif out == GOOD:
                tally["previous_state"] += 1
            elif out == {"items": []}:
                tally["silent_empty_starts"] += 1
            else:
                tally["other"] += 1
        assert _raw_row(path, name) == corrupt_rows[name], f"{name}: the corrupt row was overwritten"
    reinits = len(_inits(journal)) - len(names)
    tally["silent_empty_starts"] = max(tally["silent_empty_starts"], reinits)
    assert tally["silent_empty_starts"] == 0 and tally["other"] == 0, (tally, outcomes)
    assert tally["clear_crashes"] + tally["previous_state"] == tally["attempts"], tally
    record(3, "test_corrupt_checkpoint_row_crashes_clearly_never_starts_empty", **tally, crashes=crashes)


def test_corrupt_checkpoint_payload_that_still_decodes_is_detected(tmp_path: Path) -> None:
    path = str(tmp_path / "r3.db")
    journal = str(tmp_path / INITS)
    name = ("pickle", "flipped")
    _seed(path, [name], journal)
    data, _ = _raw_row(path, name)
    flipped = data.replace(b"\x8c\x01b", b"\x8c\x01x")  # the short string "b" becomes "x"
    assert flipped != data and pickle.loads(flipped) == {"items": ["a", "x", "c"]}
    _update(path, name, "data", flipped)
    (out,) = _restart(path, [name], journal, attempts=1)[name]
    assert isinstance(out, ActorExited) or out == GOOD, f"restored a corrupted state silently: {out!r}"


# -- torn WAL tail ---------------------------------------------------------------------------------

KEYS = 8

_CHILD = textwrap.dedent("""
    import os, pickle, sys
    from kernel.checkpoints import CheckpointStore, Write
    path, keys, stop_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    store = CheckpointStore(path)
    conn = store.connection
    conn.execute("PRAGMA wal_autocheckpoint = 0")        # every commit stays in the WAL
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")     # the schema goes to the main file: WAL empty
    seq = 0
    while True:
        seq += 1
        store.write_batch([Write(("k", i), 1, pickle.dumps((seq, os.urandom(200)))) for i in range(keys)])
        os.write(1, b"%d\\n" % seq)
""")

_WAL_HEADER = struct.Struct(">IIIIIIII")
_FRAME_HEADER = struct.Struct(">IIIIII")


def _commits_before(wal: bytes, cut: int) -> int:
    """How many commit frames (with the header's salts) end at or before byte ``cut`` of the WAL."""
    magic, _, page_size, _, salt1, salt2, _, _ = _WAL_HEADER.unpack_from(wal, 0)
    assert magic in (0x377F0682, 0x377F0683), hex(magic)
    frame = _FRAME_HEADER.size + page_size
    commits = 0
    pos = _WAL_HEADER.size
    while pos + frame <= min(cut, len(wal)):
        _, db_size, s1, s2, _, _ = _FRAME_HEADER.unpack_from(wal, pos)
        if (s1, s2) != (salt1, salt2):
            break
        commits += db_size != 0
        pos += frame
    return commits


def _wal_trial(path: Path, rnd: random.Random) -> dict[str, Any]:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(path), str(KEYS), "0"],
                            stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.stdout is not None
    kill_after = rnd.randrange(3, 60)
    acked = 0
    try:
        for line in proc.stdout:
            acked = int(line)
            if acked >= kill_after:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    wal_path = Path(f"{path}-wal")
    wal = wal_path.read_bytes()
    page_size = _WAL_HEADER.unpack_from(wal, 0)[2]
    frame = _FRAME_HEADER.size + page_size
    frames = (len(wal) - _WAL_HEADER.size) // frame
    assert frames >= 2, frames
    # A cut strictly inside a frame (never on a boundary), anywhere after the first frame.
    k = rnd.randrange(1, frames)
    cut = _WAL_HEADER.size + k * frame + rnd.randrange(1, frame)
    expected = _commits_before(wal, cut)
    with open(wal_path, "r+b") as f:
        f.truncate(cut)
    ok, rows = integrity_and_rows(path)
    seqs = {pickle.loads(r[0])[0] for r in rows}
    stored = max(seqs) if seqs else 0
    # The kernel's own reader agrees.
    via_kernel = checkpoints.load(path, ("k", 0))[0] if rows else 0
    return {"integrity_ok": ok, "torn": len(seqs) > 1 or (bool(rows) and len(rows) != KEYS),
            "wrong": stored != expected or via_kernel != expected, "acked": acked, "expected": expected,
            "stored": stored}


@soak_timeout(1800)
def test_torn_wal_tail_opens_with_last_fully_committed_batch(tmp_path: Path) -> None:
    trials = scale(4, 300)
    rnd = random.Random(33)
    tally = {"integrity_failures": 0, "torn_batches": 0, "wrong_states": 0}
    examples = []
    for t in range(trials):
        res = _wal_trial(tmp_path / f"w{t}.db", rnd)
        tally["integrity_failures"] += not res["integrity_ok"]
        tally["torn_batches"] += res["torn"]
        tally["wrong_states"] += res["wrong"]
        if res["wrong"] or len(examples) < 3:
            examples.append((res["acked"], res["expected"], res["stored"]))
        checkpoints.remove_state_file(tmp_path / f"w{t}.db")
    assert tally == {"integrity_failures": 0, "torn_batches": 0, "wrong_states": 0}, (tally, examples)
    record(3, "test_torn_wal_tail_opens_with_last_fully_committed_batch", trials=trials,
           silent_empty_starts=0, examples_acked_expected_stored=examples, **tally)
