"""The ``intervene`` command: one intervention by hand, through the manual_intervention job."""

from __future__ import annotations

from typing import Annotated

import typer

from cs_pipeline.cli.common import app, console, fail, load_settings, quiet


@app.command()
def intervene(
    supplier: Annotated[str, typer.Argument(help="Supplier id, e.g. sup_000123.")],
    channel: Annotated[str, typer.Option(help="email, in_app or call.")],
    template: Annotated[str | None, typer.Option(help="Template name (default: manual_message; calls: "
                                                      "check_in_call).")] = None,
    message: Annotated[str | None, typer.Option(help="Free text shown in the message or call task.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Override the cooldown only (recorded); caps, "
                                                        "opt-outs and cancellations always hold.")] = False,
) -> None:
    """Send one intervention by hand through the manual_intervention job (same opt-out, cooldown,
    exactly-once and audit path as the playbook; recorded in ops.interventions with rule manual)."""
    from cs_pipeline.interventions.playbook import CHANNELS
    from cs_pipeline.interventions.service import FORCEABLE
    from cs_pipeline.runtime.manual import launch_manual

    if channel not in CHANNELS:
        raise fail(f"--channel must be one of {', '.join(CHANNELS)}", 2)
    settings = load_settings()
    user = settings.operator
    with quiet(settings.home / "logs" / "intervene.log"):  # Dagster's run log: the file and the UI, not here
        outcome = launch_manual(settings, supplier, channel, template or "", message or "", force,
                                requested_by=f"cli:{user}")
    if outcome.intervention_id is None:
        raise fail(f"{outcome.failure or 'see the Dagster run log'} (run {outcome.run_id})", 1, soft_wrap=True)
    if outcome.delivery in ("already_sent", "reconciled"):  # sent by an earlier launch: this one sent nothing
        console.print(f"intervention {outcome.intervention_id}: {outcome.note} (run {outcome.run_id})", soft_wrap=True)
        return
    status, reason, error = outcome.status, outcome.reason, outcome.error
    console.print(f"intervention {outcome.intervention_id}: {status}{f' ({reason})' if reason else ''}"
                  f"{' [forced]' if outcome.forced else ''}{f' - {error}' if error and status != 'sent' else ''} "
                  f"(run {outcome.run_id})", soft_wrap=True)
    if status != "sent":
        if reason in FORCEABLE and not force:
            console.print("use --force to override the cooldown (it is recorded)")
        raise typer.Exit(1)
