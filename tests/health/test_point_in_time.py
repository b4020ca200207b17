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


def _facts(rows: list[dict]) -> pd.DataFrame:
    base = {k: 0 for k in ("onboarded", "logins_total", "clients_total", "forms_sent_total", "forms_completed_total",
                           "journeys_completed_total", "reviews_total", "integrations_total", "upgrades_total",
                           "adopted_core_features", "days_since_signup")}
    base["core_features_total"] = 6
    return pd.DataFrame([{**base, **r} for r in rows])


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
            out[day] = pd.concat([out.get(day, pd.DataFrame()), _facts([row])], ignore_index=True)
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
    corrected = _facts([{"supplier_id": s, "as_of_date": day, "logins_total": 0} for s in ("s1", "s2")])
    changes = reconcile_milestones(corrected, milestones, stored, day)
    assert changes.deletes.values.tolist() == [["s1", "first_login"]]
    assert changes.retractions.values.tolist() == [["s2", "first_login"]]
    assert changes.upserts.empty
    # Supported again later: the retracted row is reinstated (retracted_at cleared) on its new day.
    retracted = stored.iloc[[1]].assign(retracted_at=pd.Timestamp("2025-06-03T10:00Z"))
    later = _facts([{"supplier_id": "s2", "as_of_date": day + timedelta(days=2), "logins_total": 1}])
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
