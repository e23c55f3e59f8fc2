"""A throwaway PostgreSQL server for tests and benchmarks: ``initdb`` + ``pg_ctl`` in a temporary directory.

Cluster mode keeps membership, names and checkpoints in PostgreSQL, and the cart example's "versus"
benchmark compares entities with a stateless app over it. Neither may mock the database, so both start a
real server of their own with this module: on loopback, on a free port, with a random password (scram),
removed with its directory when stopped. PostgreSQL refuses to run as root; as root the server runs as
the ``postgres`` OS user (``runuser -u postgres --``) on a directory that user owns.

``pg_ctl`` detaches the server, so a process SIGKILLed before ``stop()`` would leave it running. Each
server's directory names its owner (pid and start time, in ``owner``); every ``start()`` first stops and
removes the ``pyotp-pg-*`` directories whose owner is gone (:func:`sweep_orphans`).

    with PostgresServer() as pg:
        conn = await asyncpg.connect(pg.dsn)
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from types import TracebackType

import psutil

from .errors import PostgresUnavailable

#: How long ``pg_ctl`` may take to start or stop the server (seconds): a cold start on a loaded 2-core
#: machine takes 1-3 s; this bounds a server that never comes up.
PG_CTL_TIMEOUT = 60

#: Settings of a server whose data is thrown away anyway: no fsync, so tests are not bound by the disk.
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def find_binaries() -> str:
    """The directory holding ``initdb`` and ``pg_ctl``: PATH first, then the newest Debian install."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return os.path.dirname(os.path.realpath(initdb))
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda path: int(path.split("/")[4]) if path.split("/")[4].isdigit() else 0)
    if found:
        return os.path.dirname(found[-1])
    raise PostgresUnavailable("initdb and pg_ctl are neither on PATH nor under /usr/lib/postgresql/*/bin")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (the server binds it a moment later; a clash fails its start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(path: str, size: int = 2000) -> str:
    """The end of the server's log, where it says why it did not start."""
    try:
        with open(path, "rb") as log:
            log.seek(max(0, os.fstat(log.fileno()).st_size - size))
            return log.read().decode(errors="replace").strip()
    except OSError:
        return "(no log)"


#: Prefix of a server's temporary directory, and the file in it that names the process owning it.
PREFIX = "pyotp-pg-"
OWNER = "owner"


def _as_postgres() -> list[str]:
    """The command prefix that runs PostgreSQL's binaries as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable("running as root needs a `postgres` OS user to run the server as; "
                                  "install Debian's postgresql package") from None
    return ["runuser", "-u", "postgres", "--"]


def _owner_mark(pid: int) -> str:
    """``"<pid> <start time>"``: the start time tells the owner from a later process given the same pid."""
    return f"{pid} {psutil.Process(pid).create_time():.3f}"


def _owner_alive(mark: str) -> bool:
    try:
        pid_text, started = mark.split()
        return _owner_mark(int(pid_text)) == f"{pid_text} {started}"
    except (ValueError, psutil.Error):
        return False


def sweep_orphans(parent: str | None = None) -> list[str]:
    """Stop (``pg_ctl stop -m immediate``) and remove every server directory whose owner process is gone.

    A directory without an owner file is left alone: its owner may be between ``mkdtemp`` and writing
    it. Directories this user cannot read (another user's) are left alone too. Returns the removed ones.
    """
    parent = tempfile.gettempdir() if parent is None else parent
    removed = []
    for directory in sorted(glob.glob(os.path.join(parent, PREFIX + "*"))):
        try:
            with open(os.path.join(directory, OWNER)) as mark:
                owner = mark.read().strip()
        except OSError:
            continue
        if _owner_alive(owner):
            continue
        data = os.path.join(directory, "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            with contextlib.suppress(PostgresUnavailable, OSError, subprocess.TimeoutExpired):
                subprocess.run([*_as_postgres(), os.path.join(find_binaries(), "pg_ctl"), "-D", data,
                                "-m", "immediate", "-w", "-t", str(PG_CTL_TIMEOUT), "stop"],
                               check=False, capture_output=True, timeout=PG_CTL_TIMEOUT)
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    return removed


class PostgresServer:
    """One PostgreSQL server of its own: ``start()`` returns its DSN, ``stop()`` removes every trace.

    ``settings`` are ``-c name=value`` server options; pass :data:`FAST` where durability across a power
    loss does not matter (tests). The default keeps PostgreSQL's own durable settings, so a benchmark
    compares like with like.
    """

    def __init__(self, host: str = "127.0.0.1", settings: dict[str, str] | None = None,
                 database: str = "postgres", user: str = "postgres") -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty string, not {host!r}")
        self.host = host
        self.settings = dict(settings or {})
        self.database = database
        self.user = user
        self.password = secrets.token_hex(16)
        self.port = 0
        self.directory: str | None = None
        self._bin = ""
        self._as: list[str] = []

    @property
    def dsn(self) -> str:
        """``postgresql://user:password@host:port/database`` of the running server."""
        if self.directory is None:
            raise RuntimeError("the PostgreSQL server is not started: call start() first")
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.database}"

    def _run(self, *argv: str) -> None:
        done = subprocess.run([*self._as, *argv], check=False, capture_output=True, text=True,
                              timeout=PG_CTL_TIMEOUT)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{os.path.basename(argv[0])} failed ({done.returncode}): "
                                      f"{(done.stderr or done.stdout).strip()[-2000:]}")

    def start(self) -> str:
        """Create the cluster, start the server, and return its DSN; everything is undone on failure."""
        if self.directory is not None:
            raise RuntimeError("this PostgreSQL server is already started")
        self._bin = find_binaries()
        sweep_orphans()
        self.directory = tempfile.mkdtemp(prefix=PREFIX)
        try:
            with open(os.path.join(self.directory, OWNER), "w") as mark:
                mark.write(_owner_mark(os.getpid()) + "\n")
            self._as = _as_postgres()
            if self._as:  # PostgreSQL refuses root: run it as `postgres` on a directory it owns
                owner = pwd.getpwnam("postgres")
                os.chown(self.directory, owner.pw_uid, owner.pw_gid)
            secret = os.path.join(self.directory, "pwfile")
            with open(os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
                out.write(self.password + "\n")
            if self._as:
                owner = pwd.getpwnam("postgres")
                os.chown(secret, owner.pw_uid, owner.pw_gid)
            data = os.path.join(self.directory, "data")
            self._run(os.path.join(self._bin, "initdb"), "-D", data, "-U", self.user, "-E", "UTF8",
                      "--auth=scram-sha-256", f"--pwfile={secret}", "--no-sync")
            os.unlink(secret)
            for attempt in range(3):  # the free port may be taken between free_port() and the bind
                self.port = free_port(self.host)
                try:
                    self._serve(f"log.{attempt}")
                    break
                except PostgresUnavailable as error:
                    if "already in use" in error.problem and attempt < 2:
                        continue
                    raise
        except BaseException:
            self.stop()
            raise
        return self.dsn

    def _serve(self, log_name: str) -> None:
        """Start the server on the created cluster and ``self.port``; its log goes to ``log_name``."""
        assert self.directory is not None
        options = [f"-p {self.port}", f"-c listen_addresses={self.host}",
                   f"-c unix_socket_directories={self.directory}"]
        options += [f"-c {name}={value}" for name, value in self.settings.items()]
        log = os.path.join(self.directory, log_name)
        try:
            self._run(os.path.join(self._bin, "pg_ctl"), "-D", os.path.join(self.directory, "data"), "-w",
                      "-t", str(PG_CTL_TIMEOUT), "-l", log, "-o", " ".join(options), "start")
        except PostgresUnavailable as error:
            raise PostgresUnavailable(f"{error.problem}; the server's log ends: {_tail(log)}") from None

    def halt(self) -> None:
        """Stop the server but keep its data, for :meth:`restart`: an outage that every client sees.

        ``-m fast``: the server cuts every session and stops at once, but writes out its WAL first, so
        what it committed survives even under :data:`FAST` (whose ``synchronous_commit=off`` would lose
        the last commits to an immediate stop).
        """
        if self.directory is None:
            raise RuntimeError("the PostgreSQL server is not started: call start() first")
        self._run(os.path.join(self._bin, "pg_ctl"), "-D", os.path.join(self.directory, "data"),
                  "-m", "fast", "-w", "-t", str(PG_CTL_TIMEOUT), "stop")

    def restart(self) -> None:
        """Start a halted server again, on the same port and data (its DSN is unchanged)."""
        if self.directory is None:
            raise RuntimeError("the PostgreSQL server is not started: call start() first")
        self._serve(f"log.restart.{secrets.token_hex(4)}")

    def stop(self) -> None:
        """Stop the server at once (its data is thrown away) and remove its directory. Idempotent."""
        if self.directory is None:
            return
        data = os.path.join(self.directory, "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired):
                self._run(os.path.join(self._bin, "pg_ctl"), "-D", data, "-m", "immediate", "-w",
                          "-t", str(PG_CTL_TIMEOUT), "stop")
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory = None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()
