"""Issue 15: incremental marts equal a full refresh, whatever order days are loaded and re-run in.

Property-style: load 60 generated days, then re-run a random set of old days whose files were changed
(events removed, events added, a late ticket opened three days before its file, an event_id that
duplicates one of another day) in random order; every row of every dbt table of the marts,
intermediate and event staging layers, and of customer_health, equals a full refresh
(``--full-refresh`` run tag) of the same raw data. Also the lifetime metrics (issue 13 item 4) by hand.
"""

from __future__ import annotations

import random
import uuid
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import psycopg
import pytest
import yaml
from psycopg import sql

from cs_pipeline.definitions import build_definitions
from cs_pipeline.feeds.generate import GeneratorConfig, generate
from cs_pipeline.health.scorecard import load_scorecard
from cs_pipeline.core.reruns import REBUILT_AFTER
from cs_pipeline.core.window import DayWindow
from cs_pipeline.runtime.runner import run_job_over_range
from cs_pipeline.transform.dbt import FULL_REFRESH_TAG
from tests.helpers import INTERMEDIATE_WINDOW_TABLES, reset_warehouse, window_indexes

pytestmark = pytest.mark.slow

FIRST = date(2025, 3, 1)
DAYS = 60
LAST = FIRST + timedelta(days=DAYS - 1)
TABLES = [("staging", "stg_wedsync__activity_events"), ("intermediate", "int_supplier_user_days"),
          ("intermediate", "int_supplier_client_days"),
          ("intermediate", "int_supplier_client_visits"), ("intermediate", "int_supplier_feature_days"),
          ("marts", "fct_supplier_activity_daily"), ("marts", "supplier_engagement_daily"),
          ("marts", "fct_feature_adoption"), ("marts", "fct_supplier_milestone_facts"), ("marts", "dim_suppliers"),
          ("marts", "supplier_engagement_category_sums"),
          ("marts", "customer_health")]
#: Written at scoring time, not derived from data.
VOLATILE = {"calculated_at"}


def test_rebuild_window():
    d = date(2025, 6, 10)
    one = DayWindow.day(d)
    assert one.rebuild(None, None) == DayWindow(d, d)                       # first build
    assert one.rebuild(d - timedelta(days=1), None) == DayWindow(d, d)      # the next daily run
    assert one.rebuild(d + timedelta(days=50), None) == DayWindow(d, d + timedelta(days=50))  # re-run
    assert one.rebuild(d, d - timedelta(days=3)) == DayWindow(d - timedelta(days=3), d)       # late ticket
    assert one.rebuild(d, d + timedelta(days=2)) == DayWindow(d, d)
    with pytest.raises(ValueError):
        DayWindow(d, d - timedelta(days=1))


def _no_seasonality_scorecard(tmp_path: Path) -> Path:
    """ws168 without its seasonal index: that index is computed from the history up to the newest day
    scored, so a score's value depends on the run window, independently of the marts."""
    card = load_scorecard("ws168").model_dump(mode="json", exclude_none=True)
    card["seasonality"] = {"enabled": False}
    card["version"] = "ws168-flat"
    path = tmp_path / "ws168_flat.yaml"
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _write(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False)


def change_day(landing: Path, day: date, rng: random.Random) -> None:
    """Change day ``day``'s files: remove about a fifth of its events, add copies of some with new ids
    (a login among them), a ticket opened three days earlier, and an event whose event_id is one of
    another day's events (occurring on ``day``)."""
    events_path = landing / f"activity_events_{day.isoformat()}.csv"
    events = _read(events_path)
    keep = [rng.random() > 0.2 for _ in range(len(events))]
    added = events.sample(n=min(8, len(events)), random_state=rng.randrange(10**6)).copy()
    added["event_id"] = [f"extra-{uuid.UUID(int=rng.getrandbits(128))}" for _ in range(len(added))]
    added.iloc[0, added.columns.get_loc("event_name")] = "login"
    other_day = FIRST + timedelta(days=rng.choice([i for i in range(DAYS) if FIRST + timedelta(days=i) != day]))
    other = _read(landing / f"activity_events_{other_day.isoformat()}.csv")
    duplicate = events.iloc[[0]].copy()
    duplicate["event_id"] = other["event_id"].iloc[rng.randrange(len(other))]
    _write(pd.concat([events.loc[keep], added, duplicate], ignore_index=True), events_path)

    tickets_path = landing / f"support_tickets_{day.isoformat()}.csv"
    tickets = _read(tickets_path)
    suppliers = _read(landing / f"suppliers_{day.isoformat()}.csv")
    active = suppliers.loc[suppliers["status"] != "cancelled", "supplier_id"].tolist()
    opened = pd.Timestamp(day - timedelta(days=3)).tz_localize("UTC") + pd.Timedelta(hours=10)
    late = {c: "" for c in tickets.columns}
    late.update(ticket_id=f"late-{day.isoformat()}", supplier_id=rng.choice(active),
                opened_at=opened.isoformat().replace("+00:00", "Z"), channel="email", category="billing",
                priority="urgent", first_response_minutes="30")
    _write(pd.concat([tickets, pd.DataFrame([late])], ignore_index=True), tickets_path)


def snapshot(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    out = {}
    for schema, table in TABLES:
        columns = [r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
            "ORDER BY ordinal_position", (schema, table)).fetchall() if r[0] not in VOLATILE]
        assert columns, f"{schema}.{table} missing"
        select = sql.SQL(", ").join(map(sql.Identifier, columns))
        out[f"{schema}.{table}"] = conn.execute(sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
            select, sql.Identifier(schema, table), select)).fetchall()
    return out


def run(defs, instance, first: date, last: date, days_per_run: int, tags=None) -> None:
    summaries = run_job_over_range(defs, "daily_customer_success", first, last, instance, days_per_run, tags=tags)
    assert all(s.success for s in summaries)


@pytest.mark.parametrize("seed", [3, 11])
def test_reruns_of_changed_old_days_equal_a_full_refresh(settings, warehouse, tmp_path, seed):
    rng = random.Random(seed)
    with warehouse.connect() as conn:
        reset_warehouse(conn)
    landing = tmp_path / "landing"
    generate(GeneratorConfig(suppliers=24, days=DAYS, start=FIRST, seed=seed, out=landing))
    defs = build_definitions(settings.model_copy(update={
        "landing_dir": landing, "scorecard": str(_no_seasonality_scorecard(tmp_path))}))
    instance = dg.DagsterInstance.ephemeral()
    run(defs, instance, FIRST, LAST - timedelta(days=2), days_per_run=29)
    run(defs, instance, LAST - timedelta(days=1), LAST, days_per_run=1)

    reruns = rng.sample(range(5, DAYS - 3), 3)  # random old days, random order
    for offset in reruns:
        day = FIRST + timedelta(days=offset)
        change_day(landing, day, rng)
        run(defs, instance, day, day, days_per_run=1)
        with warehouse.connect() as conn:
            late = conn.execute("SELECT opened_date FROM staging.stg_wedsync__support_tickets "
                                "WHERE ticket_id = %s", (f"late-{day.isoformat()}",)).fetchone()
            assert late == (day - timedelta(days=3),)
        # Dagster: the later partitions (here the newest) were materialised by the re-run, and the run's
        # own (past) partition is the newest event, so the intervention sensor sees a backfill.
        health = dg.AssetKey(["marts", "customer_health"])
        newest = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=health, asset_partitions=[LAST.isoformat()]), limit=1).records[0]
        assert REBUILT_AFTER in newest.event_log_entry.asset_materialization.metadata
        latest = instance.get_latest_materialization_event(health)
        assert latest.dagster_event.partition == day.isoformat()
        assert latest.run_id == newest.event_log_entry.run_id
    with warehouse.connect() as conn:
        incremental = snapshot(conn)
        health_days = conn.execute("SELECT count(DISTINCT as_of_date) FROM marts.customer_health").fetchone()[0]
        assert health_days == DAYS
    rerun_day = FIRST + timedelta(days=reruns[-1])

    run(defs, dg.DagsterInstance.ephemeral(), FIRST, LAST, days_per_run=DAYS, tags={FULL_REFRESH_TAG: "true"})
    with warehouse.connect() as conn:
        full = snapshot(conn)
        # The rebuilt intermediate tables keep their B-tree index on activity_date (the previous tables,
        # renamed aside during the refresh, held the indexes of those names), and no BRIN.
        assert window_indexes(conn) == {(t, "btree", "activity_date") for t in INTERMEDIATE_WINDOW_TABLES}
        conn.rollback()
    for table in incremental:
        assert len(incremental[table]) > 0, table
        assert incremental[table] == full[table], (table, rerun_day)
