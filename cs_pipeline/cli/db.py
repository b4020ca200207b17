"""The ``db`` sub-commands: the warehouse's connection string, starting, stopping and checking the
embedded PostgreSQL, and a psql shell."""

from __future__ import annotations

import subprocess
from typing import Annotated

import typer

from cs_pipeline.cli.common import app, console, fail, load_settings

db_app = typer.Typer(help="The warehouse database.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("url")
def db_url(
    bi: Annotated[bool, typer.Option("--bi", help="The read-only BI role's connection (for BI tools).")] = False,
    show_password: Annotated[bool, typer.Option("--show-password", help="Print the password in clear.")] = False,
) -> None:
    """Print the warehouse connection string (password masked unless ``--show-password``); with ``--bi``,
    the read-only BI role's (on the embedded server, its own generated secret). On stderr, whether the
    server stays up after this command."""
    from cs_pipeline.core.warehouse import describe, resolve_endpoints
    from cs_pipeline.runtime.dbserver import status

    settings = load_settings()
    conninfo = resolve_endpoints(settings).warehouse
    if bi:
        from cs_pipeline.app.dashboard.connection import (
            dashboard_conninfo,
            prepare_dashboard_access,
        )

        if settings.embedded:  # the role, its grants and its generated login; elsewhere `db grant-bi`
            prepare_dashboard_access(settings)
        conninfo = dashboard_conninfo(settings)
    typer.echo(conninfo if show_password else describe(conninfo))
    if settings.embedded:
        current = status(settings)
        if current.holder_pid or current.users:  # `db start`, or `dev`/`dashboard`/a run, keeps it up
            note = current.describe(settings)
        else:
            note = "note: the embedded server stops when this command exits; run `cs-pipeline db start` to keep it up"
        typer.echo(note, err=True)


@db_app.command("start")
def db_start() -> None:
    """Start the embedded PostgreSQL and keep it running in the background until `cs-pipeline db stop`."""
    from cs_pipeline.runtime import dbserver

    settings = load_settings()
    if not settings.embedded:
        console.print("CS_PIPELINE_DATABASE_URL is set: the server is external, nothing to start")
        return
    try:
        current = dbserver.start(settings)
    except RuntimeError as exc:
        raise fail(str(exc), 1) from exc
    console.print(current.describe(settings))


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostgreSQL started by `cs-pipeline db start`."""
    from cs_pipeline.runtime import dbserver

    settings = load_settings()
    if not dbserver.stop(settings):
        console.print("no `cs-pipeline db start` process is running")
        return
    console.print(dbserver.status(settings).describe(settings))


@db_app.command("status")
def db_status() -> None:
    """Say whether the embedded PostgreSQL is up (exit code 0 when up, 3 when down)."""
    from cs_pipeline.runtime import dbserver

    settings = load_settings()
    current = dbserver.status(settings)
    console.print(current.describe(settings))
    if settings.embedded and not current.running:
        raise typer.Exit(3)


@db_app.command("grant-bi")
def db_grant_bi(
    owner: Annotated[str | None, typer.Option(help="The pipeline's role, whose future marts tables the BI role "
                                                    "may read (default: the connection's user).")] = None,
    print_only: Annotated[bool, typer.Option("--print", help="Print the SQL instead of running it.")] = False,
) -> None:
    """Create the read-only BI role and its grants on marts: the one admin step, run once by a role that may
    create roles (set CS_PIPELINE_DATABASE_URL to that role's connection, or run the SQL of ``--print``)."""
    from cs_pipeline.runtime.warehouse import bi_grant_sql, grant_bi_role

    settings = load_settings()
    if print_only:
        _, statements = bi_grant_sql(settings, owner)
        typer.echo("\n".join(f"{statement};" for statement in statements))
        return
    try:
        owner = grant_bi_role(settings, owner)
    except Exception as exc:  # psycopg.Error: the message names the missing privilege, never a password
        from cs_pipeline.core.warehouse import mask_secrets

        raise fail(f"could not create the BI role {settings.bi_role}: {mask_secrets(str(exc))}", 1) from None
    console.print(f"BI role {settings.bi_role} may read schema marts (tables of {owner}, now and later)")


@db_app.command("shell")
def db_shell() -> None:
    """Open psql on the warehouse (the embedded server stays up while psql runs)."""
    from cs_pipeline.runtime.dbserver import psql_executable
    from cs_pipeline.runtime.warehouse import psql_invocation

    psql = psql_executable()
    if psql is None:
        raise fail("psql not found", 2)
    cmd, env = psql_invocation(load_settings(), psql)
    raise typer.Exit(subprocess.call(cmd, env=env))
