"""The ``model`` sub-commands (issue 26): ``train`` trains, validates and calibrates a churn model on the
team's own history (the same function as the ``models/churn_model`` asset:
``health.churn_service.train_churn_model``) and prints how it compares with the scorecard, recency and
tenure; ``list`` shows the trained models."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cs_pipeline.cli.common import app, console, fail, load_settings, parse_day

model_app = typer.Typer(help="The churn model: train it on your own history, list the trained ones.",
                        no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("train")
def model_train(
    as_of: Annotated[str | None, typer.Option("--as-of", help="Use only history up to this day, YYYY-MM-DD "
                                                               "(default: the last engagement day).")] = None,
    churn: Annotated[str | None, typer.Option(help="The label, KIND:DAYS (cancellation:30, inactivity:90); "
                                                   "default: the scorecard's churn block.")] = None,
    algorithm: Annotated[str, typer.Option(help="auto (logistic; gbm only when its validation ROC-AUC is higher by "
                                                 "more than one standard error), logistic or gbm.")] = "auto",
) -> None:
    """Train, validate (rolling origin) and calibrate a churn model; store it and print how it compares with the
    scorecard, recency and tenure on the same validation rows."""
    from cs_pipeline.health.churn_model import ChurnModelError
    from cs_pipeline.health.churn_service import (
        comparison_rows,
        parse_churn,
        train_churn_model,
    )
    from cs_pipeline.runtime.warehouse import connect

    settings = load_settings()
    day = parse_day(as_of) if as_of else None
    if algorithm not in ("auto", "logistic", "gbm"):
        raise fail(f"--algorithm {algorithm!r}: use auto, logistic or gbm", 2)
    try:
        label = parse_churn(churn) if churn else None
    except ValueError as exc:
        raise fail(str(exc), 2) from exc
    with connect(settings) as conn:
        try:
            trained = train_churn_model(conn, settings, as_of=day, churn=label, algorithm=algorithm)
        except ChurnModelError as exc:
            raise fail(str(exc), 1, soft_wrap=True) from exc
    model, m = trained.result.model, trained.result.metrics
    for text in trained.result.warnings:
        console.print(f"[yellow]warning:[/yellow] {text}", soft_wrap=True)
    table = Table(title=f"{model.version}: {model.churn_kind} within {model.horizon_days} days; "
                        f"validation {m['validation_days']} ({m['validation_rows']} rows, {m['validation_churners']} "
                        f"churners); trained on {m['training_rows']} rows, {m['churners']} churners, {m['weeks']} weeks")
    for col in ("", "ROC-AUC", "95 % (accounts)", "top-decile lift", "Brier"):
        table.add_column(col)
    for row in comparison_rows(m, model.algorithm):
        table.add_row(row["name"], f"{row['auc']:.3f}", row["auc_95"],
                      "" if row["top_decile_lift"] is None else f"{row['top_decile_lift']:.2f}",
                      "" if row["brier"] is None else f"{row['brier']:.4f}")
    console.print(table)
    console.print(f"wrote {trained.path}")


@model_app.command("list")
def model_list() -> None:
    """The trained churn models, newest first (the newest scores unless CS_PIPELINE_CHURN_MODEL names one)."""
    import pandas as pd

    from cs_pipeline.health.churn_service import list_models
    from cs_pipeline.runtime.warehouse import connect

    with connect(load_settings()) as conn:
        frame = list_models(conn)
    if frame.empty:
        console.print("no churn model yet: cs-pipeline model train")
        return
    # One block per model (a table of twelve columns is unreadable in 80 columns; the version, which
    # CS_PIPELINE_CHURN_MODEL takes, is never cut).
    for i, r in enumerate(frame.itertuples()):
        ci = f" (95 % {r.val_auc_ci_low:.3f}-{r.val_auc_ci_high:.3f})" if pd.notna(r.val_auc_ci_low) else ""
        card = "" if pd.isna(r.scorecard_auc) else f"; scorecard {r.scorecard_version} {r.scorecard_auc:.3f}"
        recency = "" if pd.isna(r.recency_auc) else f"; recency {r.recency_auc:.3f}"
        console.print(f"[bold]{r.version}[/bold]" + (" (newest)" if i == 0 else ""), soft_wrap=True)
        console.print(f"  trained {r.trained_at:%Y-%m-%d %H:%M} on history to {r.training_as_of}: {r.churn_kind} within "
                      f"{r.horizon_days} days, {r.algorithm}{'' if pd.isna(r.settings) else f' ({r.settings})'}, "
                      f"{r.training_rows} rows, {r.churners} churners", soft_wrap=True)
        console.print(f"  validation ROC-AUC {r.val_auc:.3f}{ci}{card}{recency}; Brier {r.brier:.4f}; "
                      f"top-decile lift {r.top_decile_lift:.2f}", soft_wrap=True)
