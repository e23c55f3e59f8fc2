"""The state file's guards: a usable path, private files, one owner, and a temporary state that is swept.

Why: the state file is unpickled on restore, so whoever can write it (or a companion SQLite reads with
it) can run code as the node's user; and two nodes on one file fight over every key. So, at node start:

* :func:`validate` refuses a ``state`` that cannot work (missing directory, a directory, not an SQLite
  database) with ``ValueError`` and one that others could have written (a symlink, another uid's file,
  group- or other-writable) with :class:`~kernel.errors.UnsafeStateFile`, before creating anything.
* :func:`create_private` creates the database ``0600`` through ``O_NOFOLLOW`` (SQLite gives ``-wal`` and
  ``-shm`` the database's mode) and tightens our own older files to ``0600``; :func:`keep_open` keeps
  ``-wal`` and ``-shm`` in place for the node's life, so nobody can plant them between two opens.
* :class:`OwnerLock` holds an exclusive ``flock`` on ``<state>-owner`` (holding the owner's OS pid) for
  the node's life; the OS drops it on any death, so the next node takes over at once.
* A temporary state (``state=None``) lives in its own ``pyotp-state-*`` directory with its owner lock;
  :func:`sweep_temporary` removes those whose owner is dead, at every start.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import sqlite3
import stat
import tempfile
import time

from ..errors import StateFileInUse, UnsafeStateFile

__all__ = ["OWNER_LOCK", "OwnerLock", "check_private", "create_private", "keep_open", "make_temporary",
           "remove_temporary", "sweep_temporary", "validate"]

log = logging.getLogger("kernel.statefile")

#: Suffix of the owner lock beside a state file.
OWNER_LOCK = "-owner"
#: Files that live beside a state file (SQLite's, the writers' turn, the owner lock).
COMPANIONS = ("-wal", "-shm", "-writer", OWNER_LOCK)
_HEADER = b"SQLite format 3\x00"
_TEMP_PREFIX = "pyotp-state-"
_TEMP_NAME = "state.db"
#: A temporary-state directory without an owner lock is a start that died before taking it (or one that
#: is taking it right now): removed only once older than this.
_UNCLAIMED_GRACE = 60.0


def _problem(st: os.stat_result) -> str | None:
    """What makes an existing file unsafe to trust, or None."""
    if stat.S_ISLNK(st.st_mode):
        return "it is a symlink (give the real path; a link lets whoever owns it choose the file)"
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if st.st_uid != os.getuid():
        return (f"it is owned by uid {st.st_uid}, not by this user (uid {os.getuid()}); copy it, if you "
                "trust it, to a file of your own")
    if st.st_mode & 0o022:
        return (f"its mode {stat.S_IMODE(st.st_mode):#o} lets group or others write it; if you trust its "
                "contents, chmod 600 it")
    return None


#: Companions whose bytes SQLite reads with the database; the lock files' contents are never read as data.
_DATA = ("-wal", "-shm")


def check_private(path: str | os.PathLike[str]) -> None:
    """Raise :class:`UnsafeStateFile` if the state file or an existing companion is not ours alone.

    The database, ``-wal`` and ``-shm`` must be plain files of ours that group and others cannot write;
    the lock files only must not be symlinks (one would make us create or lock a file elsewhere).
    """
    base = os.fspath(path)
    for suffix in ("", *COMPANIONS):
        name = base + suffix
        try:
            st = os.lstat(name)
        except FileNotFoundError:
            continue
        problem = _problem(st) if suffix in ("", *_DATA) else (
            _problem(st) if stat.S_ISLNK(st.st_mode) else None)
        if problem is not None:
            raise UnsafeStateFile(name, problem)


def validate(state: str | os.PathLike[str]) -> str:
    """Check ``state`` before anything is created; returns its absolute path.

    Raises ``ValueError`` (naming ``state`` and the path) for a path that cannot work, and
    :class:`UnsafeStateFile` for one that others could have written.
    """
    given = os.fspath(state)
    if not given:
        raise ValueError("state must be a file path or None (a temporary file), got ''")
    path = os.path.abspath(given)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise ValueError(f"state {given!r}: the directory {parent!r} does not exist; create it first")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        check_private(path)  # a new file, but a companion planted beside it is refused all the same
        return path
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"state {given!r}: {path!r} is a directory; give a file path such as "
                         f"{os.path.join(path, 'app.db')!r}")
    check_private(path)
    if st.st_size:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            head = os.pread(fd, len(_HEADER), 0)
        finally:
            os.close(fd)
        if head != _HEADER:
            raise ValueError(f"state {given!r}: {path!r} is not an SQLite database; give a new path or "
                             "a state file a node wrote")
    return path


def _tighten(fd: int, path: str) -> None:
    st = os.fstat(fd)
    problem = _problem(st)
    if problem is not None:
        raise UnsafeStateFile(path, problem)
    if st.st_mode & 0o077:
        os.fchmod(fd, 0o600)
        log.warning("state file %r was mode %#o; made it 0600", path, stat.S_IMODE(st.st_mode))


def create_private(path: str) -> None:
    """Create the database ``0600`` if missing (never through a symlink); tighten our own to ``0600``.

    SQLite creates ``-wal`` and ``-shm`` with the database's mode, so a private database gives private
    companions; existing ones (an older, looser run) are tightened too.
    """
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    for suffix in ("", *_DATA, "-writer"):  # the owner lock is OwnerLock's
        name = path + suffix
        try:
            fd = os.open(name, flags | (os.O_CREAT if not suffix else 0), 0o600)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if os.path.islink(name):
                raise UnsafeStateFile(name, "it is a symlink") from None
            if suffix == "-writer":
                continue  # no writers' turn then: SQLite's lock alone decides (see WriterTurn)
            raise ValueError(f"state {path!r}: cannot open {name!r}: {exc.strerror}") from None
        try:
            _tighten(fd, name)
        finally:
            os.close(fd)


def keep_open(path: str) -> sqlite3.Connection:
    """Hold the database open in WAL mode for the owner's life, so ``-wal`` and ``-shm`` stay ours.

    SQLite deletes them when its last connection closes and re-creates them (``O_CREAT``, without
    ``O_EXCL``) at the next open: in a shared directory another user could plant them in between, with
    frames of their own. One idle connection held by the node keeps them in place, ``0600`` like the
    database, from start to close (it holds no read lock, so it never stalls a WAL checkpoint). A file
    SQLite cannot open as a database is a ``ValueError`` naming ``state``.
    """
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode = WAL").fetchone()
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a read opens -wal and -shm
    except sqlite3.Error as exc:
        conn.close()
        raise ValueError(f"state {path!r} is not a usable SQLite database: {exc}") from None
    for suffix in _DATA:
        fd = os.open(path + suffix, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            _tighten(fd, path + suffix)
        finally:
            os.close(fd)
    return conn


def _read_pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode("ascii", "replace").strip() or 0)
    except ValueError:
        return 0


class OwnerLock:
    """An exclusive ``flock`` on ``<state>-owner`` that holds the owner's OS pid, for the owner's life.

    The OS releases a ``flock`` when its process dies, however it dies, so a node restarted after a
    SIGKILL takes over at once; there is no stale-lock guessing. The file is unlinked on release, and a
    taker checks that the file it locked is still the one at the path (else it retries), so a release
    racing a take never leaves two owners.
    """

    def __init__(self, state: str) -> None:
        self.state = state
        self.path = state + OWNER_LOCK
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def acquire(self) -> None:
        """Take ownership; :class:`StateFileInUse` names the owner's OS pid if a live process has it."""
        while self._fd < 0:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                if os.path.islink(self.path):
                    raise UnsafeStateFile(self.path, "it is a symlink") from None
                raise ValueError(
                    f"state {self.state!r}: cannot create {self.path!r}: {exc.strerror}") from None
            try:
                _tighten(fd, self.path)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise StateFileInUse(self.state, _read_pid(fd)) from None
                try:
                    same = os.lstat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                    self._fd, fd = fd, -1
            finally:
                if fd >= 0:
                    os.close(fd)

    def release(self) -> None:
        """Give ownership up and remove the lock file (idempotent)."""
        if self._fd < 0:
            return
        with contextlib.suppress(OSError):
            if os.lstat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> OwnerLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _owner_is_dead(lock_path: str, age: float) -> bool:
    """True if nobody holds the lock and an owner once did (its pid is written).

    An unlocked lock file without a pid is a start between creating the file and locking it (or one
    that died right there): dead only once older than the grace period.
    """
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        return _read_pid(fd) != 0 or age > _UNCLAIMED_GRACE
    finally:
        os.close(fd)


def sweep_temporary() -> int:
    """Remove this user's temporary-state directories whose owner is dead; returns how many."""
    base = tempfile.gettempdir()
    removed = 0
    try:
        entries = list(os.scandir(base))
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(_TEMP_PREFIX):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        lock = os.path.join(entry.path, _TEMP_NAME + OWNER_LOCK)
        age = time.time() - st.st_mtime
        dead = _owner_is_dead(lock, age) if os.path.lexists(lock) else age > _UNCLAIMED_GRACE
        if dead:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    if removed:
        log.info("removed %d temporary state director%s of dead nodes from %s", removed,
                 "y" if removed == 1 else "ies", base)
    return removed


def make_temporary() -> tuple[str, OwnerLock]:
    """A fresh temporary state file in its own 0700 directory, already owned (locked) by this process."""
    sweep_temporary()
    directory = tempfile.mkdtemp(prefix=_TEMP_PREFIX)
    path = os.path.join(directory, _TEMP_NAME)
    lock = OwnerLock(path)
    try:
        lock.acquire()
        create_private(path)
    except BaseException:
        lock.release()
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return path, lock


def remove_temporary(path: str) -> None:
    """Delete a temporary state's directory (the node's own, after its workers are gone)."""
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)
