"""The dashboard in a real browser: `cs-pipeline dashboard` serves a small scored warehouse, headless
Chromium (Debian's ``chromium``) opens it through the DevTools protocol, waits for the app to render, and
the test checks supplier ids, risk levels and a chart, and saves a screenshot under the test's tmp dir."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from websockets.sync.client import connect as ws_connect

from cs_pipeline.core.paths import PROJECT_ROOT
from tests.app.dashboard_fixtures import build_scored_warehouse

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {seconds:.0f} s")
        time.sleep(0.5)


class DevTools:
    """The few Chrome DevTools Protocol calls the test needs, over one page's websocket."""

    def __init__(self, ws_url: str):
        self._ws = ws_connect(ws_url, max_size=64 * 2**20, open_timeout=10)
        self._id = 0

    def call(self, method: str, **params) -> dict:
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv(timeout=60))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str):
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        self._ws.close()


@pytest.fixture(scope="module")
def dashboard_url(settings, warehouse, tmp_path_factory):
    build_scored_warehouse(settings, warehouse, tmp_path_factory.mktemp("browser_landing"))
    port = _free_port()
    env = {**os.environ, "CS_PIPELINE_HOME": str(settings.home), "CS_PIPELINE_DAGSTER_URL": "http://127.0.0.1:9"}
    log = open(tmp_path_factory.mktemp("dashboard_log") / "dashboard.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "cs_pipeline.cli", "dashboard", "--port", str(port)],
                            env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/_stcore/health", 90)
        yield f"http://127.0.0.1:{port}/"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


@pytest.fixture()
def browser(tmp_path):
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (apt-get install chromium); .ci/run installs it")
    port = _free_port()
    proc = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                             f"--remote-debugging-port={port}", f"--user-data-dir={tmp_path / 'profile'}",
                             "--window-size=1400,1800", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/json/version", 30)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        yield tools
        tools.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


RENDERED = """(() => {
  const text = document.body ? document.body.innerText : "";
  const charts = document.querySelectorAll('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg').length;
  const running = document.querySelector('[data-testid="stStatusWidget"]') !== null;
  const errors = document.querySelectorAll('[data-testid="stException"], [data-testid="stAlertContentError"]').length;
  return {text, charts, running, errors};
})()"""


def test_the_dashboard_renders_in_chromium(dashboard_url, browser, settings, warehouse, tmp_path):
    browser.call("Page.enable")
    browser.call("Page.navigate", url=dashboard_url)
    deadline = time.monotonic() + 120
    state = {}
    while time.monotonic() < deadline:
        state = browser.evaluate(RENDERED) or {}
        if state.get("charts") and "Biggest 7-day declines" in state.get("text", "") and not state.get("running"):
            break
        time.sleep(1)
    text = state.get("text", "")
    assert state.get("charts", 0) >= 1, text[-2000:]
    assert state.get("errors") == 0, text[-2000:]
    with warehouse.connect() as conn:
        day = conn.execute("SELECT max(as_of_date) FROM marts.customer_health").fetchone()[0]
        declines = conn.execute("SELECT supplier_id FROM marts.customer_health WHERE as_of_date = %s "
                                "AND score_delta_7d < 0 ORDER BY score_delta_7d, supplier_id LIMIT 10", (day,)).fetchall()
        levels = {r[0] for r in conn.execute("SELECT DISTINCT risk_level FROM marts.customer_health "
                                             "WHERE as_of_date = %s AND risk_level IS NOT NULL", (day,))}
    assert f"Portfolio on {day}" in text
    declining = [r[0] for r in declines]
    assert declining and all(sid in text for sid in declining)  # the declines table is DOM text
    for level in levels:
        assert level in text
    time.sleep(2)  # let the grid (a canvas) finish painting for the screenshot
    shot = base64.b64decode(browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"])
    path = tmp_path / "dashboard.png"
    path.write_bytes(shot)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20_000
    print(f"screenshot: {path}")


def _settled(browser: DevTools, done, seconds: float = 120) -> dict:
    """Poll the page (``RENDERED`` plus the URL's query string) until ``done(state)`` holds while no script
    run is in progress, twice in a row one second apart (Streamlit renders in several passes)."""
    deadline = time.monotonic() + seconds
    state, hits = {}, 0
    while time.monotonic() < deadline:
        state = browser.evaluate(RENDERED) or {}
        state["search"] = browser.evaluate("window.location.search")
        hits = hits + 1 if done(state) and not state.get("running") else 0
        if hits >= 2:
            return state
        time.sleep(1)
    raise AssertionError(f"the page did not settle; URL query {state.get('search')!r}; "
                         f"text: {state.get('text', '')[-1500:]}")


CLICK_SIDEBAR_OPTION = """((label) => {
  const options = [...document.querySelectorAll('[data-testid="stSidebar"] [data-testid="stRadio"] label')];
  const option = options.find(o => o.innerText.trim() === label);
  if (!option) { return false; }
  option.click();
  return true;
})(%s)"""


def _screenshot(browser: DevTools, path) -> None:
    """The whole page (Streamlit scrolls inside its own container: a tall window shows all of it)."""
    browser.call("Emulation.setDeviceMetricsOverride", width=1400, height=5000, deviceScaleFactor=1, mobile=False)
    time.sleep(3)  # let the grids (canvases) finish painting
    path.write_bytes(base64.b64decode(browser.call("Page.captureScreenshot", format="png",
                                                   captureBeyondViewport=True)["data"]))
    print(f"screenshot: {path}")


def test_a_supplier_deep_link_opens_its_page_and_the_url_follows_the_sidebar(dashboard_url, browser, warehouse,
                                                                             tmp_path):
    """Issue 29 item 8: ?page=supplier&supplier=<id> (bookmarked, or pasted into a ticket) opens that
    supplier's page in a real browser; choosing another page in the sidebar rewrites the URL."""
    with warehouse.connect() as conn:
        day = conn.execute("SELECT max(as_of_date) FROM marts.customer_health").fetchone()[0]
        # not the selectbox's default (the lowest score comes first): the page shows the URL's choice
        supplier_id, score = conn.execute(
            "SELECT supplier_id, health_score FROM marts.customer_health WHERE as_of_date = %s "
            "AND health_score IS NOT NULL ORDER BY health_score DESC, supplier_id LIMIT 1", (day,)).fetchone()
    browser.call("Page.enable")
    browser.call("Page.navigate", url=f"{dashboard_url}?page=supplier&supplier={supplier_id}")
    heading = f"{supplier_id}: {float(score):.1f} ("
    state = _settled(browser, lambda s: heading in s.get("text", "") and s.get("charts", 0) >= 2
                     and "Milestones reached" in s.get("text", ""))
    assert state["errors"] == 0, state["text"][-2000:]
    assert "Score history" in state["text"] and f"Portfolio on {day}" not in state["text"]
    assert state["search"] == f"?page=supplier&supplier={supplier_id}"
    _screenshot(browser, tmp_path / "supplier.png")
    browser.call("Emulation.clearDeviceMetricsOverride")
    assert browser.evaluate(CLICK_SIDEBAR_OPTION % json.dumps("Portfolio"))
    state = _settled(browser, lambda s: s.get("search") == "?page=portfolio"
                     and "Biggest 7-day declines" in s.get("text", ""))
    assert f"Portfolio on {day}" in state["text"] and state["errors"] == 0
    # the declines table is DOM text: a missing value shows as an em dash, never as "None"
    assert "None" not in state["text"]
    _screenshot(browser, tmp_path / "portfolio.png")
    assert browser.evaluate(CLICK_SIDEBAR_OPTION % json.dumps("Supplier"))
    state = _settled(browser, lambda s: s.get("search", "").startswith("?page=supplier&supplier=")
                     and "Score history" in s.get("text", ""))
    assert state["search"] == f"?page=supplier&supplier={supplier_id}"  # the chosen supplier is kept
