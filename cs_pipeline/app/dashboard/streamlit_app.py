"""The Streamlit script of the customer-success dashboard (``cs-pipeline dashboard``).

Pages: Portfolio, Supplier, Interventions and outcomes, Score quality. Reads only the marts through the
read-only BI role (``connection.dashboard_conninfo``). Run it with ``streamlit run`` on this file; the
queries and shaping live in ``data``, the display rules (URL, missing values, milestone dates) in
``display``, the UI here. The URL names the view (``?page=supplier&supplier=sup_000002``): it opens that
view, and follows the page and supplier chosen in the sidebar, so a view can be bookmarked.
"""

from __future__ import annotations

import contextlib
from datetime import date, datetime, timedelta, timezone

import altair as alt
import pandas as pd
import psycopg
import streamlit as st

from cs_pipeline.app.dashboard import actions, data, display
from cs_pipeline.app.dashboard.connection import dashboard_conninfo
from cs_pipeline.core.settings import Settings

PAGES = display.PAGES
RISK_SCALE = alt.Scale(domain=[*data.RISK_LEVELS, "unscored"], range=[data.RISK_COLOURS[k] for k in
                                                                      (*data.RISK_LEVELS, "unscored")])


@contextlib.contextmanager
def _connect():
    """The BI role's read-only connection for one script run; a failure becomes a message, not a traceback."""
    try:
        conninfo = dashboard_conninfo(Settings.from_env())
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
    except Exception as exc:  # settings, server start or login: all mean "cannot show anything"
        st.error(f"cannot reach the warehouse as the dashboard's read-only role: {type(exc).__name__}. "
                 "Start it with cs-pipeline dashboard (it prepares the role), or set CS_PIPELINE_DASHBOARD_DATABASE_URL.")
        st.stop()
    try:
        yield conn
    finally:
        conn.close()


SCORE_FORMATS = {"health_score": "{:.1f}", "score_delta_7d": "{:+.1f}", "mrr": "{:,.2f}"}
#: The drivers sentence is long: a wide column, and rows tall enough for Streamlit to wrap it (> 4 rem).
DRIVERS_COLUMN = {"drivers": st.column_config.TextColumn("drivers", width=480)}
WRAPPING_ROW_HEIGHT = 70
#: The grid's columns on screen: why a supplier scores so (drivers) beside its score, inside the page's width;
#: the CSV export keeps ``data.GRID_COLUMNS``.
GRID_ORDER = ["supplier_id", "health_score", "risk_level", "drivers", "trend", "score_delta_7d", "last_activity",
              "tier", "vendor_category", "lifecycle_stage", "mrr"]


def _risk_style(frame: pd.DataFrame):
    """The grid with each row's risk-level cell coloured green / yellow / red, missing values as an em
    dash and a last activity that never happened as "never"."""
    def colour(value):
        return f"background-color: {data.RISK_BACKGROUNDS.get(value, '')}"
    return display.styled(frame, SCORE_FORMATS, never=["last_activity"]).map(colour, subset=["risk_level"])


def _table_or(frame: pd.DataFrame, empty: str, static: bool = False, never=()) -> None:
    """``frame`` as a table (static HTML with ``static``, else the interactive grid; missing values as an
    em dash, or "never" in the ``never`` columns), or ``empty`` in words."""
    if frame.empty:
        st.write(empty)
    elif static:
        st.table(display.styled(frame, SCORE_FORMATS, never))
    else:
        st.dataframe(display.styled(frame, SCORE_FORMATS, never), hide_index=True, width="stretch",
                     column_config=DRIVERS_COLUMN, placeholder=display.EM_DASH)


def _pick_day(status: data.MartsStatus) -> date:
    return st.sidebar.date_input("Day", value=status.last_day, min_value=status.first_day,
                                 max_value=status.last_day, key="day")


def portfolio(conn, status: data.MartsStatus, day: date) -> None:
    st.header(f"Portfolio on {day}")
    health = data.read_health_day(conn, status, day)
    if health.empty:
        st.info(f"no health scores for {day}: the pipeline did not score that day")
        return
    summary = data.risk_summary(health)
    for col, row in zip(st.columns(len(summary)), summary.itertuples()):
        col.metric(row.risk_level, f"{row.suppliers:,} suppliers")
        col.caption(f"MRR {row.mrr:,.0f} per month")

    first = max(status.first_day, day - timedelta(days=89))
    mix = data.read_risk_mix(conn, first, day)
    st.subheader("Risk mix over time")
    st.altair_chart(alt.Chart(mix).mark_area().encode(
        x=alt.X("as_of_date:T", title="day"), y=alt.Y("suppliers:Q", stack="normalize", title="share of suppliers"),
        color=alt.Color("risk_level:N", scale=RISK_SCALE, title="risk level"),
        tooltip=["as_of_date:T", "risk_level:N", "suppliers:Q"]), width="stretch")

    st.subheader("Biggest 7-day declines")
    declines = data.biggest_declines(health)
    _table_or(declines, "no supplier's score fell over the last 7 days", static=True)

    st.subheader("Suppliers")
    c1, c2, c3, c4 = st.columns(4)
    levels = c1.multiselect("Risk level", [*data.RISK_LEVELS, "unscored"], key="f_level")
    tiers = c2.multiselect("Tier", sorted(health["tier"].dropna().unique()), key="f_tier")
    categories = c3.multiselect("Vendor category", sorted(health["vendor_category"].dropna().unique()), key="f_cat")
    stages = c4.multiselect("Lifecycle stage", sorted(health["lifecycle_stage"].dropna().unique()), key="f_stage")
    search = st.text_input("Search by supplier id", key="f_search")
    grid = data.filter_grid(health, levels, tiers, categories, stages, search)
    st.caption(f"{len(grid):,} of {len(health):,} suppliers")
    st.dataframe(_risk_style(grid), hide_index=True, width="stretch", key="grid", column_config=DRIVERS_COLUMN,
                 row_height=WRAPPING_ROW_HEIGHT, placeholder=display.EM_DASH, column_order=GRID_ORDER)
    e1, e2 = st.columns(2)
    e1.download_button("Export CSV of this grid", data.grid_csv(grid), file_name=f"suppliers_{day}.csv",
                       mime="text/csv", key="export_csv")
    e2.download_button("Export HTML report", _report_html(conn, status, day, health),
                       file_name=f"health_report_{day}.html", mime="text/html", key="export_html")


def _report_html(conn, status: data.MartsStatus, day: date, health: pd.DataFrame) -> str:
    """The existing health report (cs_pipeline.report.render_report) for ``day``, from the marts only."""
    from cs_pipeline.app.report import render_report

    mix = conn.execute("SELECT as_of_date, avg(health_score)::float8 FROM marts.customer_health "
                       "WHERE as_of_date BETWEEN %s AND %s GROUP BY 1 ORDER BY 1", (day - timedelta(days=29), day)).fetchall()
    trend = pd.Series([v for _, v in mix], index=[str(d) for d, _ in mix], dtype=float)
    counts = data.read_intervention_counts(conn, status)
    outcomes = data.uplift_by_rule(data.read_outcomes(conn, status))
    report_health = health.assign(risk_level=health["risk_level"].replace("unscored", None))
    return render_report(day, report_health, trend, counts, outcomes)


def supplier(conn, status: data.MartsStatus, day: date) -> None:
    st.header("Supplier")
    health = data.read_health_day(conn, status, day)
    options = health["supplier_id"].tolist()
    if not options:
        st.info(f"no health scores for {day}: the pipeline did not score that day")
        return
    options = _with_linked_supplier(conn, options, day)
    chosen = st.selectbox("Supplier", options, key="supplier")
    history = data.read_supplier_history(conn, chosen)
    today = history.loc[history["as_of_date"] == day]
    row = today.iloc[0] if len(today) else history.iloc[-1]
    st.subheader(display.score_heading(chosen, row["health_score"], row["risk_level"], row["trend"]))

    bands = pd.DataFrame({"low": [0, 40, 70], "high": [40, 70, 100], "risk_level": ["critical", "at_risk", "healthy"]})
    band_layer = alt.Chart(bands).mark_rect(opacity=0.15).encode(
        y="low:Q", y2="high:Q", color=alt.Color("risk_level:N", scale=RISK_SCALE, title="risk band"))
    line = alt.Chart(history).mark_line(point=True, color="#1565c0").encode(
        x=alt.X("as_of_date:T", title="day"), y=alt.Y("health_score:Q", scale=alt.Scale(domain=[0, 100]),
                                                      title="health score"),
        tooltip=["as_of_date:T", "health_score:Q", "risk_level:N"])
    st.subheader("Score history")
    st.altair_chart(band_layer + line, width="stretch")
    st.caption("Bands: critical below 40, at risk below 70 (the scorecard's thresholds).")

    st.subheader("Component points over time")
    points = data.component_points(history)
    st.altair_chart(alt.Chart(points).mark_area().encode(
        x=alt.X("as_of_date:T", title="day"), y=alt.Y("points:Q", stack=True, title="points"),
        color=alt.Color("component:N"), tooltip=["as_of_date:T", "component:N", "points:Q", "max_points:Q"]),
        width="stretch")

    st.subheader(f"Why this score on {row['as_of_date']}")
    st.write(row["drivers"] or "no component lost points")
    _table_or(data.drivers_table(row["components"]), "no components")

    st.subheader("Milestones reached")
    start = display.history_start(history["as_of_date"].min() if len(history) else None,
                                  data.read_signup_date(conn, status, chosen), status.first_day)
    milestones = display.milestone_table(data.read_milestones(conn, status, chosen), start)
    _table_or(milestones, "none yet")
    if start is not None and milestones["achieved"].str.startswith("on or before").any():
        st.caption(f"on or before: the criterion already held on {start}, the first day of this supplier's "
                   "history here, so it was reached that day or earlier. retracted: the data no longer "
                   "supports a milestone that was already celebrated.")

    st.subheader("Intervention history")
    _table_or(data.read_supplier_interventions(conn, status, chosen), "no interventions for this supplier")
    _quick_actions(chosen)


def _with_linked_supplier(conn, options: list[str], day: date) -> list[str]:
    """The day's suppliers, plus the one the URL or an earlier choice names when it has a history but no
    score that day (a bookmarked supplier who left); an unknown one is dropped with a warning."""
    wanted = st.session_state.get("supplier")
    if wanted is None or wanted in options:
        return options
    if data.read_supplier_history(conn, wanted).empty:
        st.warning(f"no supplier {display.quoted_id(wanted)} in the health scores: showing "
                   f"{display.quoted_id(options[0])}")
        del st.session_state["supplier"]
        return options
    st.caption(f"{display.quoted_id(wanted)} has no score on {day}: its newest score is shown")
    return [wanted, *options]


def _quick_actions(supplier_id: str) -> None:
    """The e-mail / in-app / call buttons, only when Dagster has the manual_intervention job."""
    url = actions.dagster_url(Settings.from_env())
    where = _located(url)
    if where is None:
        st.caption("Quick actions appear when a Dagster webserver with the manual_intervention job is running "
                   f"(cs-pipeline dev, {url}).")
        return
    st.subheader("Quick actions")
    message = st.text_area("Message (optional)", key="qa_message")
    force = st.checkbox("Send even inside the cooldown", key="qa_force")
    for col, (channel, label) in zip(st.columns(len(actions.CHANNELS)), actions.CHANNELS.items()):
        if col.button(label, key=f"qa_{channel}"):
            try:
                run_id = actions.submit_manual_intervention(
                    url, where, actions.manual_run_config(where, supplier_id, channel, message=message, force=force))
                st.session_state["qa_run"] = run_id
            except Exception as exc:  # the webserver refused: show its reason
                st.error(f"Dagster did not launch the run: {exc}")
    if st.session_state.get("qa_run"):
        run_id = st.session_state["qa_run"]
        st.info(f"manual_intervention run {run_id[:8]}: {actions.run_status(url, run_id)}")


@st.cache_data(ttl=30, show_spinner=False)
def _located(url: str):
    return actions.locate_manual_job(url)


def interventions(conn, status: data.MartsStatus, day: date) -> None:
    st.header("Interventions and outcomes")
    counts = data.read_intervention_counts(conn, status)
    if counts.empty and "marts.intervention_outcomes" not in status.present:
        st.info("no interventions yet: they start once the risk_escalation_sensor has run (cs-pipeline demo)")
        return
    st.subheader("Sent and suppressed, by rule and channel")
    if counts.empty:
        st.write("none recorded")
    else:
        st.altair_chart(alt.Chart(counts).mark_bar().encode(
            x=alt.X("sum(interventions):Q", title="interventions"), y=alt.Y("rule:N"),
            color=alt.Color("status:N"), row=alt.Row("channel:N"),
            tooltip=["rule", "channel", "status", "reason", "interventions"]), width="stretch")
        _table_or(counts, "none recorded")
    st.subheader(f"Call tasks due by {day}")
    due = data.read_call_tasks_due(conn, status, day)
    _table_or(due, "no open call tasks")
    st.subheader("Did it work? Uplift per rule and channel, by intention to treat")
    uplift = data.uplift_by_rule(data.read_outcomes(conn, status))
    if uplift.empty:
        st.write("no outcomes yet: a case's outcome is known outcome_days (playbook, default 30) after it")
    else:
        _table_or(uplift, "no outcomes yet")
        st.caption("Cases (supplier x rule x trigger day) in the arm they were randomised to, whatever became of "
                   "the message. difference: mean health score change treated minus control (points) with its 95 % "
                   "Welch interval (ci_low, ci_high); cuped_*: adjusted for the score at trigger; contamination: "
                   "share of control cases another rule contacted within the outcome window; per_protocol_difference "
                   "is secondary. 'too few cases' below the cases needed to detect 5 points at 80 % power "
                   "(required_treated / required_control). Manual interventions, CS-team alerts and call tasks are "
                   "not part of it. See docs/interventions-statistics.md.")


def score_quality(conn, status: data.MartsStatus, day: date) -> None:
    st.header("Score quality")
    st.caption("Each scorecard's backtest and each churn model's held-out validation (kind model): ROC-AUC with "
               "its 95 % account-bootstrap interval, top-decile lift, Brier score.")
    backtest = data.read_backtest(conn, status)
    if backtest.empty:
        st.info("no backtest yet: run the health_score_backtest_job (it needs more than 30 days of scored history)")
        return
    _table_or(backtest.drop(columns=["churn_rate_by_level", "calibration"]), "no backtest yet")
    by_level = data.churn_by_level_frame(backtest)
    st.subheader("Churn rate per risk level")
    st.altair_chart(alt.Chart(by_level).mark_bar().encode(
        x=alt.X("risk_level:N", sort=list(data.RISK_LEVELS)), y=alt.Y("churn_rate:Q", axis=alt.Axis(format="%")),
        color=alt.Color("risk_level:N", scale=RISK_SCALE), column=alt.Column("scorecard_version:N")))
    st.subheader("Calibration: observed churn per score band")
    st.altair_chart(alt.Chart(data.calibration_frame(backtest)).mark_line(point=True).encode(
        x=alt.X("band_low:Q", title="health score band (lower bound)"),
        y=alt.Y("churn_rate:Q", axis=alt.Axis(format="%")), color="scorecard_version:N"),
        width="stretch")
    curve = data.model_calibration_frame(backtest)
    if not curve.empty:  # issue 26: the churn model beside the scorecards
        st.subheader("Churn model calibration: observed against predicted churn per decile (validation weeks)")
        st.altair_chart(alt.Chart(curve).mark_line(point=True).encode(
            x=alt.X("predicted:Q", axis=alt.Axis(format="%")), y=alt.Y("observed:Q", axis=alt.Axis(format="%")),
            color="scorecard_version:N"), width="stretch")


def _view_from_url() -> None:
    """On a session's first run, the page and supplier the URL names (``display.view_from_params``) become
    the sidebar's choices; the supplier choice is kept while another page shows (Streamlit forgets the
    state of a widget that was not drawn)."""
    if "view_read" not in st.session_state:
        st.session_state["view_read"] = True
        if not st.query_params:  # a plain URL: the sidebar's defaults
            return
        view = display.view_from_params(st.query_params.to_dict())
        st.session_state["page"] = view.page
        if view.supplier:
            st.session_state["supplier"] = view.supplier
    elif "supplier" in st.session_state:
        st.session_state["supplier"] = st.session_state["supplier"]


def _view_to_url(page: str) -> None:
    """The URL follows the view shown (``display.params_for``): bookmark it or paste it into a ticket."""
    params = display.params_for(display.View(page, st.session_state.get("supplier")))
    if st.query_params.to_dict() != params:
        st.query_params.from_dict(params)


def main() -> None:
    """Render the page chosen in the sidebar (or named by the URL)."""
    st.set_page_config(page_title="Customer success", layout="wide")
    _view_from_url()
    page = st.sidebar.radio("Page", PAGES, key="page")
    with _connect() as conn:
        status = data.marts_status(conn)
        if not status.has_scores:
            st.title("Customer success")
            st.warning(data.NO_SCORES)
            return
        today = datetime.now(timezone.utc).date()
        stale = status.stale_days(today)
        if stale > data.STALE_AFTER_DAYS:
            st.warning(f"health scores are stale: the newest scored day is {status.last_day}, "
                       f"{(today - status.last_day).days} days ago; is the daily_customer_success schedule running?")
        day = _pick_day(status)
        {"Portfolio": portfolio, "Supplier": supplier, "Interventions and outcomes": interventions,
         "Score quality": score_quality}[page](conn, status, day)
        _view_to_url(page)


main()
