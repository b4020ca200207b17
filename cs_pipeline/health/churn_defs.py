"""Dagster definition of the churn model (issue 26): asset ``models/churn_model`` (group ``health``), trained
every Monday by its own automation condition and on demand (``churn_model_job``). Thin: the work is
``churn_service.train_churn_model``, which ``cs-pipeline model train`` calls too.

(No ``from __future__ import annotations`` here: Dagster inspects the context annotation.)
"""

from datetime import date

import dagster as dg

from cs_pipeline.core.metadata import markdown_table
from cs_pipeline.core.resources import WarehouseResource
from cs_pipeline.health.churn_model import ChurnModelError
from cs_pipeline.health.churn_service import (
    comparison_rows,
    parse_churn,
    train_churn_model,
)
from cs_pipeline.health.scorecard import load_scorecard

WEEKLY = "0 5 * * 1"
"""Mondays 05:00 UTC, after the night's daily run."""


class ChurnModelConfig(dg.Config):
    """What ``models/churn_model`` trains: the same inputs as ``cs-pipeline model train``."""

    as_of: str = ""
    """Use only history up to this day (YYYY-MM-DD); empty: the warehouse's last engagement day."""
    churn: str = ""
    """``KIND:DAYS`` (e.g. ``inactivity:90``); empty: the configured scorecard's churn block."""
    algorithm: str = "auto"
    """``auto`` (logistic; gbm only when its validation ROC-AUC is higher by more than one standard error),
    ``logistic`` or ``gbm``."""


def churn_model_assets() -> tuple:
    """The ``models/churn_model`` asset and its on-demand job ``churn_model_job``."""

    @dg.asset(
        key=["models", "churn_model"],
        group_name="health",
        deps=[dg.AssetKey(["marts", "supplier_engagement_daily"]), dg.AssetKey(["marts", "dim_suppliers"])],
        kinds={"python", "scikit-learn", "postgres"},
        automation_condition=dg.AutomationCondition.cron_tick_passed(WEEKLY) & ~dg.AutomationCondition.in_progress(),
        description="A trained, calibrated churn model (logistic regression or gradient boosting, chosen by "
                    "rolling-origin validation ROC-AUC) in $CS_PIPELINE_HOME/models/<version>, a row in "
                    "ops.churn_models, and its comparison with the active scorecard and plain recency on the same "
                    "validation rows. customer_health scores with the newest one (or CS_PIPELINE_CHURN_MODEL).",
    )
    def churn_model(context: dg.AssetExecutionContext, config: ChurnModelConfig,
                    warehouse: WarehouseResource, scoring: dg.ConfigurableResource) -> dg.MaterializeResult:
        """Train and store; report the comparison as metadata.

        Raises:
            dg.Failure: a refusal (too few churners or weeks, no time split), in one line.
        """
        settings = warehouse.settings()
        try:
            churn = parse_churn(config.churn) if config.churn else None
            with warehouse.connect() as conn:
                trained = train_churn_model(conn, settings, as_of=date.fromisoformat(config.as_of) if config.as_of else None,
                                            churn=churn, algorithm=config.algorithm,
                                            scorecard=load_scorecard(scoring.scorecard))
        except (ChurnModelError, ValueError) as exc:
            raise dg.Failure(str(exc)) from exc
        model, m = trained.result.model, trained.result.metrics
        for text in trained.result.warnings:
            context.log.warning(text)
        rows = comparison_rows(m, model.algorithm)
        context.log.info(f"{model.version}: validation ROC-AUC {m['auc']} {m['auc_ci']}; " + ", ".join(
            f"{r['name']} {r['auc']}" for r in rows[1:]))
        card = m["baselines"].get(f"scorecard {trained.scorecard}", {})
        return dg.MaterializeResult(metadata={
            "version": dg.MetadataValue.text(model.version),
            "algorithm": dg.MetadataValue.text(model.algorithm),
            "settings": dg.MetadataValue.text(m["settings"]),
            "churn_label": dg.MetadataValue.text(f"{model.churn_kind} within {model.horizon_days} days"),
            "training_as_of": dg.MetadataValue.text(str(model.training_as_of)),
            "training_rows": dg.MetadataValue.int(m["training_rows"]),
            "churners": dg.MetadataValue.int(m["churners"]),
            "weeks": dg.MetadataValue.int(m["weeks"]),
            "validation_days": dg.MetadataValue.text(m["validation_days"]),
            "val_auc": dg.MetadataValue.float(float(m["auc"])),
            "val_auc_ci95": dg.MetadataValue.json(m["auc_ci"]),
            "scorecard_auc": dg.MetadataValue.float(float(card["auc"])) if card else dg.MetadataValue.text("n/a"),
            "recency_auc": dg.MetadataValue.float(float(m["baselines"]["recency"]["auc"])),
            "brier": dg.MetadataValue.float(float(m["brier"])),
            "top_decile_lift": dg.MetadataValue.float(float(m["top_decile_lift"])),
            "comparison": dg.MetadataValue.md(markdown_table(rows, max_cell=None)),
            "calibration": dg.MetadataValue.md(markdown_table(m["calibration"], max_cell=None)),
            "warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in trained.result.warnings) or "(none)"),
            "path": dg.MetadataValue.path(str(trained.path)),
        })

    job = dg.define_asset_job("churn_model_job", selection=dg.AssetSelection.assets(["models", "churn_model"]),
                              description="Train the churn model now (run config: ops.models__churn_model.config "
                                          "as_of, churn, algorithm), as `cs-pipeline model train` does.")
    return churn_model, job
