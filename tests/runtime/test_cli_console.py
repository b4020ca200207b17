"""Issue 29 items 4 and 7: what the console shows, through the real command line. An unknown supplier in
``cs-pipeline intervene`` is one line (no Dagster DEBUG events, no stack trace); a process loading the
definitions (as ``dagster dev``'s and ``dg``'s code servers do) prints no Dagster beta notices; the demo's
headings fit 80 columns."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from rich.console import Console

from cs_pipeline.cli.run import DEMO_STEPS
from tests.interventions.test_guarantees import DAY, db, load, synthetic  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env.pop("DAGSTER_HOME", None)
    return env


def test_intervene_for_an_unknown_supplier_prints_one_line(db, settings, tmp_path):  # noqa: F811
    load(db, [{"sid": "known1", "day": DAY, "risk": "healthy"}])
    env = _env(CS_PIPELINE_HOME=str(settings.home), DAGSTER_HOME=str(tmp_path / "dagster_home"))
    done = subprocess.run([sys.executable, "-m", "cs_pipeline.cli", "intervene", "sup_999999", "--channel", "email"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode != 0
    assert len(lines) == 1, "\n".join(lines[:20])
    assert "unknown supplier 'sup_999999'" in lines[0] and lines[0].startswith("error:")
    assert (settings.home / "logs" / "intervene.log").read_text().count("sup_999999") >= 1  # the run log kept


LOAD_DEFINITIONS = ("from cs_pipeline.definitions import defs; "
                    "defs().get_repository_def().get_all_jobs()")


def test_loading_the_definitions_prints_no_dagster_beta_notice(tmp_path):
    """A process that loads the definitions with Python's default warning filters, as the code servers of
    ``dagster dev`` and ``dg launch`` do (they log each warning), sees no notice about Dagster's beta
    parameters (``backfill_policy``, ``owners``): there were 7 (issue 29)."""
    env = _env(CS_PIPELINE_HOME=str(tmp_path / "home"))
    done = subprocess.run([sys.executable, "-W", "default", "-c", LOAD_DEFINITIONS], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "BetaWarning" not in out and "SupersessionWarning" not in out, out[-3000:]


def test_demo_headings_fit_80_columns():
    console = Console(width=80, record=True, file=open(os.devnull, "w"))
    for heading in DEMO_STEPS:
        console.rule(heading)
    text = console.export_text()
    for heading in DEMO_STEPS:
        assert heading in text  # not cut with an ellipsis
