"""A tool the command line starts and waits for (``cs-pipeline dev``: ``dagster dev``; ``cs-pipeline dashboard``:
Streamlit): ``run_foreground`` forwards SIGTERM, SIGINT and SIGHUP to it, so that ``kill <pid>`` of the
command (or Ctrl-C) ends the tool and everything it started, and the command itself then exits normally,
which releases the embedded PostgreSQL it started (issue 29)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence

#: Signals passed on to the tool's process group.
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def run_foreground(cmd: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None,
                   grace: float = 90.0) -> int:
    """Run ``cmd`` in its own process group and wait for it. A SIGTERM, SIGINT or SIGHUP this process receives
    meanwhile goes to that whole group (the tool and the processes it started: Dagster's webserver, daemon and
    code servers); after ``grace`` seconds (seconds, measured from the first signal) what is left of the group
    is killed (SIGKILL). When the tool exits by itself, what it left behind in its group gets SIGTERM too.

    Returns the tool's exit code, or 128 + the signal's number when a signal ended the wait (the shell's
    convention). Never raises for the tool's failure.
    """
    received: list[int] = []
    group: list[int] = []  # the child's process group, once it exists

    def forward(signum, _frame) -> None:
        received.append(signum)
        if group:
            _signal_group(group[0], signum)

    # The handlers come first: a signal that arrives while the child starts is held, then passed on, instead
    # of ending this process by default and leaving the child orphaned in its own group.
    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    try:
        child = subprocess.Popen(list(cmd), env=dict(env) if env is not None else None, cwd=cwd, process_group=0)
        pgid = child.pid
        group.append(pgid)
        for signum in received:  # arrived before the group existed
            _signal_group(pgid, signum)
        first_signal_at = None
        while True:
            try:
                code = child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if received and first_signal_at is None:
                    first_signal_at = time.monotonic()
                if first_signal_at is not None and time.monotonic() - first_signal_at > grace:
                    _signal_group(pgid, signal.SIGKILL)
        # Whatever the tool left in its group (a code server that outlived it) ends with it.
        if _group_alive(pgid):
            _signal_group(pgid, signal.SIGTERM)
            deadline = time.monotonic() + min(grace, 30.0)
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _group_alive(pgid):
                _signal_group(pgid, signal.SIGKILL)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 + received[0] if received else code
