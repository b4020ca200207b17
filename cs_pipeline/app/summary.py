"""The end-of-run summary printed by ``cs-pipeline demo``: what the pipeline found, read from the database."""

from __future__ import annotations

from datetime import date

import psycopg
from rich.console import Console
from rich.table import Table

from cs_pipeline.core.warehouse import resolve_endpoints
from cs_pipeline.core.settings import Settings


def _exists(conn: psycopg.Connection, qualified: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (qualified,)).fetchone()[0]


def summary_data(conn: psycopg.Connection, as_of: date) -> dict:
    """Everything the summary shows, as plain Python values (tests compare it with the database)."""
    data: dict = {"as_of": as_of}
    data["ingest"] = conn.execute(
        "SELECT source, sum(rows_loaded)::bigint, sum(rows_rejected)::bigint FROM ops.load_audit "
        "GROUP BY source ORDER BY source").fetchall() if _exists(conn, "ops.load_audit") else []
    if _exists(conn, "marts.customer_health"):
        data["risk_levels"] = dict(conn.execute(
            "SELECT coalesce(risk_level, 'unscored'), count(*) FROM marts.customer_health WHERE as_of_date = %s "
            "GROUP BY 1", (as_of,)).fetchall())
        data["declines"] = conn.execute(
            "SELECT supplier_id, health_score::float8, score_delta_7d::float8, risk_level, drivers "
            "FROM marts.customer_health WHERE as_of_date = %s AND score_delta_7d IS NOT NULL "
            "ORDER BY score_delta_7d, supplier_id LIMIT 5", (as_of,)).fetchall()
        data["scenario"] = conn.execute(
            "SELECT health_score::float8, risk_level, drivers FROM marts.customer_health "
            "WHERE supplier_id = 'sup_000001' AND as_of_date = %s", (as_of,)).fetchone()
    if _exists(conn, "ops.interventions"):
        data["interventions"] = conn.execute(
            "SELECT rule, channel, status, coalesce(reason, ''), count(*) FROM ops.interventions "
            "GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4").fetchall()
        data["call_tasks"] = conn.execute("SELECT count(*) FROM ops.support_interactions").fetchone()[0]
    if _exists(conn, "marts.success_milestones"):
        data["milestones"] = conn.execute(
            "SELECT milestone_type, count(*), count(*) FILTER (WHERE celebrated) FROM marts.success_milestones "
            "GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
    if _exists(conn, "marts.health_score_backtest"):
        data["backtest"] = conn.execute(
            "SELECT DISTINCT ON (scorecard_version) scorecard_version, auc::float8, observations, churners, "
            "critical_lift::float8 FROM marts.health_score_backtest ORDER BY scorecard_version, evaluated_at DESC"
        ).fetchall()
    return data


def print_summary(settings: Settings, console: Console, as_of: date) -> dict:
    """Print the demo summary for ``as_of`` (the newest partition day); returns the data shown."""
    endpoints = resolve_endpoints(settings)
    with psycopg.connect(endpoints.warehouse) as conn:
        data = summary_data(conn, as_of)

    table = Table(title="raw ingestion (all days)")
    for col in ("source", "rows loaded", "rows rejected"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for source, loaded, rejected in data["ingest"]:
        table.add_row(source, f"{loaded:,}", f"{rejected:,}")
    console.print(table)

    if "risk_levels" in data:
        levels = data["risk_levels"]
        console.print(f"[bold]suppliers per risk level on {as_of}[/bold]: " + ", ".join(
            f"{k} {levels.get(k, 0)}" for k in ("healthy", "at_risk", "critical", "unscored") if k in levels or k != "unscored"))
        table = Table(title="biggest 7-day declines")
        for col in ("supplier", "score", "7-day change", "risk", "drivers"):
            table.add_column(col)
        for sid, score, delta, risk, drivers in data["declines"]:
            table.add_row(sid, f"{score:.1f}", f"{delta:+.1f}", risk or "", drivers or "")
        console.print(table)
        if data.get("scenario"):
            score, risk, drivers = data["scenario"]
            console.print(f"worked scenario sup_000001 (set up, then no login): {score:.1f} {risk}: {drivers}")
    if "interventions" in data:
        table = Table(title="interventions by rule and channel")
        for col in ("rule", "channel", "status", "reason", "count"):
            table.add_column(col, justify="right" if col == "count" else "left")
        for rule, channel, status, reason, n in data["interventions"]:
            table.add_row(rule, channel, status, reason, str(n))
        console.print(table)
        console.print(f"call tasks for the CS team: {data['call_tasks']}")
    if "milestones" in data:
        console.print("[bold]milestones reached[/bold]: " + ", ".join(f"{m} {n}" for m, n, _ in data["milestones"]))
    if not data.get("backtest"):
        console.print("backtest: not yet (it needs more than 30 days of scored history)")
    else:
        for version, auc, obs, churners, lift in data["backtest"]:
            auc_text = "n/a" if auc is None else f"{auc:.3f}"
            lift_text = "n/a" if lift is None else f"{lift:.1f}x"
            console.print(f"backtest {version}: ROC-AUC {auc_text} on {obs:,} supplier-days ({churners} churned "
                          f"within 30 days); critical-band lift {lift_text}")
    outbox = settings.outbox_dir
    emails = len(list(outbox.glob("*.eml"))) if outbox.exists() else 0
    console.print(f"outbox: {outbox} ({emails} .eml files)")
    console.print(f"marts: schema marts, read-only for the BI role {settings.bi_role} "
                  f"(cs-pipeline db url --bi; an SQL prompt: cs-pipeline db shell)")
    console.print("open the Dagster UI: cs-pipeline dev   (then http://127.0.0.1:3000)")
    return data
