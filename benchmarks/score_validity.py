"""Benchmark (issue 13): do the health scores predict churn on data our generator did not produce?

For each dataset's warehouse it backtests every shipped scorecard (as shipped and refitted with
``fit_scorecard``, time-based split), the best fit (chosen on the fit days) and plain recency
(``days_since_last_activity``) on the same label ("cancelled within --horizon days") and the same
held-out as-of days, reports what the backtest asset's ``scorecards_rank_churners`` check says about each
shipped scorecard, and prints one JSON object last:
``{dataset: {label, observations, churners, auc: {name: ROC-AUC}, check: {scorecard: ...}}}``.

RavenStack (../shared/data/ravenstack, import mapping ``mappings/ravenstack.yaml``)::

    export CS_PIPELINE_HOME=/tmp/raven CS_PIPELINE_PARTITION_START=2024-07-01
    cs-pipeline import --mapping mappings/ravenstack.yaml --from ../shared/data/ravenstack
    cs-pipeline run --start 2024-07-01 --end 2024-12-31 --days-per-run 92

churnsim_crm (../shared/data/churnsim_crm; landing files from ``benchmarks/churnsim_landing.py``, which
derives the suppliers' churn from subscription periods and caps events per account, day and type)::

    export CS_PIPELINE_HOME=/tmp/churnsim CS_PIPELINE_PARTITION_START=2022-01-01
    python benchmarks/churnsim_landing.py --from ../shared/data/churnsim_crm --out /tmp/churnsim/landing
    cs-pipeline run --start 2022-01-01 --end 2022-10-01 --days-per-run 92

then::

    python benchmarks/score_validity.py --dataset ravenstack=/tmp/raven --dataset churnsim_crm=/tmp/churnsim

The lifetime metrics (issue 13 item 4) are computed here by ``lifetime_metrics_from_activity`` until
``marts.supplier_engagement_daily`` carries them; when the mart has them, the mart's columns are used.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import timedelta

import numpy as np
import pandas as pd
import psycopg
from sklearn.metrics import roc_auc_score

from cs_pipeline.health.backtest import backtest, label_churn, misleading_warning
from cs_pipeline.health.fit import fit_scorecard
from cs_pipeline.health.scorecard import Churn, shipped_scorecards
from cs_pipeline.health.scoring import score_suppliers, seasonal_index
from cs_pipeline.core.db import read_frame
from cs_pipeline.core.warehouse import resolve_endpoints
from cs_pipeline.health.store import read_activity_days, read_engagement
from cs_pipeline.settings import Settings

LIFETIME = ["tenure_days", "active_days_lifetime", "active_days_per_30d_lifetime", "days_since_last_activity",
            "mean_days_between_active_days", "recency_to_cadence", "revenue_90d", "revenue_lifetime",
            "active_days_90d"]


def lifetime_metrics_from_activity(engagement: pd.DataFrame, activity: pd.DataFrame, paid: pd.DataFrame) -> pd.DataFrame:
    """STOPGAP until the mart has them: the issue's lifetime metrics per engagement row, in pandas.

    ``activity``: supplier_id, activity_date (days with any event); ``paid``: supplier_id, event_date,
    amount (paid billing events). Same definitions as the issue: tenure from signup (or first
    activity), mean gap between active days (null below 2), recency_to_cadence smoothed toward the
    population's median gap with a weight of 2 gaps.
    """
    e = engagement.copy()
    e["supplier_id"] = e["supplier_id"].astype(str)
    activity = activity.assign(supplier_id=activity["supplier_id"].astype(str))
    paid = paid.assign(supplier_id=paid["supplier_id"].astype(str))
    e["_day"] = pd.to_datetime(e["as_of_date"]).astype("datetime64[ns]")
    a = activity.assign(d=pd.to_datetime(activity["activity_date"]).astype("datetime64[ns]")).sort_values("d")
    a["n"] = a.groupby("supplier_id").cumcount() + 1
    a["first"] = a.groupby("supplier_id")["d"].transform("min")
    merged = pd.merge_asof(e.sort_values("_day"), a.rename(columns={"d": "_day"})[["supplier_id", "_day", "n", "first"]]
                           .assign(last=lambda f: f["_day"]), on="_day", by="supplier_id", direction="backward")
    merged = merged.sort_index()
    tenure = merged["days_since_signup"].astype(float)
    since_first = (merged["_day"] - merged["first"]).dt.days
    tenure = tenure.fillna(since_first)
    n = merged["n"].fillna(0).astype(float)
    last = (merged["_day"] - merged["last"]).dt.days.astype(float)
    gap = np.where(n >= 2, since_first - last, np.nan) / np.where(n >= 2, n - 1, np.nan)
    prior = np.nanmedian(gap) if np.isfinite(gap).any() else 30.0
    smoothed = (gap * (n - 1) + prior * 2) / ((n - 1) + 2)
    out = pd.DataFrame(index=merged.index)
    out["tenure_days"] = tenure
    out["active_days_lifetime"] = n
    out["active_days_per_30d_lifetime"] = np.where(tenure > 0, 30 * n / tenure.clip(lower=1), np.nan)
    out["days_since_last_activity"] = last
    out["mean_days_between_active_days"] = gap
    out["recency_to_cadence"] = np.where(n >= 2, last / smoothed, np.nan)
    # Windowed counts: active days and paid revenue in the 90 days up to each as-of day.
    for frame, value, name in ((a.assign(v=1.0), "v", "active_days_90d"),
                               (paid.assign(d=pd.to_datetime(paid["event_date"]).astype("datetime64[ns]"), v=paid["amount"].astype(float)), "v", "revenue_90d")):
        daily = frame.groupby(["supplier_id", "d"])[value].sum().reset_index().sort_values("d")
        daily["cum"] = daily.groupby("supplier_id")[value].cumsum()
        at = pd.merge_asof(e.sort_values("_day"), daily.rename(columns={"d": "_day"})[["supplier_id", "_day", "cum"]],
                           on="_day", by="supplier_id").sort_index()["cum"].fillna(0.0)
        before = pd.merge_asof(e.assign(_day=e["_day"] - pd.Timedelta(days=90)).sort_values("_day"),
                               daily.rename(columns={"d": "_day"})[["supplier_id", "_day", "cum"]],
                               on="_day", by="supplier_id").sort_index()["cum"].fillna(0.0)
        out[name] = (at - before).to_numpy()
        if name == "revenue_90d":
            out["revenue_lifetime"] = at.to_numpy()
    return out


def evaluate(conn, horizon: int) -> dict:
    """Backtest on one warehouse: every shipped scorecard (as shipped and refitted), the best fit (chosen
    by its ROC-AUC on the fit days, never the held-out ones) and plain recency, all on the same held-out
    as-of days and the label "cancelled within ``horizon`` days"; plus what the backtest asset's
    ``scorecards_rank_churners`` check says about each shipped scorecard on all weekly as-of days."""
    first, last = conn.execute("SELECT min(as_of_date), max(as_of_date) FROM marts.supplier_engagement_daily").fetchone()
    history = read_engagement(conn, first, last)
    stopgap = not set(LIFETIME) <= set(history.columns)
    if stopgap:
        activity = read_activity_days(conn, first, last)
        paid = read_frame(conn, "SELECT supplier_id, event_date, amount FROM staging.stg_wedsync__billing_events "
                                "WHERE event_type = 'invoice_paid' AND amount IS NOT NULL")
        extra = lifetime_metrics_from_activity(history, activity, paid)
        history = pd.concat([history.drop(columns=[c for c in LIFETIME if c in history]), extra], axis=1)
    churn = read_frame(conn, "SELECT supplier_id, cancelled_date FROM marts.dim_suppliers")
    churn_dates = pd.Series(pd.to_datetime(churn["cancelled_date"]).to_numpy(), index=churn["supplier_id"].to_numpy())
    last_as_of = last - timedelta(days=horizon)
    days = pd.to_datetime(history["as_of_date"])
    weekly = history.loc[(days.dt.date <= last_as_of) & (((days - pd.Timestamp(last_as_of)).dt.days % 7) == 0)]
    weekly = weekly.loc[weekly["status"].ne("cancelled")].reset_index(drop=True) if "status" in weekly else weekly.reset_index(drop=True)
    label = Churn(kind="cancellation", horizon_days=horizon)
    labels = label_churn(weekly, label, churn_dates)
    cards = shipped_scorecards()
    aucs, checks, fit, fitted_from = {}, {}, None, None
    for name, card in cards.items():
        card = card.model_copy(update={"churn": label})
        metrics = card.seasonal_metrics
        seasonal = seasonal_index(history, metrics, card.seasonality) if metrics else None
        result = fit_scorecard(weekly, labels, card, f"{card.version}-fit", seasonal=seasonal)
        aucs[name] = round(result.old_auc, 4)
        aucs[f"{name}_fitted"] = round(result.new_auc, 4)
        if fit is None or result.fit_auc > fit.fit_auc:
            fit, fitted_from = result, name

        def score(e, c, s=seasonal):
            return score_suppliers(e, c, seasonal=s)["health_score"]

        scores = score_suppliers(weekly, card, seasonal=seasonal)
        full = backtest(scores, labels=labels, horizon_days=horizon, churn_kind=label.kind)
        checks[name] = {"auc_all_weeks": round(full.auc, 4),
                        "churn_rate_by_level": {k: None if v is None else round(v, 4)
                                                for k, v in full.churn_rate_by_level.items()},
                        "scorecards_rank_churners": misleading_warning(full, weekly, card, labels, score) or "passed"}
    test = pd.to_datetime(weekly["as_of_date"]).dt.date >= fit.test_days[0]
    recency = weekly.loc[test, "days_since_last_activity"].astype(float).fillna(1e6).to_numpy()
    aucs["recency"] = round(float(roc_auc_score(labels[test.to_numpy()], recency)), 4)
    # Not usage: how much of the label tenure alone explains (newer accounts at more risk).
    tenure = weekly.loc[test, "days_since_signup"].astype(float).fillna(0.0).to_numpy()
    aucs["tenure_only"] = round(float(roc_auc_score(labels[test.to_numpy()], -tenure)), 4)
    aucs["fitted"] = round(fit.new_auc, 4)
    return {"label": f"cancellation within {horizon} days", "fitted_from": fitted_from,
            "fitted_weights": {c.name: c.weight for c in fit.scorecard.components},
            "held_out_days": f"{fit.test_days[0]}..{fit.test_days[1]}", "observations": int(len(weekly)),
            "churners": int(labels.sum()), "held_out_churners": int(labels[test.to_numpy()].sum()),
            "lifetime_metrics": "stopgap (benchmarks)" if stopgap else "mart", "auc": aucs, "check": checks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", required=True, metavar="NAME=HOME",
                        help="a dataset name and the CS_PIPELINE_HOME of its warehouse (repeatable)")
    parser.add_argument("--horizon", type=int, default=30)
    parser.add_argument("--note", action="append", default=[], metavar="NAME=TEXT",
                        help="how a dataset was loaded (e.g. what was sampled), copied into its output")
    args = parser.parse_args()
    notes = dict(n.split("=", 1) for n in args.note)
    out = {}
    for item in args.dataset:
        name, home = item.split("=", 1)
        settings = Settings.from_env({**os.environ, "CS_PIPELINE_HOME": home})
        with psycopg.connect(resolve_endpoints(settings).warehouse) as conn:
            out[name] = evaluate(conn, args.horizon)
        if name in notes:
            out[name]["loaded"] = notes[name]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
