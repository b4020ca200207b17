"""Dagster definitions of the health stage (group ``health``): customer_health, success_milestones and
health_score_backtest, the scorecard fit (``scorecards/fitted``, group ``scorecard_fit``, issue 13) and the
``scoring`` resource. Thin: read from the marts, call the pure functions,
write, report.

(No ``from __future__ import annotations`` here: Dagster inspects the context annotation.)
"""

import json
from datetime import date

import dagster as dg
import numpy as np
import pandas as pd

from cs_pipeline.core.db import now_utc, read_frame
from cs_pipeline.core.metadata import markdown_table
from cs_pipeline.core.partitions import DAILY_FRESHNESS, partition_days
from cs_pipeline.core.reruns import rebuilt_days, report_rebuilt_partitions
from cs_pipeline.core.resources import WarehouseResource
from cs_pipeline.core.settings import Settings
from cs_pipeline.health.backtest_run import backtest_scorecards
from cs_pipeline.health.churn_defs import churn_model_assets
from cs_pipeline.health.churn_scoring import forget_scores
from cs_pipeline.health.fit_run import FitRunError, fit_from_warehouse
from cs_pipeline.health.gates import health_gate
from cs_pipeline.health.milestone_store import (
    read_milestone_inputs,
    write_milestone_changes,
)
from cs_pipeline.health.milestones import load_milestones, reconcile_milestones
from cs_pipeline.health.scorecard import load_scorecard, shipped_scorecards
from cs_pipeline.health.store import (
    components_json,
    ensure_health_tables,
    read_activity_days,
    read_engagement,
    write_health,
)
from cs_pipeline.health.window import score_window
from cs_pipeline.quality.checks import check_result
from cs_pipeline.quality.gx import GateRunner

ENGAGEMENT = dg.AssetKey(["marts", "supplier_engagement_daily"])
MILESTONE_FACTS = dg.AssetKey(["marts", "fct_supplier_milestone_facts"])
ACTIVITY = dg.AssetKey(["marts", "fct_supplier_activity_daily"])
DIM_SUPPLIERS = dg.AssetKey(["marts", "dim_suppliers"])
FEATURE_ADOPTION = dg.AssetKey(["marts", "fct_feature_adoption"])


class ScoringResource(dg.ConfigurableResource):
    """Which scorecard scores (``CS_PIPELINE_SCORECARD``: a shipped name such as ws168 / ws133, or a
    path to a YAML file)."""

    scorecard: str = "ws168"
    churn_model: str | None = None  # CS_PIPELINE_CHURN_MODEL (None: each day the newest model trained before it, issue 28)


BACKTEST_CHECKS = [
    dg.AssetCheckSpec("backtest_has_churners", asset=["marts", "health_score_backtest"],
                      description="every scorecard's churn label has churners and non-churners on the warehouse's "
                                  "history (otherwise the backtest means nothing)"),
    dg.AssetCheckSpec("scorecards_rank_churners", asset=["marts", "health_score_backtest"], blocking=True,
                      description="WARN when a scorecard ranks churners below chance (ROC-AUC < 0.5), its healthy "
                                  "level churns more than its at_risk level, or an override scores its accounts "
                                  "higher yet they churn significantly more, naming the component or override "
                                  "(e.g. an onboarding profile) that drives it"),
]


@dg.asset(
    key=["marts", "health_score_backtest"],
    group_name="health",
    deps=[ENGAGEMENT, DIM_SUPPLIERS, ACTIVITY],
    kinds={"python", "pandas", "postgres"},
    check_specs=BACKTEST_CHECKS,
    description="marts.health_score_backtest: for every shipped scorecard, how well the health score ranks "
                "suppliers that churn by the scorecard's churn label (cancellation or inactivity within N days): "
                "ROC-AUC, PR-AUC, top-decile lift, churn rate per risk level, critical-band lift, calibration and "
                "its Brier score, recomputed on the warehouse's own history.",
)
def health_score_backtest(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                          scoring: ScoringResource) -> dg.MaterializeResult:
    """Backtest every shipped scorecard (and the configured one) on weekly as-of days whose churn
    horizon is fully observed; check that each has churners and ranks them better than chance."""
    cards = shipped_scorecards()
    configured = load_scorecard(scoring.scorecard)
    cards[configured.version] = configured
    with warehouse.connect() as conn:
        ensure_health_tables(conn)
        bounds = conn.execute("SELECT min(as_of_date), max(as_of_date) FROM marts.supplier_engagement_daily").fetchone()
        if bounds[0] is None:
            return dg.MaterializeResult(
                metadata={"status": dg.MetadataValue.text("no engagement history yet")},
                check_results=[dg.AssetCheckResult(check_name="backtest_has_churners", passed=False,
                                                   metadata={"reason": "no engagement history yet"}),
                               dg.AssetCheckResult(check_name="scorecards_rank_churners", passed=True,
                                                   severity=dg.AssetCheckSeverity.WARN)])
        history = read_engagement(conn, bounds[0], bounds[1])
        churn = read_frame(conn, "SELECT supplier_id, cancelled_date FROM marts.dim_suppliers")
        churn_dates = pd.Series(pd.to_datetime(churn["cancelled_date"]).to_numpy(), index=churn["supplier_id"].to_numpy())
        found = backtest_scorecards(history, list({c.version: c for c in cards.values()}.values()), churn_dates,
                                    lambda events: read_activity_days(conn, bounds[0], bounds[1], events), bounds[1])
        results, failures, warnings, skipped = found.results, found.failures, found.warnings, found.skipped
        for version, result in results.items():
            horizon = result.horizon_days
            conn.execute(
                """
                INSERT INTO marts.health_score_backtest (scorecard_version, evaluated_at, first_day, last_day,
                  horizon_days, observations, churners, auc, churn_rate, critical_lift, churn_rate_by_level, calibration,
                  churn_kind, pr_auc, top_decile_lift, brier)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                """,
                (version, now_utc(), result.first_day, result.last_day, horizon, result.observations,
                 result.churners, result.auc, result.churn_rate, result.critical_lift,
                 json.dumps(result.churn_rate_by_level), json.dumps(result.calibration), result.churn_kind,
                 result.pr_auc, result.top_decile_lift, result.brier),
            )
        conn.commit()
    for version, r in results.items():
        context.log.info(f"{version}: ROC-AUC {r.auc:.3f} over {r.observations} observations, {r.churners} churners "
                         f"({r.churn_kind}, {r.horizon_days} days)")
    for text in [*failures.values(), *warnings.values()]:
        context.log.warning(text)

    def rounded(attr, digits):
        return dg.MetadataValue.json({v: None if getattr(r, attr) is None else round(getattr(r, attr), digits)
                                      for v, r in results.items()})

    return dg.MaterializeResult(
        metadata={
            "auc": rounded("auc", 4),
            "pr_auc": rounded("pr_auc", 4),
            "top_decile_lift": rounded("top_decile_lift", 2),
            "brier": rounded("brier", 4),
            "critical_lift": rounded("critical_lift", 2),
            "churn_label": dg.MetadataValue.json({v: f"{r.churn_kind} within {r.horizon_days} days" for v, r in results.items()}),
            "churn_rate_by_level": dg.MetadataValue.json({v: r.churn_rate_by_level for v, r in results.items()}),
            "observations": dg.MetadataValue.json({v: r.observations for v, r in results.items()}),
            "calibrated": dg.MetadataValue.json({v: r.calibrated for v, r in results.items()}),
            "skipped": dg.MetadataValue.json(skipped),
        },
        check_results=[
            dg.AssetCheckResult(check_name="backtest_has_churners", passed=not failures,
                                metadata={"reason": dg.MetadataValue.md("\n".join(f"- {t}" for t in failures.values())
                                                                        or "every scorecard has churners")}),
            dg.AssetCheckResult(check_name="scorecards_rank_churners", passed=not warnings,
                                severity=dg.AssetCheckSeverity.WARN,
                                description="; ".join(warnings.values()) or None,
                                metadata={"warnings": dg.MetadataValue.md("\n".join(f"- {t}" for t in warnings.values())
                                                                          or "(none)")}),
        ],
    )


class ScorecardFitConfig(dg.Config):
    """What ``scorecard_fit`` fits: the same inputs as ``cs-pipeline scorecard fit``."""

    from_scorecard: str = ""
    """A shipped scorecard name or a YAML path; empty: the configured scorecard (CS_PIPELINE_SCORECARD)."""
    as_of: str = ""
    """Use only history up to this day (YYYY-MM-DD); empty: the warehouse's last engagement day."""


@dg.asset(
    key=["scorecards", "fitted"],
    group_name="scorecard_fit",
    deps=[ENGAGEMENT, DIM_SUPPLIERS],
    kinds={"python", "scikit-learn", "yaml"},
    description="A fitted version of a scorecard (the same fit as `cs-pipeline scorecard fit`: logistic "
                "regression on the component points to the scorecard's churn label, fit on earlier as-of "
                "days, ROC-AUC on later ones), written as YAML to $CS_PIPELINE_HOME/scorecards/fitted/.",
)
def scorecard_fit(context: dg.AssetExecutionContext, config: ScorecardFitConfig, warehouse: WarehouseResource,
                  scoring: ScoringResource) -> dg.MaterializeResult:
    """Fit, write the new scorecard version and report the held-out ROC-AUC of the old and the new one.

    Raises:
        dg.Failure: no history before the as-of day minus the horizon, or no churner in the fit or
            held-out days (BacktestError's reason).
    """
    card = load_scorecard(config.from_scorecard or scoring.scorecard)
    try:
        with warehouse.connect() as conn:
            fitted = fit_from_warehouse(conn, card, date.fromisoformat(config.as_of) if config.as_of else None)
    except FitRunError as exc:
        raise dg.Failure(str(exc)) from exc
    result = fitted.result
    out = fitted.write(warehouse.settings().home / "scorecards" / "fitted" / f"{result.scorecard.version}.yaml")
    if fitted.warning:
        context.log.warning(f"{card.version}: {fitted.warning}")
    context.log.info(f"{card.version}: held-out ROC-AUC {result.old_auc:.4f} -> {result.scorecard.version} "
                     f"{result.new_auc:.4f}; wrote {out}")
    return dg.MaterializeResult(metadata={
        "path": dg.MetadataValue.path(str(out)),
        "from_version": dg.MetadataValue.text(card.version),
        "version": dg.MetadataValue.text(result.scorecard.version),
        "held_out_auc": dg.MetadataValue.json({card.version: round(result.old_auc, 4),
                                               result.scorecard.version: round(result.new_auc, 4)}),
        "weights": dg.MetadataValue.json({c.name: c.weight for c in result.scorecard.components}),
        "fit_days": dg.MetadataValue.text(f"{result.fit_days[0]}..{result.fit_days[1]}"),
        "held_out_days": dg.MetadataValue.text(f"{result.test_days[0]}..{result.test_days[1]}"),
        "churn_label": dg.MetadataValue.text(f"{card.churn.kind} within {card.churn.horizon_days} days"),
        "as_of_days": dg.MetadataValue.int(result.as_of_days),
        **({"warning": dg.MetadataValue.text(fitted.warning)} if fitted.warning else {}),
    })


def build_health_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """customer_health and success_milestones on ``partitions_def``, and the unpartitioned backtest."""

    @dg.asset(
        key=["marts", "customer_health"],
        group_name="health",
        deps=[ENGAGEMENT, FEATURE_ADOPTION],  # the mart: the churn model's per-feature windows of its day
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        freshness_policy=DAILY_FRESHNESS,
        kinds={"python", "pandas", "postgres"},
        description="marts.customer_health: one row per active supplier per day: health score 0-100, risk "
                    "level, components, drivers, 7/30-day deltas and trend (scorecard from CS_PIPELINE_SCORECARD).",
        check_specs=[
            dg.AssetCheckSpec("scores_in_range", asset=["marts", "customer_health"], description="health_score within 0..100"),
            dg.AssetCheckSpec("every_active_supplier_scored", asset=["marts", "customer_health"],
                              description="one row per engagement row of the day; only rows with no data unscored"),
            dg.AssetCheckSpec("risk_level_matches_thresholds", asset=["marts", "customer_health"],
                              description="risk level consistent with score and the scorecard's thresholds"),
            dg.AssetCheckSpec("gx_customer_health", asset=["marts", "customer_health"], blocking=True,
                              description="Great Expectations suite expectations/customer_health.json; critical "
                                          "failures block milestones and interventions for the day"),
        ],
    )
    def customer_health(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                        scoring: ScoringResource) -> dg.MaterializeResult:
        """Score every supplier of the partition's days (a range scores in one vectorised pass), plus the
        days the same run's dbt build rebuilt beyond them (a re-run of an old day: issue 15)."""
        own_days = partition_days(context)
        rescored = [d for d in rebuilt_days(context, ENGAGEMENT) if d not in own_days]
        days = sorted({*own_days, *rescored})
        first, last = days[0], days[-1]
        scorecard = load_scorecard(scoring.scorecard)
        with warehouse.connect() as conn:
            ensure_health_tables(conn)
            forget_scores(conn, days)  # the days scored again: a probability stored from older data is not reused
            scores = score_window(conn, scorecard, first, last,
                                  warehouse.settings().model_copy(update={"churn_model": scoring.churn_model}))
            names = [c.name for c in scorecard.components]
            scores["components"] = components_json(scores, names)
            scores["calculated_at"] = now_utc()
            written = write_health(conn, scores, days)
            expected = conn.execute("SELECT count(*) FROM marts.supplier_engagement_daily WHERE as_of_date BETWEEN %s AND %s",
                                    (first, last)).fetchone()[0]
            runner = GateRunner(warehouse.settings().home / "gx_data_docs")
            gates = {last: health_gate(conn, runner, days, context.run.run_id)}
        scored = scores.loc[scores["scored"]]
        health = scored["health_score"].to_numpy(dtype=float)
        in_range = bool(((health >= 0) & (health <= 100)).all())
        rl = scorecard.risk_levels
        crit = scored["segment"].map({o.name: (o.risk_levels or rl).critical_below for o in scorecard.overrides}).fillna(rl.critical_below)
        atr = scored["segment"].map({o.name: (o.risk_levels or rl).at_risk_below for o in scorecard.overrides}).fillna(rl.at_risk_below)
        expected_level = np.where(health < crit, "critical", np.where(health < atr, "at_risk", "healthy"))
        inconsistent = int((expected_level != scored["risk_level"].to_numpy()).sum())
        latest = scores.loc[pd.to_datetime(scores["as_of_date"]).dt.date == last]
        counts = latest["risk_level"].fillna("unscored").value_counts().to_dict()
        movers = latest.dropna(subset=["score_delta_7d"]).nsmallest(5, "score_delta_7d")[
            ["supplier_id", "health_score", "score_delta_7d", "risk_level", "drivers"]]
        quantiles = latest["health_score"].quantile([0.1, 0.25, 0.5, 0.75, 0.9]).round(1).to_dict() if len(latest) else {}
        # Later days rescored after a re-run are reported before the run's own partitions, which stay the
        # newest events: the intervention sensor sees a past day and never contacts for it.
        if rescored:
            report_rebuilt_partitions(context, [context.asset_key], rescored[0], rescored[-1],
                                      context.assets_def.partitions_def)
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": dg.MetadataValue.int(written),
                "scorecard_version": dg.MetadataValue.text(scorecard.version),
                "days": dg.MetadataValue.text(f"{first}..{last}"),
                "risk_levels_latest_day": dg.MetadataValue.json({str(k): int(v) for k, v in counts.items()}),
                "score_quantiles_latest_day": dg.MetadataValue.json({f"p{int(q * 100)}": v for q, v in quantiles.items()}),
                "mean_score_latest_day": dg.MetadataValue.float(float(latest["health_score"].mean()) if len(latest) else 0.0),
                "biggest_declines_7d": dg.MetadataValue.md(markdown_table(movers, empty="(none)", max_cell=None)),
                "unscored": dg.MetadataValue.int(int((~scores["scored"]).sum())),
            },
            check_results=[
                dg.AssetCheckResult(check_name="scores_in_range", passed=in_range,
                                    metadata={"min": float(health.min()) if len(health) else 0.0,
                                              "max": float(health.max()) if len(health) else 0.0}),
                dg.AssetCheckResult(check_name="every_active_supplier_scored", passed=written == expected,
                                    metadata={"engagement_rows": int(expected), "health_rows": int(written),
                                              "unscored_no_data": int((~scores["scored"]).sum())}),
                dg.AssetCheckResult(check_name="risk_level_matches_thresholds", passed=inconsistent == 0,
                                    metadata={"inconsistent_rows": inconsistent}),
                check_result("gx_customer_health", gates),
            ],
        )


    @dg.asset(
        key=["marts", "success_milestones"],
        group_name="health",
        deps=[MILESTONE_FACTS],
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        kinds={"python", "pandas", "postgres"},
        description="marts.success_milestones: one row per supplier and milestone type (config/milestones.yaml) "
                    "with achieved_at (first day the criterion held), celebrated, and retracted_at (a celebrated "
                    "milestone the data no longer supports).",
    )
    def success_milestones(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        """Recompute every achievement from the partition's first day over every built day after it
        (a re-run or a late day changes later days' facts too: issue 28); equal to a full refresh."""
        days = partition_days(context)
        since = min([days[0], *rebuilt_days(context, MILESTONE_FACTS)])  # a late file rebuilds earlier days too
        milestones = load_milestones()
        with warehouse.connect() as conn:
            ensure_health_tables(conn)
            facts, stored = read_milestone_inputs(conn, since)
            changes = reconcile_milestones(facts, milestones, stored, since)
            totals = write_milestone_changes(conn, changes)
        new = changes.upserts
        return dg.MaterializeResult(metadata={
            "new_or_changed_achievements": dg.MetadataValue.int(len(new)),
            "new_by_type": dg.MetadataValue.json(new["milestone_type"].value_counts().to_dict() if len(new) else {}),
            "removed": dg.MetadataValue.int(len(changes.deletes)),
            "retracted": dg.MetadataValue.int(len(changes.retractions)),
            "totals": dg.MetadataValue.md(markdown_table(totals, empty="(none)", max_cell=None)),
            "days": dg.MetadataValue.text(f"{since}..{days[-1]}"),
        })


    return [customer_health, success_milestones, health_score_backtest]


def build_defs(settings: Settings, partitions_def: dg.PartitionsDefinition) -> dg.Definitions:
    """The health stage: customer_health and success_milestones on ``partitions_def``, the unpartitioned
    backtest, the scorecard fit (group ``scorecard_fit``, outside the daily job; ``scorecard_fit_job``)
    and the ``scoring`` resource (``CS_PIPELINE_SCORECARD``)."""
    fit_job = dg.define_asset_job(
        "scorecard_fit_job", selection=dg.AssetSelection.assets(["scorecards", "fitted"]),
        description="Fit a scorecard's weights to its churn label (run config: ops.scorecards__fitted.config "
                    "from_scorecard, as_of), as `cs-pipeline scorecard fit` does.")
    churn_model, churn_job = churn_model_assets()
    return dg.Definitions(assets=[*build_health_assets(partitions_def), scorecard_fit, churn_model],
                          jobs=[fit_job, churn_job],
                          resources={"scoring": ScoringResource(scorecard=settings.scorecard,
                                                                 churn_model=settings.churn_model)})
