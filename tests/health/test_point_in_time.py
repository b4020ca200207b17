"""Issue 28, the pure parts: a day's seasonal index uses only the history before that day, and the
milestones a run reconciles equal an evaluation of every built day at once (a full refresh)."""

from __future__ import annotations

import random
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from cs_pipeline.health.milestones import evaluate_milestones, load_milestones, reconcile_milestones
from cs_pipeline.health.scorecard import load_scorecard
from cs_pipeline.health.scoring import score_suppliers, seasonal_index
from cs_pipeline.health.seasonal import daily_seasonal_sums, point_in_time_index
from tests.helpers import milestone_facts

WS168 = load_scorecard("ws168")
METRICS = ["client_activity_rate"]
START = date(2024, 1, 1)


def _history(days: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(days):
        day = START + timedelta(days=i)
        for s in range(12):
            category = ("florist", "photographer", None)[s % 3]
            value = None if s == 5 else round(float(rng.uniform(0.2, 1.0)) * (0.5 if day.month == 1 else 1.0), 4)
            rows.append({"supplier_id": f"s{s}", "as_of_date": day, "vendor_category": category,
                         "client_activity_rate": value, "days_since_last_login": 2, "adoption_breadth": 0.5,
                         "form_completion_rate": 0.5, "journey_completion_rate": None, "tier": "starter",
                         "lifecycle_stage": "active", "days_since_signup": 400, "active_days_30d": 10,
                         "stickiness": 0.2})
    return pd.DataFrame(rows)


def test_a_days_index_is_learned_from_the_history_before_it_only():
    history = _history(420)
    settings = WS168.seasonality.model_copy(update={"min_observations": 20})
    days = [START + timedelta(days=i) for i in (40, 366, 380, 400)]
    together = point_in_time_index(daily_seasonal_sums(history, METRICS), days, METRICS, settings)
    for day in days:
        before = history.loc[history["as_of_date"] < day]
        expected = seasonal_index(before.dropna(subset=["vendor_category"]), METRICS, settings)
        got = together.loc[together["as_of_date"] == day].drop(columns="as_of_date").merge(
            expected, on=["vendor_category", "month"], suffixes=("", "_x"))
        assert len(got) == len(expected) > 0
        assert got["client_activity_rate"].to_numpy() == pytest.approx(got["client_activity_rate_x"].to_numpy())
    day = days[-1]
    index = point_in_time_index(daily_seasonal_sums(history, METRICS), [day], METRICS, settings)
    assert index.equals(together.loc[together["as_of_date"] == day].reset_index(drop=True))
    # The future does not move it: more history after the day, or the day itself changed, same bits.
    future = history.copy()
    future.loc[future["as_of_date"] >= day, "client_activity_rate"] = 0.01
    assert point_in_time_index(daily_seasonal_sums(future, METRICS), [day], METRICS, settings).equals(index)
    # Nor does how much history around the window the caller read.
    trimmed = history.loc[history["as_of_date"] >= day - timedelta(days=200)]
    narrow = point_in_time_index(daily_seasonal_sums(trimmed, METRICS), [day], METRICS, settings, lookback_days=200)
    wide = point_in_time_index(daily_seasonal_sums(history, METRICS), [day], METRICS, settings, lookback_days=200)
    assert narrow.equals(wide)


def test_scores_of_a_day_do_not_depend_on_the_window_they_are_computed_in():
    history = _history(400)
    settings = WS168.seasonality.model_copy(update={"min_observations": 20})
    card = WS168.model_copy(update={"seasonality": settings})
    sums = daily_seasonal_sums(history, METRICS)
    days = [START + timedelta(days=i) for i in (365, 366, 380, 399)]
    window = history.loc[history["as_of_date"].isin(days)].reset_index(drop=True)
    together = score_suppliers(window, card, seasonal=point_in_time_index(sums, days, METRICS, settings))
    assert together["client_activity_seasonal_index"].nunique() > 2  # the January dip is indexed
    for day in days:
        alone_rows = window.loc[window["as_of_date"] == day].reset_index(drop=True)
        alone = score_suppliers(alone_rows, card, seasonal=point_in_time_index(sums, [day], METRICS, settings))
        same = together.loc[together["as_of_date"] == day].reset_index(drop=True)
        pd.testing.assert_frame_equal(alone, same)




STORED = ["supplier_id", "milestone_type", "category", "achieved_at", "celebrated", "retracted_at"]


def _apply(table: pd.DataFrame, changes, now: str) -> pd.DataFrame:
    """What success_milestones' write does to the table (milestone_store.write_milestone_changes)."""
    keys = ["supplier_id", "milestone_type"]
    table = table.set_index(keys)
    for row in changes.upserts.itertuples(index=False):
        key = (row.supplier_id, row.milestone_type)
        if key in table.index:
            table.loc[key, ["category", "achieved_at", "retracted_at"]] = [row.category, row.achieved_at, None]
        else:
            table.loc[key, :] = [row.category, row.achieved_at, False, None]
    for row in changes.deletes.itertuples(index=False):
        if not table.loc[(row.supplier_id, row.milestone_type), "celebrated"]:
            table = table.drop(index=(row.supplier_id, row.milestone_type))
    for row in changes.retractions.itertuples(index=False):
        if table.loc[(row.supplier_id, row.milestone_type), "retracted_at"] is None:
            table.loc[(row.supplier_id, row.milestone_type), "retracted_at"] = now
    return table.reset_index()[STORED]


def _world(rng: random.Random, days: int) -> dict[date, pd.DataFrame]:
    """Facts of 4 suppliers over ``days`` days: running totals that grow at random."""
    out = {}
    for s in range(4):
        totals = dict(logins_total=0, clients_total=0, forms_sent_total=0, forms_completed_total=0,
                      adopted_core_features=0)
        for i in range(days):
            for k in totals:
                totals[k] += rng.random() < 0.3
            day = START + timedelta(days=i)
            row = {"supplier_id": f"s{s}", "as_of_date": day, "onboarded": int(i > 1), **totals}
            out[day] = pd.concat([out.get(day, pd.DataFrame()), milestone_facts([row])], ignore_index=True)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_reconciled_milestones_equal_a_full_evaluation_whatever_the_order(seed):
    """Days loaded in a random order, some re-run with changed facts (a corrected file: totals cut
    back), celebrations in between: the table equals an evaluation of all final facts at once, except
    that a celebrated milestone the final facts do not support stays, retracted."""
    rng = random.Random(seed)
    milestones = load_milestones()
    n = 12
    truth = _world(rng, n)
    built: dict[date, pd.DataFrame] = {}
    table = pd.DataFrame(columns=STORED)
    order = [START + timedelta(days=i) for i in range(n)]
    rng.shuffle(order)
    order += rng.sample(order, 3)  # re-runs
    corrected = {d: truth[d] for d in truth}
    for step, day in enumerate(order):
        if step >= n and rng.random() < 0.7:  # a corrected file: every total from this day on drops
            for d in truth:
                if d >= day:
                    cut = corrected[d].copy()
                    for k in ("logins_total", "clients_total", "forms_sent_total"):
                        cut[k] = cut[k] // 2
                    corrected[d] = cut
        # dbt rebuilds the day and every later built day (running totals carry forward).
        for d in [d for d in corrected if d >= day and (d in built or d == day)]:
            built[d] = corrected[d]
        facts = pd.concat([f for d, f in built.items() if d >= day], ignore_index=True)
        changes = reconcile_milestones(facts, milestones, table.drop(columns="category"), day)
        table = _apply(table, changes, now=f"t{step}")
        if rng.random() < 0.5:  # the intervention job celebrates what is there
            table.loc[table["retracted_at"].isna(), "celebrated"] = True
    full = evaluate_milestones(pd.concat(built.values(), ignore_index=True), milestones,
                               pd.DataFrame(columns=["supplier_id", "milestone_type", "achieved_at"]))
    live = table.loc[table["retracted_at"].isna()]
    key = ["supplier_id", "milestone_type"]
    assert sorted(map(tuple, live[[*key, "category", "achieved_at"]].values.tolist())) == \
        sorted(map(tuple, full[[*key, "category", "achieved_at"]].values.tolist()))
    retracted = table.loc[table["retracted_at"].notna()]
    assert retracted["celebrated"].all()
    assert not set(map(tuple, retracted[key].values.tolist())) & set(map(tuple, full[key].values.tolist()))
    # A full refresh (from the first day) on top of it changes nothing.
    again = reconcile_milestones(pd.concat(built.values(), ignore_index=True), milestones,
                                 table.drop(columns="category"), START)
    assert again.upserts.empty and again.deletes.empty and again.retractions.empty


def test_a_milestone_the_corrected_data_no_longer_supports_is_removed_or_retracted():
    milestones = load_milestones()
    day = date(2025, 6, 3)
    stored = pd.DataFrame({"supplier_id": ["s1", "s2"], "milestone_type": ["first_login", "first_login"],
                           "achieved_at": [day, day], "celebrated": [False, True], "retracted_at": [None, None]})
    corrected = milestone_facts([{"supplier_id": s, "as_of_date": day, "logins_total": 0} for s in ("s1", "s2")])
    changes = reconcile_milestones(corrected, milestones, stored, day)
    assert changes.deletes.values.tolist() == [["s1", "first_login"]]
    assert changes.retractions.values.tolist() == [["s2", "first_login"]]
    assert changes.upserts.empty
    # Supported again later: the retracted row is reinstated (retracted_at cleared) on its new day.
    retracted = stored.iloc[[1]].assign(retracted_at=pd.Timestamp("2025-06-03T10:00Z"))
    later = milestone_facts([{"supplier_id": "s2", "as_of_date": day + timedelta(days=2), "logins_total": 1}])
    back = reconcile_milestones(later, milestones, retracted, day + timedelta(days=2))
    assert back.upserts[["supplier_id", "milestone_type", "achieved_at"]].values.tolist() == \
        [["s2", "first_login", day + timedelta(days=2)]]


def test_ensuring_the_milestone_table_does_not_wait_for_its_readers(warehouse):
    """Every success_milestones run ensures the retracted_at column; with the column there it must not
    take a lock that waits for an open reader of the table (a dashboard session)."""
    from cs_pipeline.health.store import ensure_health_tables

    with warehouse.connect() as setup:
        ensure_health_tables(setup)
    with warehouse.connect() as reader, warehouse.connect() as writer:
        reader.execute("SELECT count(*) FROM marts.success_milestones").fetchone()  # transaction left open
        writer.execute("SET lock_timeout = '2s'")
        writer.commit()
        ensure_health_tables(writer)  # raises LockNotAvailable when it waits for the reader
        columns = [r[0] for r in writer.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'marts' "
            "AND table_name = 'success_milestones'").fetchall()]
        assert "retracted_at" in columns


def test_success_milestones_asset_follows_late_and_corrected_days(settings, warehouse):
    """The issue's milestone scenario through Dagster, on hand-written facts (what dbt would build):
    days 1, 2, 3, 5 loaded, then day 4 (which rebuilds day 5's running totals), then a corrected day 2.
    A milestone first reached on day 5 once day 4 is in appears; one the corrected day 2 no longer
    supports is removed, or kept with retracted_at when it was celebrated."""
    import dagster as dg

    from cs_pipeline.runtime.runner import run_job_over_range
    from cs_pipeline.definitions import build_definitions
    from tests.helpers import reset_warehouse

    key = dg.AssetKey(["marts", "success_milestones"])
    d = [date(2025, 6, i) for i in range(1, 6)]
    with warehouse.connect() as conn:
        reset_warehouse(conn)
        conn.execute("CREATE SCHEMA IF NOT EXISTS marts")
        columns = ", ".join(f"{c} integer" for c in milestone_facts([{}]).columns)
        conn.execute(f"CREATE TABLE marts.fct_supplier_milestone_facts (supplier_id text, as_of_date date, {columns})")
        conn.commit()

    def facts(day: date, rows: dict[str, dict]) -> None:
        frame = milestone_facts([{"supplier_id": s, **r} for s, r in rows.items()])
        with warehouse.connect() as conn:
            conn.execute("DELETE FROM marts.fct_supplier_milestone_facts WHERE as_of_date = %s", (day,))
            for record in frame.to_dict("records"):
                names = ", ".join(["as_of_date", *record])
                marks = ", ".join(["%s"] * (len(record) + 1))
                conn.execute(f"INSERT INTO marts.fct_supplier_milestone_facts ({names}) VALUES ({marks})",
                             [day, *record.values()])
            conn.commit()

    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()

    def run(day: date) -> None:
        assert all(s.success for s in run_job_over_range(defs, "daily_customer_success", day, day, instance, 1,
                                                         asset_selection=[key]))

    def table() -> dict[tuple[str, str], tuple]:
        with warehouse.connect() as conn:
            return {(r[0], r[1]): (r[2], r[3], r[4] is not None) for r in conn.execute(
                "SELECT supplier_id, milestone_type, achieved_at, celebrated, to_jsonb(m) ->> 'retracted_at' "
                "FROM marts.success_milestones m")}  # to_jsonb: also runs on the table before retracted_at

    # s1 logs in on day 2 only; s2 on day 2, and reaches ten clients on day 5 once day 4 is in (its
    # day-5 total is 9 while day 4 is missing, 17 after); s3 logs in on day 2 and is celebrated.
    first = {"s1": dict(logins_total=0), "s2": dict(logins_total=0, clients_total=1), "s3": dict(logins_total=0)}
    login = {"s1": dict(logins_total=1), "s2": dict(logins_total=1, clients_total=1), "s3": dict(logins_total=1)}
    for day, rows in ((d[0], first), (d[1], login), (d[2], login)):
        facts(day, rows)
        run(day)
    facts(d[4], {**login, "s2": dict(logins_total=1, clients_total=9)})
    run(d[4])
    assert ("s2", "ten_clients") not in table()
    facts(d[3], {**login, "s2": dict(logins_total=1, clients_total=9)})
    facts(d[4], {**login, "s2": dict(logins_total=1, clients_total=17)})  # dbt rebuilds the later day
    run(d[3])
    assert table()[("s2", "ten_clients")] == (d[4], False, False)
    with warehouse.connect() as conn:
        conn.execute("UPDATE marts.success_milestones SET celebrated = true, celebrated_at = now() "
                     "WHERE supplier_id = 's3'")
        conn.commit()
    for day in d[1:]:  # the corrected day 2 removes every login of s1 and s3; dbt rebuilds the later days
        facts(day, {"s1": dict(logins_total=0), "s2": dict(logins_total=1, clients_total={d[3]: 9, d[4]: 17}.get(day, 1)),
                    "s3": dict(logins_total=0)})
    run(d[1])
    after = table()
    assert ("s1", "first_login") not in after
    assert after[("s3", "first_login")] == (d[1], True, True)  # celebrated: kept, retracted
    assert after[("s2", "first_login")] == (d[1], False, False)
    assert after[("s2", "ten_clients")] == (d[4], False, False)
