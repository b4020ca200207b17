"""Issue 29 item 6: ``kill <pid>`` of ``cs-pipeline dashboard`` ends the tool it started (Streamlit) and stops the
embedded server it started; ``db status`` then reports no holder that is gone. Real processes, a fresh home."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import descendants

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] if Path(f"/proc/{pid}").exists() else "X"
    return state not in ("Z", "X")


def _postmaster_alive(home: Path) -> bool:
    try:
        return _alive(int((home / "pgdata" / "postmaster.pid").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return False


def test_sigterm_to_dashboard_ends_streamlit_and_stops_the_server_it_started(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, "CS_PIPELINE_HOME": str(home)}
    for name in ("CS_PIPELINE_LANDING_DIR", "CS_PIPELINE_DATABASE_URL", "DAGSTER_HOME"):
        env.pop(name, None)
    port = _free_port()
    wrapper = subprocess.Popen([sys.executable, "-m", "cs_pipeline.cli", "dashboard", "--port", str(port)], env=env,
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert wrapper.poll() is None, wrapper.stdout.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("the dashboard never served")
        children = descendants(wrapper.pid)
        assert children and _postmaster_alive(home)
        status = subprocess.run([sys.executable, "-m", "cs_pipeline.cli", "db", "status"], env=env,
                                capture_output=True, text=True, timeout=120)
        assert "dashboard" in status.stdout and f"pid {wrapper.pid}" in " ".join(status.stdout.split())
        url = subprocess.run([sys.executable, "-m", "cs_pipeline.cli", "db", "url"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert "stops when this command exits" not in url.stderr and "dashboard" in url.stderr

        wrapper.send_signal(signal.SIGTERM)
        wrapper.wait(timeout=120)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (any(_alive(pid) for pid in children) or _postmaster_alive(home)):
            time.sleep(0.5)
        assert not [pid for pid in children if _alive(pid)], "a child of the dashboard outlived it"
        assert not _postmaster_alive(home), "the embedded server stayed up"
        status = subprocess.run([sys.executable, "-m", "cs_pipeline.cli", "db", "status"], env=env,
                                capture_output=True, text=True, timeout=120)
        assert status.returncode == 3 and "down" in status.stdout
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
        for pid in children:  # a failed test leaves no Streamlit behind
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
