"""Benchmark (issue 13): do the health scores predict churn on data our generator did not produce?

For each dataset's warehouse it backtests every shipped scorecard (as shipped and refitted with
``fit_scorecard``, time-based split), the best fit (chosen on the fit days, never the held-out ones) and
plain recency (``days_since_last_activity``) on the same weekly as-of days, each on

* the dataset's natural label (``--label``, default ``cancellation`` within ``--horizon`` days), and
* each scorecard's own ``churn`` label (``purchase``: inactivity, no activity in 90 days),

and says which label each figure uses. Per figure: ROC-AUC on the held-out (later) as-of days and on all
weeks, with a 95 % bootstrap interval of the held-out figure that resamples *accounts* (the weekly rows
of one account are not independent; ``scipy.stats.bootstrap``, percentile method, 999 resamples), so a
figure below 0.5 can be told apart from chance. Also: the fitted scorecard minus recency (paired, same
resamples), the refit of each scorecard with a tenure component added (``{name}+tenure``: is account age
a signal the scorecard misses?), tenure alone, and what the backtest asset's ``scorecards_rank_churners``
check says about each shipped scorecard on its own label. ``--scorecard NAME=PATH`` adds a scorecard of
one's own (e.g. WS-168 as it was before issue 13, to compare). One JSON object is printed last:
``{dataset: {natural_label, labels: {label: {observations, churners, held_out_days, auc: {name:
{held_out, all_weeks, ci95}}}}, own_label: {scorecard: label}, check: {scorecard: ...}}}``.

RavenStack (../shared/data/ravenstack, import mapping ``mappings/ravenstack.yaml``)::

    CS_PIPELINE_HOME=/tmp/raven CS_PIPELINE_PARTITION_START=2024-07-01 \
        cs-pipeline import --mapping mappings/ravenstack.yaml --from ../shared/data/ravenstack --run

churnsim_crm (../shared/data/churnsim_crm; landing files from ``benchmarks/churnsim_landing.py``, which
derives the suppliers' churn from subscription periods and caps events per account, day and type)::

    python benchmarks/churnsim_landing.py --from ../shared/data/churnsim_crm --out /tmp/churnsim/landing
    CS_PIPELINE_HOME=/tmp/churnsim CS_PIPELINE_PARTITION_START=2022-01-01 CS_PIPELINE_LANDING_DIR=/tmp/churnsim/landing \
        cs-pipeline run --start 2022-01-01 --end 2022-10-01 --days-per-run 92

then::

    python benchmarks/score_validity.py --dataset ravenstack=/tmp/raven --dataset churnsim_crm=/tmp/churnsim

The lifetime metrics come from ``marts.supplier_engagement_daily`` (issue 15's incremental mart).

Issue 26: per dataset, ``model`` holds the churn model's figures on the natural label (the same training as
``cs-pipeline model train --churn KIND:DAYS``: rolling-origin validation over the last quarter of the weekly
as-of days, each block predicted by a model fitted on weeks whose horizon ended before it, calibrated on the
weeks in between): its held-out ROC-AUC with the 95 % account-bootstrap interval, and on the same rows
every shipped scorecard as shipped, plain recency and tenure alone, the model minus the best scorecard
(the best chosen on these rows: in the scorecards' favour), minus recency and minus tenure, paired on the
same resamples. ``--no-model`` leaves it out.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import timedelta

import numpy as np
import pandas as pd
import psycopg
from scipy.stats import bootstrap
from sklearn.metrics import roc_auc_score

from cs_pipeline.core.db import read_frame
from cs_pipeline.core.warehouse import resolve_endpoints
from cs_pipeline.health.backtest import (
    BacktestError,
    backtest,
    label_churn,
)
from cs_pipeline.health.diagnose import misleading_warning
from cs_pipeline.health.fit import fit_scorecard
from cs_pipeline.health.scorecard import (
    Churn,
    Scorecard,
    load_scorecard,
    shipped_scorecards,
)
from cs_pipeline.health.scoring import score_suppliers, seasonal_index
from cs_pipeline.health.store import read_activity_days, read_engagement
from cs_pipeline.core.settings import Settings

LIFETIME = ["tenure_days", "active_days_lifetime", "active_days_per_30d_lifetime", "days_since_last_activity",
            "mean_days_between_active_days", "recency_to_cadence", "revenue_90d", "revenue_lifetime",
            "active_days_90d"]
#: The component added for ``{name}+tenure``: more points for older accounts, full points at a year.
TENURE = {"name": "tenure", "label": "Tenure", "metric": "tenure_days", "weight": 15, "unit": "days",
          "phrase": "{metric} days since signup", "rule": {"type": "linear", "lower": 0, "upper": 365}}
RESAMPLES = 999
#: Below this many churners on the held-out days a label is reported as not supported by the dataset
#: (counts only, no AUC): one or two churners make any ROC-AUC noise.
MIN_HELD_OUT_CHURNERS = 10


def label_name(churn: Churn) -> str:
    """``cancellation_30d``, ``inactivity_90d`` (``+events`` when restricted to event names)."""
    return f"{churn.kind}_{churn.horizon_days}d" + ("+events" if churn.events else "")


def with_tenure(card: Scorecard) -> Scorecard:
    """``card`` plus the ``TENURE`` component (version ``{version}-tenure``)."""
    data = card.model_dump()
    data["version"] = f"{card.version}-tenure"
    data["components"].append(TENURE)
    return Scorecard.model_validate(data)


class AccountBootstrap:
    """95 % percentile intervals of ROC-AUC statistics that resample accounts (all weekly rows of a drawn
    account come along), with ``scipy.stats.bootstrap`` and a fixed seed, so every figure of one label
    sees the same resamples."""

    def __init__(self, accounts: np.ndarray, labels: np.ndarray, seed: int = 13):
        codes = pd.factorize(pd.Series(accounts))[0]
        order = np.argsort(codes, kind="stable")
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        self.rows = np.split(order, bounds)
        self.labels = np.asarray(labels, dtype=bool)
        self.seed = seed

    def interval(self, statistic) -> list[float] | None:
        """``statistic(rows) -> float`` on resampled row indices; None when it cannot be computed."""
        def on_accounts(idx):
            rows = np.concatenate([self.rows[i] for i in idx.astype(int)])
            if self.labels[rows].all() or not self.labels[rows].any():
                return np.nan
            return statistic(rows)
        try:
            res = bootstrap((np.arange(len(self.rows)),), on_accounts, vectorized=False, n_resamples=RESAMPLES,
                            method="percentile", random_state=np.random.default_rng(self.seed))
        except ValueError:
            return None
        low, high = res.confidence_interval
        if not (np.isfinite(low) and np.isfinite(high)):
            return None
        return [round(float(low), 4), round(float(high), 4)]

    def auc(self, risk: np.ndarray) -> list[float] | None:
        """Interval of ROC-AUC(``risk``) (higher risk = more likely to churn; NaN rows, unscored, are
        left out as the backtest leaves them out)."""
        def statistic(rows):
            rows = rows[~np.isnan(risk[rows])]
            return roc_auc_score(self.labels[rows], risk[rows])
        return self.interval(statistic)


def auc_of(labels: np.ndarray, risk: np.ndarray) -> float:
    """ROC-AUC of ``risk`` over its non-NaN rows (unscored rows are left out, as in the backtest)."""
    ok = ~np.isnan(risk)
    return round(float(roc_auc_score(labels[ok], risk[ok])), 4)


def weekly_rows(history: pd.DataFrame, last, horizon: int) -> pd.DataFrame:
    """Rows of as-of days every 7 days counted back from ``last - horizon`` (so every label's horizon is
    observed), without cancelled accounts."""
    last_as_of = last - timedelta(days=horizon)
    days = pd.to_datetime(history["as_of_date"])
    weekly = history.loc[(days.dt.date <= last_as_of) & (((days - pd.Timestamp(last_as_of)).dt.days % 7) == 0)]
    if "status" in weekly:
        weekly = weekly.loc[weekly["status"].ne("cancelled")]
    return weekly.reset_index(drop=True)


def evaluate_label(history, last, churn: Churn, cards: dict[str, Scorecard], shipped: set[str], churn_dates,
                   activity) -> dict:
    """Every scorecard in ``cards`` (as given and refitted; and refitted with a tenure component), the
    best fit of the ``shipped`` ones, recency and tenure alone on one label, on the same as-of days."""
    weekly = weekly_rows(history, last, churn.horizon_days)
    labels = label_churn(weekly, churn, churn_dates, activity)
    days = pd.to_datetime(weekly["as_of_date"]).dt.date.to_numpy()
    distinct = np.unique(days)
    cut = distinct[max(1, round(len(distinct) * (2 / 3)))] if len(distinct) > 2 else distinct[-1]
    if int(labels[days >= cut].sum()) < MIN_HELD_OUT_CHURNERS:
        return {"unsupported": f"{int(labels[days >= cut].sum())} churner(s) on the held-out days from {cut} "
                               f"(fewer than {MIN_HELD_OUT_CHURNERS}): the dataset does not support this label",
                "observations": len(weekly), "churners": int(labels.sum())}
    test_days, auc, fits = None, {}, {}
    risks = {}  # risk (higher = more likely to churn) per row of weekly, per figure
    for name, card in cards.items():
        card = card.model_copy(update={"churn": churn})
        metrics = card.seasonal_metrics
        seasonal = seasonal_index(history, metrics, card.seasonality) if metrics else None
        for variant, c in ((name, card), (f"{name}+tenure", with_tenure(card))):
            if variant.endswith("+tenure") and any(x.metric == "tenure_days" for x in card.components):
                continue
            try:
                result = fit_scorecard(weekly, labels, c, f"{c.version}-fit", seasonal=seasonal)
            except BacktestError as exc:
                auc[variant] = {"error": str(exc)}
                continue
            test_days = result.test_days
            for label, scored_card in ((variant, c), (f"{variant}_fitted", result.scorecard)):
                if label == variant and variant.endswith("+tenure"):
                    continue  # the added weight is arbitrary: only its fit means something
                health = score_suppliers(weekly, scored_card, seasonal=seasonal)["health_score"].to_numpy(dtype=float)
                risks[label] = -health
                held = days >= result.test_days[0]
                auc[label] = {"held_out": auc_of(labels[held], risks[label][held]),
                              "all_weeks": auc_of(labels, risks[label])}
                # The same figure as fit_scorecard's (both leave unscored rows out).
                assert abs(auc[label]["held_out"] - (result.new_auc if label.endswith("_fitted") else result.old_auc)) < 1e-3
            fits[variant] = result
    if test_days is None:
        return {"error": "no scorecard could be fitted on this label", "observations": len(weekly),
                "churners": int(labels.sum())}
    held = days >= test_days[0]
    risks["recency"] = weekly["days_since_last_activity"].astype(float).fillna(1e6).to_numpy()
    risks["tenure_only"] = -weekly["tenure_days"].astype(float).fillna(0.0).to_numpy()
    for name in ("recency", "tenure_only"):
        auc[name] = {"held_out": auc_of(labels[held], risks[name][held]), "all_weeks": auc_of(labels, risks[name])}
    candidates = {k: v for k, v in fits.items() if k in shipped and v.fit_auc is not None}
    best = max(candidates, key=lambda k: candidates[k].fit_auc) if candidates else None
    if best is not None:
        auc["fitted"] = dict(auc[f"{best}_fitted"], fitted_from=best)
        risks["fitted"] = risks[f"{best}_fitted"]
    sampler = AccountBootstrap(weekly.loc[held, "supplier_id"].to_numpy(), labels[held])
    for name, entry in auc.items():
        if name in risks:
            entry["ci95"] = sampler.auc(risks[name][held])
    out = {"observations": len(weekly), "churners": int(labels.sum()),
           "held_out_days": f"{test_days[0]}..{test_days[1]}", "held_out_observations": int(held.sum()),
           "held_out_churners": int(labels[held].sum()), "held_out_accounts": len(sampler.rows), "auc": auc}
    if best is not None:
        fitted, recency = np.nan_to_num(risks["fitted"][held], nan=-50.0), risks["recency"][held]
        lab = labels[held]
        out["fitted_minus_recency"] = {
            "held_out": round(auc["fitted"]["held_out"] - auc["recency"]["held_out"], 4),
            "ci95": sampler.interval(lambda r: roc_auc_score(lab[r], fitted[r]) - roc_auc_score(lab[r], recency[r]))}
        out["fitted_weights"] = {c.name: c.weight for c in fits[best].scorecard.components}
    return out


def bgnbd_risk(weekly: pd.DataFrame, horizon_days: int, days) -> np.ndarray:
    """BG/NBD (Fader, Hardie and Lee, "Counting Your Customers the Easy Way", Marketing Science 2005; the
    reference implementation ``lifetimes.BetaGeoFitter``) as a churn risk, point in time: for each as-of day
    in ``days`` it is fitted on every account's repeat active days ``x`` (active days - 1), ``t_x`` (last
    minus first active day) and age ``T`` (as-of day minus first active day), in weeks, from the rows of that
    day only (data up to it), and the risk is minus the expected active days in the next ``horizon_days``
    (``conditional_expected_number_of_purchases_up_to_time``). An account without an active day, or whose
    first one is the as-of day, gets the highest risk of its day (BG/NBD knows nothing of it; a purchase
    log has none, since a customer starts with a purchase). NaN on other days.

    Raises:
        RuntimeError: the fit fails on a day (the comparison would otherwise leave that day out silently).
    """
    from lifetimes import BetaGeoFitter

    out = np.full(len(weekly), np.nan)
    as_of = pd.to_datetime(weekly["as_of_date"])
    first, last_active = pd.to_datetime(weekly["first_active_date"]), pd.to_datetime(weekly["last_active_date"])
    x = weekly["active_days_lifetime"].fillna(0).astype(float).to_numpy() - 1
    t_x = ((last_active - first).dt.days / 7).to_numpy()
    age = ((as_of - first).dt.days / 7).to_numpy()
    wanted = set(pd.to_datetime(pd.Series(list(days))))
    for day, idx in pd.Series(np.arange(len(weekly))).groupby(as_of.to_numpy()).groups.items():
        if day not in wanted:
            continue
        idx = np.asarray(idx)
        ok = (x[idx] >= 0) & (age[idx] > 0)
        fitted = idx[ok]
        try:
            fit = BetaGeoFitter(penalizer_coef=0.001).fit(x[fitted], t_x[fitted], age[fitted])
        except Exception as exc:
            raise RuntimeError(f"BG/NBD did not fit on {day.date()}: {exc}") from exc
        risk = -fit.conditional_expected_number_of_purchases_up_to_time(horizon_days / 7, x[fitted], t_x[fitted],
                                                                        age[fitted])
        out[fitted] = risk
        out[idx[~ok]] = np.max(risk) + 1 if len(risk) else 0.0
    return out


def evaluate_model(conn, history, last, churn: Churn, churn_dates, activity, bgnbd: bool = False) -> dict:
    """The churn model on one label (see the module docstring), or why it was refused; ``bgnbd``: BG/NBD
    (``bgnbd_risk``) beside it, for a purchase log."""
    from cs_pipeline.health.churn_features import engagement_columns
    from cs_pipeline.health.churn_model import ChurnModelError
    from cs_pipeline.health.churn_service import catalogue_features, features_for
    from cs_pipeline.health.churn_train import train

    weekly = weekly_rows(history, last, churn.horizon_days)
    labels = label_churn(weekly, churn, churn_dates, activity)
    catalogue = catalogue_features(conn)
    columns = engagement_columns(weekly)
    features = features_for(conn, weekly, columns, catalogue)
    risks = {}
    for name, card in shipped_scorecards().items():
        metrics = card.seasonal_metrics
        seasonal = seasonal_index(history, metrics, card.seasonality) if metrics else None
        risks[name] = -score_suppliers(weekly, card, seasonal=seasonal)["health_score"].to_numpy(dtype=float)
    risks["recency"] = weekly["days_since_last_activity"].astype(float).fillna(1e6).to_numpy()
    risks["tenure_only"] = -weekly["tenure_days"].astype(float).fillna(0.0).to_numpy()
    try:
        result = train(features, labels, horizon_days=churn.horizon_days, churn_kind=churn.kind,
                       training_as_of=last, columns=columns, catalogue=catalogue)
    except ChurnModelError as exc:
        return {"refused": str(exc)}
    v = result.validation
    rows, lab, model = v["row"].to_numpy(), v["label"].to_numpy(), v["probability"].to_numpy()
    if bgnbd:
        risks["bgnbd"] = bgnbd_risk(weekly, churn.horizon_days, set(v["as_of_date"]))
    sampler = AccountBootstrap(v["supplier_id"].to_numpy(), lab)
    auc = {"model": {"held_out": auc_of(lab, model), "ci95": sampler.auc(model)}}
    for name, risk in risks.items():
        auc[name] = {"held_out": auc_of(lab, risk[rows]), "ci95": sampler.auc(risk[rows])}
    best = max(shipped_scorecards(), key=lambda n: auc[n]["held_out"])

    def minus(other):
        r = np.nan_to_num(risks[other][rows], nan=-50.0)
        return {"held_out": round(auc["model"]["held_out"] - auc[other]["held_out"], 4),
                "ci95": sampler.interval(lambda i: roc_auc_score(lab[i], model[i]) - roc_auc_score(lab[i], r[i]))}

    m = result.metrics
    return {"label": label_name(churn), "algorithm": m["algorithm"], "candidates": m["candidates"],
            "validation_days": m["validation_days"], "validation_rows": m["validation_rows"],
            "validation_churners": m["validation_churners"], "validation_accounts": len(sampler.rows),
            "training_rows": m["training_rows"], "training_churners": m["churners"], "weeks": m["weeks"],
            "brier": m["brier"], "top_decile_lift": m["top_decile_lift"], "warnings": result.warnings,
            "auc": auc, "best_scorecard": best, "model_minus_best_scorecard": minus(best),
            "model_minus_recency": minus("recency"), "model_minus_tenure": minus("tenure_only")} \
        | ({"model_minus_bgnbd": minus("bgnbd")} if bgnbd else {})


def evaluate(conn, natural: Churn, extra: dict[str, Scorecard] | None = None, model: bool = True) -> dict:
    """All figures on one warehouse: every label (the natural one and each scorecard's own), and the
    ``scorecards_rank_churners`` check of each scorecard on its own label (all weekly as-of days).

    Raises:
        RuntimeError: the mart has no lifetime metrics (a warehouse built before issue 15).
    """
    first, last = conn.execute("SELECT min(as_of_date), max(as_of_date) FROM marts.supplier_engagement_daily").fetchone()
    history = read_engagement(conn, first, last)
    absent = sorted(set(LIFETIME) - set(history.columns))
    if absent:
        raise RuntimeError(f"marts.supplier_engagement_daily has no {absent}: rebuild the warehouse on today's code")
    churn = read_frame(conn, "SELECT supplier_id, cancelled_date FROM marts.dim_suppliers")
    churn_dates = pd.Series(pd.to_datetime(churn["cancelled_date"]).to_numpy(), index=churn["supplier_id"].to_numpy())
    activity = read_activity_days(conn, first, last)
    shipped = shipped_scorecards()
    cards = {**shipped, **(extra or {})}
    own = {name: card.churn for name, card in cards.items()}
    labels = {label_name(natural): natural} | {label_name(c): c for c in own.values()}
    out = {"natural_label": label_name(natural), "history": f"{first}..{last}",
           "own_label": {name: label_name(c) for name, c in own.items()}, "labels": {}, "check": {}}
    if model:
        out["model"] = evaluate_model(conn, history, last, natural, churn_dates, activity)
    for key, churn_def in labels.items():
        # The natural label: every scorecard; another label: only the scorecards whose own label it is.
        on = cards if key == label_name(natural) else {n: c for n, c in cards.items() if label_name(own[n]) == key}
        try:
            out["labels"][key] = evaluate_label(history, last, churn_def, on, set(shipped), churn_dates, activity)
        except BacktestError as exc:
            out["labels"][key] = {"error": str(exc)}
    for name, card in cards.items():
        weekly = weekly_rows(history, last, card.churn.horizon_days)
        labels_own = label_churn(weekly, card.churn, churn_dates, activity)
        metrics = card.seasonal_metrics
        seasonal = seasonal_index(history, metrics, card.seasonality) if metrics else None

        def score(e, c, s=seasonal):
            return score_suppliers(e, c, seasonal=s)["health_score"]

        try:
            full = backtest(score_suppliers(weekly, card, seasonal=seasonal), labels=labels_own,
                            churn_kind=card.churn.kind, horizon_days=card.churn.horizon_days)
        except BacktestError as exc:
            out["check"][name] = {"label": label_name(card.churn), "error": str(exc)}
            continue
        out["check"][name] = {"label": label_name(card.churn), "auc_all_weeks": round(full.auc, 4),
                              "churn_rate_by_level": {k: None if v is None else round(v, 4)
                                                      for k, v in full.churn_rate_by_level.items()},
                              "scorecards_rank_churners": misleading_warning(full, weekly, card, labels_own, score)
                              or "passed"}
    return out


def evaluate_only_model(conn, natural: Churn, bgnbd: bool = False) -> dict:
    """``evaluate_model`` alone on one warehouse."""
    first, last = conn.execute("SELECT min(as_of_date), max(as_of_date) FROM marts.supplier_engagement_daily").fetchone()
    history = read_engagement(conn, first, last)
    churn = read_frame(conn, "SELECT supplier_id, cancelled_date FROM marts.dim_suppliers")
    churn_dates = pd.Series(pd.to_datetime(churn["cancelled_date"]).to_numpy(), index=churn["supplier_id"].to_numpy())
    activity = read_activity_days(conn, first, last)
    return evaluate_model(conn, history, last, natural, churn_dates, activity, bgnbd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", required=True, metavar="NAME=HOME",
                        help="a dataset name and the CS_PIPELINE_HOME of its warehouse (repeatable)")
    parser.add_argument("--label", choices=["cancellation", "inactivity"], default="cancellation",
                        help="the datasets' natural churn label (default: cancellation)")
    parser.add_argument("--horizon", type=int, default=30, help="its horizon in days (default 30)")
    parser.add_argument("--scorecard", action="append", default=[], metavar="NAME=PATH",
                        help="also evaluate a scorecard of one's own (YAML path), e.g. an older version")
    parser.add_argument("--no-model", action="store_true", help="leave the churn model (issue 26) out")
    parser.add_argument("--only-model", action="store_true", help="only the churn model's figures (faster)")
    parser.add_argument("--bgnbd", action="store_true",
                        help="with --only-model: BG/NBD (lifetimes, pip extra 'bench') beside the model, for a purchase log")
    parser.add_argument("--note", action="append", default=[], metavar="NAME=TEXT",
                        help="how a dataset was loaded (e.g. what was sampled), copied into its output")
    args = parser.parse_args()
    if args.bgnbd and not args.only_model:
        parser.error("--bgnbd goes with --only-model (BG/NBD is compared with the churn model)")
    notes = dict(n.split("=", 1) for n in args.note)
    extra = {k: load_scorecard(v) for k, v in (s.split("=", 1) for s in args.scorecard)}
    out = {}
    for item in args.dataset:
        name, home = item.split("=", 1)
        settings = Settings.from_env({**os.environ, "CS_PIPELINE_HOME": home})
        with psycopg.connect(resolve_endpoints(settings).warehouse) as conn:
            natural = Churn(kind=args.label, horizon_days=args.horizon)
            if args.only_model:
                out[name] = {"model": evaluate_only_model(conn, natural, args.bgnbd)}
            else:
                out[name] = evaluate(conn, natural, extra, model=not args.no_model)
        if name in notes:
            out[name]["loaded"] = notes[name]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
