"""The dashboard in Streamlit's headless harness (AppTest) on a small scored warehouse: every page renders,
filters change the grid, an empty warehouse shows the message; its connection cannot read raw or ops."""

from __future__ import annotations

import json
from datetime import timedelta

import pandas as pd
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from streamlit.testing.v1 import AppTest

from cs_pipeline.app.dashboard import APP_SCRIPT, actions, data
from cs_pipeline.app.dashboard.connection import ENV_DASHBOARD_CONNINFO, dashboard_conninfo
from tests.app.dashboard_fixtures import START, build_scored_warehouse

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scored(settings, warehouse, tmp_path_factory):
    return build_scored_warehouse(settings, warehouse, tmp_path_factory.mktemp("dashboard_landing"))


@pytest.fixture()
def bi_conninfo(scored, settings, monkeypatch):
    conninfo = dashboard_conninfo(settings)
    monkeypatch.setenv(ENV_DASHBOARD_CONNINFO, conninfo)
    monkeypatch.setenv(actions.ENV_DAGSTER_URL, "http://127.0.0.1:9")  # no Dagster webserver here
    return conninfo


def _app() -> AppTest:
    at = AppTest.from_file(str(APP_SCRIPT), default_timeout=60)
    return at.run()


def _no_errors(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def _grid(at: AppTest) -> pd.DataFrame:
    grids = [d.value for d in at.dataframe if "last_activity" in d.value.columns]
    assert len(grids) == 1
    return grids[0]


def _charts(at: AppTest) -> list:
    return at.get("vega_lite_chart")


def test_the_connection_is_the_bi_role_and_cannot_read_raw_or_ops(bi_conninfo, settings):
    with psycopg.connect(bi_conninfo, autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == settings.bi_role
        assert conn.execute("SELECT count(*) FROM marts.customer_health").fetchone()[0] > 0
        for table in ("raw.suppliers", "raw.activity_events", "ops.load_audit", "ops.interventions"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql.SQL("SELECT * FROM {} LIMIT 1").format(sql.Identifier(*table.split("."))))
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TEMP TABLE t (x int)")
        # the intervention views show the ops rows the dashboard needs, without the recipient's address
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'marts' "
            "AND table_name = 'dashboard_interventions'").fetchall()]
        assert "supplier_id" in columns and "recipient" not in columns
        assert conn.execute("SELECT count(*) FROM marts.dashboard_interventions").fetchone()[0] > 0


def test_portfolio_renders_counts_chart_and_grid(bi_conninfo, scored, conn):
    at = _app()
    _no_errors(at)
    expected = dict(conn.execute("SELECT coalesce(risk_level, 'unscored'), count(*) FROM marts.customer_health "
                                 "WHERE as_of_date = %s GROUP BY 1", (scored,)).fetchall())
    shown = {m.label: int(m.value.split()[0].replace(",", "")) for m in at.metric}
    assert shown == expected
    assert len(_charts(at)) >= 1
    grid = _grid(at)
    assert len(grid) == sum(expected.values())
    assert set(grid["risk_level"]) == set(expected)
    assert [b.label for b in at.get("download_button")] == ["Export CSV of this grid", "Export HTML report"]


def test_filters_change_the_grid(bi_conninfo, scored, conn):
    at = _app()
    everyone = _grid(at)
    at.multiselect(key="f_level").set_value(["critical"]).run()
    _no_errors(at)
    critical = _grid(at)
    n_critical = conn.execute("SELECT count(*) FROM marts.customer_health WHERE as_of_date = %s "
                              "AND risk_level = 'critical'", (scored,)).fetchone()[0]
    assert len(critical) == n_critical < len(everyone)
    assert set(critical["risk_level"]) <= {"critical"}
    at.multiselect(key="f_level").set_value([]).run()
    one = everyone["supplier_id"].iloc[3]
    at.text_input(key="f_search").set_value(one.upper()).run()
    assert _grid(at)["supplier_id"].tolist() == [one]
    tier = everyone["tier"].iloc[0]
    at.text_input(key="f_search").set_value("").run()
    at.multiselect(key="f_tier").set_value([tier]).run()
    assert len(_grid(at)) == int((everyone["tier"] == tier).sum())


def test_supplier_page_shows_history_drivers_and_no_fake_actions(bi_conninfo, scored, conn):
    at = _app()
    at.sidebar.radio(key="page").set_value("Supplier").run()
    _no_errors(at)
    supplier_id = at.selectbox(key="supplier").value
    assert len(_charts(at)) == 2  # score history with bands, component points
    drivers = [d.value for d in at.dataframe if "points_lost" in d.value.columns]
    assert len(drivers) == 1
    components = conn.execute("SELECT components FROM marts.customer_health WHERE supplier_id = %s AND as_of_date = %s",
                              (supplier_id, scored)).fetchone()[0]
    assert set(drivers[0]["component"]) == set(components)
    # no Dagster webserver with manual_intervention: no buttons, only the note
    assert [b.label for b in at.button] == []
    assert any("manual_intervention" in c.value for c in at.caption)


def test_a_url_opens_a_supplier_and_follows_the_choices(bi_conninfo, scored, conn):
    """Issue 29 item 8: ?page=supplier&supplier=... opens that supplier; choosing another supplier or page
    in the sidebar rewrites the URL; missing values and milestones show as the display rules say."""
    first, other = [r[0] for r in conn.execute(
        "SELECT supplier_id FROM marts.customer_health WHERE as_of_date = %s ORDER BY supplier_id DESC LIMIT 2",
        (scored,)).fetchall()]
    at = AppTest.from_file(str(APP_SCRIPT), default_timeout=60)
    at.query_params.update({"page": "supplier", "supplier": first})
    at.run()
    _no_errors(at)
    assert at.sidebar.radio(key="page").value == "Supplier" and at.selectbox(key="supplier").value == first
    assert any(h.value.startswith(f"{first}: ") for h in at.subheader)
    assert at.query_params == {"page": "supplier", "supplier": first}
    at.selectbox(key="supplier").set_value(other).run()
    assert at.query_params == {"page": "supplier", "supplier": other}
    at.sidebar.radio(key="page").set_value("Score quality").run()
    assert at.query_params == {"page": "score_quality"}
    at.sidebar.radio(key="page").set_value("Supplier").run()  # the choice is kept across pages
    assert at.selectbox(key="supplier").value == other and at.query_params["supplier"] == other
    milestones = [d.value for d in at.dataframe if "achieved" in d.value.columns]
    stored = conn.execute("SELECT count(*) FROM marts.success_milestones WHERE supplier_id = %s", (other,)).fetchone()[0]
    assert (milestones[0] if milestones else pd.DataFrame()).shape[0] == stored
    # every grid shows a missing value as an em dash (Streamlit's placeholder), not as grey "None"
    assert at.dataframe and {d.proto.placeholder for d in at.dataframe} == {"\u2014"}
    at.sidebar.radio(key="page").set_value("Portfolio").run()
    assert _grid(at).shape[0] and {d.proto.placeholder for d in at.dataframe} == {"\u2014"}
    grid = next(d.proto for d in at.dataframe if "last_activity" in d.value.columns)
    assert list(grid.column_order)[:4] == ["supplier_id", "health_score", "risk_level", "drivers"]  # not cut off
    assert json.loads(grid.columns)["drivers"]["width"] == 480 and grid.row_height > 64  # wide, wrapped (> 4 rem)
    assert set(_grid(at)["last_activity"]) - {"never"} <= {str(d) for d in pd.date_range(START, scored).date}


def test_a_url_naming_an_unknown_supplier_says_so(bi_conninfo, scored):
    at = AppTest.from_file(str(APP_SCRIPT), default_timeout=60)
    at.query_params.update({"page": "supplier", "supplier": "sup_999999"})
    at.run()
    assert not at.exception
    assert [w.value for w in at.warning if "sup_999999" in w.value]
    shown = at.selectbox(key="supplier").value
    assert shown != "sup_999999" and at.query_params == {"page": "supplier", "supplier": shown}


def test_interventions_and_score_quality_pages(bi_conninfo, scored, conn):
    at = _app()
    at.sidebar.radio(key="page").set_value("Interventions and outcomes").run()
    _no_errors(at)
    counts = [d.value for d in at.dataframe if "interventions" in d.value.columns]
    assert counts and counts[0]["interventions"].sum() == conn.execute(
        "SELECT count(*) FROM ops.interventions").fetchone()[0]
    at.sidebar.radio(key="page").set_value("Score quality").run()
    _no_errors(at)
    versions = {r[0] for r in conn.execute("SELECT DISTINCT scorecard_version FROM marts.health_score_backtest")}
    shown = [d.value for d in at.dataframe if "auc" in d.value.columns]
    assert set(shown[0]["scorecard_version"]) == versions
    assert len(_charts(at)) == 2


def test_a_day_without_scores_is_said_so(bi_conninfo, scored, conn):
    hole = START + timedelta(days=10)
    conn.execute("DELETE FROM marts.customer_health WHERE as_of_date = %s", (hole,))
    conn.commit()
    at = _app()
    at.sidebar.date_input(key="day").set_value(hole).run()
    _no_errors(at)
    assert f"no health scores for {hole}" in " ".join(i.value for i in at.info)
    assert not [d for d in at.dataframe if "last_activity" in d.value.columns]


def test_an_empty_warehouse_shows_the_message(bi_conninfo, warehouse, monkeypatch):
    with psycopg.connect(warehouse.conninfo, autocommit=True) as c:  # the owner role creates the database
        c.execute("DROP DATABASE IF EXISTS cs_dashboard_empty")
        c.execute("CREATE DATABASE cs_dashboard_empty")
    monkeypatch.setenv(ENV_DASHBOARD_CONNINFO, make_conninfo(bi_conninfo, dbname="cs_dashboard_empty"))
    for page in ("Portfolio", "Supplier", "Score quality"):
        at = AppTest.from_file(str(APP_SCRIPT), default_timeout=60)
        at.session_state["page"] = page
        at.run()
        assert not at.exception
        assert [w.value for w in at.warning] == [data.NO_SCORES]


def test_the_quick_action_query_is_valid_against_dagsters_graphql_schema():
    from dagster_graphql.schema import create_schema
    from graphql import parse, validate

    schema = create_schema()
    assert validate(schema.graphql_schema, parse(actions._JOBS_QUERY)) == []
    payload = {"repositoriesOrError": {"nodes": [{"name": "__repository__", "location": {"name": "cs_pipeline"},
                                                  "jobs": [{"name": "manual_intervention", "solidHandles": [
                                                      {"handleID": "send_manual", "solid": {"definition": {
                                                          "configField": {"configType": {"key": "x"}}}}}]}]}]}}
    where = actions.find_job(payload)
    assert where == actions.JobLocation("__repository__", "cs_pipeline", "send_manual")
    assert actions.find_job({"repositoriesOrError": {"nodes": [{"name": "r", "location": {"name": "l"},
                                                                 "jobs": [{"name": "intervention_job"}]}]}}) is None
    config = actions.manual_run_config(where, "sup_000001", "call", message="hi")
    assert config == {"ops": {"send_manual": {"config": {"supplier_id": "sup_000001", "channel": "call",
                                                         "template": "", "message": "hi", "force": False}}}}
    with pytest.raises(ValueError):
        actions.manual_run_config(where, "sup_000001", "sms")
    assert actions.locate_manual_job("http://127.0.0.1:9", timeout=0.5) is None
