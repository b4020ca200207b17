"""Benchmark (issue 27): does the uplift report tell the truth?

Simulated worlds (seeded) run day by day through the real intervention functions: ``newly_matching`` on the
default playbook's rules, ``plan``, ``apply_filters`` over the world's own intervention history (the rows
``service._history`` would read: counted statuses and control cases within the window), the delivery
bookkeeping (every planned row is delivered, ``sent``), and the uplift analysis the
``intervention_outcomes`` asset runs. Each world:

* ``--suppliers`` suppliers (default 1,500) over ``--days`` scored days (default 55); the health score is a
  mean-reverting random walk around a supplier-specific level (AR(1), daily shocks of 6 points), so
  suppliers cross the healthy / at_risk / critical thresholds (60, 40) again and again: escalations
  re-trigger, sharp drops recur, critical suppliers stay critical for days;
* recovery is independent of treatment: the scores are drawn before any intervention and nothing sent
  changes them (the null world). The planted world is the same world with +5 points added to the outcome
  (score ``outcome_days`` later) of every case whose supplier-facing message was actually sent;
* the estimate is the difference in mean health score change (``outcome_days`` = 30 after the trigger)
  of treated minus control cases, with its 95 % interval, as the stage reports it.

Printed last, one JSON object: ``worlds``, ``null_coverage`` (share of worlds whose 95 % interval covers
0; target >= 0.93), ``null_mean_bias`` (mean estimate in the null world, points; target within +-1),
``planted_coverage`` (interval covers 5; target >= 0.90), ``planted_mean`` (target 4-6), the mean numbers
of cases per arm, and ``method``.

    python benchmarks/uplift_validity.py --worlds 200
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from datetime import date, timedelta

import numpy as np
import pandas as pd

from cs_pipeline.interventions import outcomes as outcomes_module
from cs_pipeline.interventions import planning
from cs_pipeline.interventions.playbook import load_playbook

# Object strings, not pandas 3's arrow strings: the filters' per-row steps then cost a third (the statistics are
# the same; the option is deprecated for pandas 4, hence the warning filter).
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pd.set_option("future.infer_string", False)
START = date(2025, 3, 3)
OUTCOME_DAYS = 30
PLANTED = 5.0


def world_scores(rng: np.random.Generator, n: int, days: int) -> np.ndarray:
    """(n, days + 30) health scores 0-100: AR(1) around each supplier's level (vectorised over suppliers)."""
    total = days + OUTCOME_DAYS + 7
    level = rng.normal(60.0, 14.0, n)
    scores = np.empty((n, total))
    scores[:, 0] = level + rng.normal(0, 8.0, n)
    shocks = rng.normal(0, 6.0, (n, total))
    for t in range(1, total):
        scores[:, t] = scores[:, t - 1] + 0.12 * (level - scores[:, t - 1]) + shocks[:, t]
    return np.clip(scores, 0.0, 100.0)


def risk_of(score: np.ndarray) -> np.ndarray:
    return np.where(score >= 60, "healthy", np.where(score >= 40, "at_risk", "critical"))


def facts_of(ids: np.ndarray, scores: np.ndarray, t: int, day: date) -> pd.DataFrame:
    """``planning.FACT_COLUMNS`` rows of day index ``t`` (scores start 7 days before the first day)."""
    s = scores[:, t + 7]
    return pd.DataFrame({
        "supplier_id": pd.array(ids, dtype=object), "as_of_date": day, "risk_level": risk_of(s),
        "previous_risk_level": risk_of(scores[:, t + 6]),
        "score_delta_7d": s - scores[:, t], "score_delta_30d": np.nan, "lifecycle_stage": "active",
        "days_since_onboarded": 200, "days_since_last_login": 1, "days_since_signup": 210, "status": "active",
        "health_score": s})


def simulate(seeds: list[int], n: int, days: int) -> pd.DataFrame:
    """Worlds ``seeds`` (``n`` suppliers each) run together: the ``ops.interventions`` rows they produce, with
    ``world``, ``health_30d`` and ``risk_30d`` joined.

    Every filter step is per supplier except the global daily cap, which is multiplied by the number of
    worlds (and never binds here: about 100 messages a day per world against 500), so running the worlds'
    suppliers side by side is the same as running each world alone, at a fraction of the cost.
    """
    playbook = load_playbook()
    playbook = playbook.model_copy(update={"daily_cap": playbook.daily_cap * len(seeds)})
    # CS-team alert e-mails never touch a supplier-facing row (every filter step but their own cooldown skips
    # them) and are no treatment: left out of the world, they would only double its cost.
    rules = [r for r in sorted(playbook.rules, key=lambda r: -r.priority) if not r.condition.every_day]
    ids = np.array([f"w{seed}s{i:05d}" for seed in seeds for i in range(n)], dtype=object)
    world = np.repeat(np.array(seeds), n)
    scores = np.vstack([world_scores(np.random.default_rng(seed), n, days) for seed in seeds])
    suppliers = pd.DataFrame({"supplier_id": ids, "status": "active"})
    window = max(playbook.cooldown_days, 7)
    history = pd.DataFrame()
    frames = []
    previous = None
    for t in range(days):
        day = START + timedelta(days=t)
        today = facts_of(ids, scores, t, day)
        planned = []
        for rule in rules:
            due = planning.newly_matching(rule, today, previous, None)
            if due:
                context = today.loc[pd.Index(due).get_indexer(today["supplier_id"]) >= 0,
                                    ["supplier_id", "health_score", "risk_level"]]
                planned.append(planning.plan(rule, context, day))
        previous = today
        if not planned:
            continue
        fresh = pd.concat(planned, ignore_index=True)
        recent = history.loc[history["as_of_date"] > day - timedelta(days=window)] if len(history) else history
        filtered = planning.apply_filters(fresh, recent, suppliers, playbook, day, None, reserved_today=0)
        filtered["status"] = filtered["status"].where(filtered["status"] != "planned", "sent")  # all delivered
        filtered["t"] = t
        frames.append(filtered)
        keep = (filtered["status"].isin(planning.COUNTED_STATUSES)
                | ((filtered["status"] == "suppressed") & (filtered["reason"] == "control")))
        history = pd.concat([recent, filtered.loc[keep, ["supplier_id", "rule", "channel", "audience", "as_of_date",
                                                         "status", "reason"]]], ignore_index=True)
    rows = pd.concat(frames, ignore_index=True)
    rows["intervention_id"] = np.arange(len(rows))
    index = pd.Series(np.arange(len(ids)), index=ids)
    row_index = index.reindex(rows["supplier_id"]).to_numpy()
    rows["world"] = world[row_index]
    later = scores[row_index, rows["t"].to_numpy() + 7 + OUTCOME_DAYS]
    rows["health_at_trigger"] = rows["health_score"].astype(float)
    rows["risk_at_trigger"] = rows["risk_level"]
    rows["health_30d"] = later
    rows["risk_30d"] = risk_of(later)
    rows["is_control"] = (rows["status"] == "suppressed") & (rows["reason"] == "control")
    return rows


def estimate_today(rows: pd.DataFrame, planted: float) -> tuple[float, float, float, int, int]:
    """The stage's analysis as it is before issue 27: its case selection (``outcomes``: sent rows and control
    rows, one case per supplier, rule and day), health change in points, Welch's interval."""
    from scipy import stats

    frame, _ = outcomes_module.outcomes(rows)
    cases = frame.groupby(["supplier_id", "rule", "as_of_date"]).agg(
        control=("is_control", "all"), before=("health_at_trigger", "first"), after=("health_30d", "first")
    ).reset_index()
    cases["change"] = cases["after"] - cases["before"] + np.where(cases["control"], 0.0, planted)
    treated, control = cases.loc[~cases["control"], "change"], cases.loc[cases["control"], "change"]
    result = stats.ttest_ind(treated, control, equal_var=False)
    low, high = result.confidence_interval(0.95)
    return float(treated.mean() - control.mean()), float(low), float(high), len(treated), len(control)


def estimate(rows: pd.DataFrame, planted: float) -> tuple[float, float, float, int, int]:
    """The stage's intention-to-treat analysis (``outcomes.case_outcomes`` + ``outcomes.uplift``) when present."""
    if not hasattr(outcomes_module, "case_outcomes"):
        return estimate_today(rows, planted)
    data = rows.assign(health_outcome=rows["health_30d"], churned=False, contaminated=False)
    cases = outcomes_module.case_outcomes(data)
    cases["health_change"] = cases["health_change"] + np.where(cases["arm"] == "treated", planted, 0.0)
    item = outcomes_module.uplift(cases)
    return item["difference"], item["ci_low"], item["ci_high"], item["treated"], item["control"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worlds", type=int, default=200)
    parser.add_argument("--suppliers", type=int, default=1500)
    parser.add_argument("--days", type=int, default=55)
    parser.add_argument("--seed", type=int, default=27)
    parser.add_argument("--batch", type=int, default=50, help="worlds simulated side by side")
    args = parser.parse_args()
    started = time.perf_counter()
    null, planted = [], []
    seeds = [args.seed * 10_000 + w for w in range(args.worlds)]
    for start in range(0, len(seeds), args.batch):
        rows = simulate(seeds[start:start + args.batch], args.suppliers, args.days)
        for _, world in rows.groupby("world"):
            null.append(estimate(world, 0.0))
            planted.append(estimate(world, PLANTED))
    null_arr, planted_arr = np.array(null), np.array(planted)
    result = {
        "worlds": args.worlds, "suppliers": args.suppliers, "days": args.days, "outcome_days": OUTCOME_DAYS,
        "method": "intention_to_treat" if hasattr(outcomes_module, "case_outcomes") else "before_issue_27",
        "null_coverage": round(float(((null_arr[:, 1] <= 0) & (null_arr[:, 2] >= 0)).mean()), 3),
        "null_mean_bias": round(float(null_arr[:, 0].mean()), 2),
        "planted_coverage": round(float(((planted_arr[:, 1] <= PLANTED) & (planted_arr[:, 2] >= PLANTED)).mean()), 3),
        "planted_mean": round(float(planted_arr[:, 0].mean()), 2),
        "treated_cases_mean": round(float(null_arr[:, 3].mean()), 1),
        "control_cases_mean": round(float(null_arr[:, 4].mean()), 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
