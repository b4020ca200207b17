"""`cs-pipeline scorecard fit` and the `scorecards/fitted` asset run one fit (issue 25:
``health.fit_run.fit_from_warehouse``): on the same warehouse, scorecard and day they write the same
YAML, and they refuse a day without enough history with the same reason."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pytest
from typer.testing import CliRunner

from cs_pipeline.cli import app
from cs_pipeline.definitions import build_definitions
from cs_pipeline.health.fit import MIN_AS_OF_DAYS, FitResult
from cs_pipeline.health.fit_run import FitRun
from cs_pipeline.health.scorecard import load_scorecard
from tests.app.dashboard_fixtures import START, build_scored_warehouse

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scored(settings, warehouse, tmp_path_factory):
    return build_scored_warehouse(settings, warehouse, tmp_path_factory.mktemp("fit_landing"))


def _asset_fit(settings, card: str, as_of: str) -> dg.ExecuteInProcessResult:
    return build_definitions(settings).resolve_job_def("scorecard_fit_job").execute_in_process(
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
        run_config={"ops": {"scorecards__fitted": {"config": {"from_scorecard": card, "as_of": as_of}}}})


def _failure(result: dg.ExecuteInProcessResult) -> str:
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    return failure.step_failure_data.user_failure_data.description


def test_cli_and_asset_write_the_same_fitted_scorecard(scored, settings, tmp_path):
    out = tmp_path / "fitted.yaml"
    cli = CliRunner().invoke(app, ["scorecard", "fit", "--from", "ws133", "--as-of", scored.isoformat(),
                                   "--out", str(out)])
    assert cli.exit_code == 0, cli.output
    assert "held-out ROC-AUC" in cli.output and f"wrote {out}" in cli.output.replace("\n", "")
    asset = _asset_fit(settings, "ws133", scored.isoformat())
    assert asset.success
    written = asset.asset_materializations_for_node("scorecards__fitted")[0].metadata["path"].value
    assert out.read_text(encoding="utf-8") == open(written, encoding="utf-8").read()
    card = load_scorecard(out)
    assert card.version == f"ws133-v1-fit-{scored:%Y%m%d}"
    assert abs(sum(c.weight for c in card.components) - 100) < 1e-6
    # 50 days of history and a 30-day horizon leave 3 weekly as-of days: said on the console and in the
    # asset's metadata (issue 29), not a silent fit
    weekly = len(range(0, (scored - START).days - 30 + 1, 7))
    assert weekly == 3
    warning = f"only {weekly} weekly as-of days (2 to fit, 1 held out)"
    output = " ".join(cli.output.split())
    assert f"warning: {warning}" in output and "at least 8, about 80 days of history" in output, cli.output
    metadata = asset.asset_materializations_for_node("scorecards__fitted")[0].metadata
    assert metadata["as_of_days"].value == weekly and warning in metadata["warning"].value
    assert metadata["warning"].value == " ".join(output.split("warning: ", 1)[1].split(" wrote ")[0].split())


def _fit_run(as_of_days: int, fit_as_of_days: int) -> FitRun:
    card = load_scorecard("ws133")
    result = FitResult(card, 0.6, 0.6, (START, START), (START, START), 10, 5, 0.6, as_of_days=as_of_days,
                       fit_as_of_days=fit_as_of_days)
    return FitRun(card=card, as_of=START, result=result)


def test_a_fit_warns_below_eight_weekly_as_of_days():
    assert MIN_AS_OF_DAYS == 8
    assert _fit_run(8, 5).warning is None and _fit_run(20, 13).warning is None
    warning = _fit_run(7, 5).warning
    assert warning.startswith("only 7 weekly as-of days (5 to fit, 2 held out)")
    # 7 weeks between the first and the eighth as-of day, plus the horizon, plus the as-of day itself
    assert f"about {7 * 7 + load_scorecard('ws133').churn.horizon_days + 1} days of history" in warning


def test_cli_and_asset_refuse_a_day_without_history_with_the_same_reason(scored, settings, tmp_path):
    day = START + timedelta(days=5)  # before the first day plus the 30-day churn horizon
    out = tmp_path / "never.yaml"
    cli = CliRunner().invoke(app, ["scorecard", "fit", "--from", "ws133", "--as-of", day.isoformat(),
                                   "--out", str(out)])
    reason = f"no history before {day} minus the 30-day horizon"
    assert cli.exit_code == 1 and reason in cli.output, cli.output
    assert not out.exists()
    asset = _asset_fit(settings, "ws133", day.isoformat())
    assert not asset.success and _failure(asset) == reason
