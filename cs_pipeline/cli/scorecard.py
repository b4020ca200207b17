"""The ``scorecard`` sub-commands: ``fit`` refits a scorecard's weights to the team's own history (the
same fit as the ``scorecards/fitted`` asset: ``health.fit_run.fit_from_warehouse``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from cs_pipeline.cli.common import app, console, fail, load_settings, parse_day

scorecard_app = typer.Typer(help="Scorecards: fit weights to your own history.", no_args_is_help=True)
app.add_typer(scorecard_app, name="scorecard")


@scorecard_app.command("fit")
def scorecard_fit(
    from_: Annotated[str, typer.Option("--from", help="Scorecard to refit: a YAML path or a shipped name (ws168).")],
    as_of: Annotated[str, typer.Option("--as-of", help="Use only history up to this day, YYYY-MM-DD.")],
    out: Annotated[Path, typer.Option(help="YAML file to write the fitted scorecard to.")],
) -> None:
    """Fit the component weights to the scorecard's churn label (logistic regression on the component
    points, fit on earlier as-of days, tested on later ones) and print old vs new held-out ROC-AUC."""
    from cs_pipeline.health.fit_run import FitRunError, fit_from_warehouse
    from cs_pipeline.health.scorecard import ScorecardError, load_scorecard
    from cs_pipeline.runtime.warehouse import connect

    day = parse_day(as_of)
    try:
        card = load_scorecard(from_)
    except ScorecardError as exc:
        raise fail(str(exc), 2) from exc
    try:
        with connect(load_settings()) as conn:
            fitted = fit_from_warehouse(conn, card, day)
    except FitRunError as exc:
        raise fail(str(exc), 1) from exc
    fitted.write(out)
    result = fitted.result
    table = Table(title=f"held-out ROC-AUC ({card.churn.kind} within {card.churn.horizon_days} days), "
                        f"fit {result.fit_days[0]}..{result.fit_days[1]}, test {result.test_days[0]}..{result.test_days[1]}")
    for col in ("scorecard", "ROC-AUC", "weights"):
        table.add_column(col)
    for version, auc, sc in ((card.version, result.old_auc, card), (result.scorecard.version, result.new_auc, result.scorecard)):
        table.add_row(version, f"{auc:.4f}", ", ".join(f"{c.name} {c.weight:g}" for c in sc.components))
    console.print(table)
    if fitted.warning:  # issue 29: a short history (fewer than 8 weekly as-of days) is said, not hidden
        console.print(f"[yellow]warning:[/yellow] {fitted.warning}", soft_wrap=True)
    console.print(f"wrote {out}")
