"""Commands that start a tool: ``dev`` (the Dagster UI), ``dashboard`` (the Streamlit dashboard) and
``dbt`` (dbt on dbt_project/ with the warehouse's connection settings)."""

from __future__ import annotations

import subprocess
import sys
from typing import Annotated

import typer

from cs_pipeline.cli.common import app, console, load_settings
from cs_pipeline.core.child_env import child_env


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def dbt(ctx: typer.Context) -> None:
    """Run dbt on dbt_project/ with the warehouse's connection settings, e.g. ``cs-pipeline dbt build``."""
    from cs_pipeline.core.paths import DBT_PROJECT_DIR
    from cs_pipeline.core.warehouse import resolve_endpoints
    from cs_pipeline.transform.dbt import apply_catalogue_env, apply_dbt_env

    settings = load_settings()
    endpoints = resolve_endpoints(settings)
    env = child_env(settings)
    apply_dbt_env(endpoints.warehouse, env)
    apply_catalogue_env(settings, env)
    from cs_pipeline.transform.dbt import dbt_executable

    cmd = [dbt_executable(), *ctx.args,
           "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
    raise typer.Exit(subprocess.call(cmd, env=env))


def _serve(settings, cmd: list[str], env: dict[str, str], cwd: str | None = None) -> int:
    """Run the tool until it exits or this command is signalled (``kill <pid>``, Ctrl-C: passed on to the tool
    and what it started), then release the embedded server (it stops unless another process still uses it)."""
    from cs_pipeline.runtime import dbserver
    from cs_pipeline.runtime.children import run_foreground

    code = run_foreground(cmd, env=env, cwd=cwd)
    dbserver.forget_dead_users(settings)  # a tool's process killed outright must not keep the server up
    return code


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="Port of the Dagster UI.")] = 3000,
) -> None:
    """Start the Dagster UI (``dagster dev``) on 127.0.0.1 with the persistent instance."""
    from cs_pipeline.core.paths import PROJECT_ROOT
    from cs_pipeline.runtime.instance import prepare_dagster_home

    settings = load_settings()
    prepare_dagster_home(settings)  # also starts the embedded server and keeps it for our lifetime
    cmd = [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
           "-h", "127.0.0.1", "-p", str(port)]
    console.print(f"Dagster UI on http://127.0.0.1:{port} (DAGSTER_HOME={settings.dagster_instance_dir})")
    # `dagster dev` is superseded by `dg dev` (which wants a `dg` project layout and its own interpreter); the
    # notice is for Dagster's developers, not for the person starting the UI.
    env = child_env(settings, PYTHONWARNINGS="ignore:Function `dev_command` is superseded")
    raise typer.Exit(_serve(settings, cmd, env, cwd=str(PROJECT_ROOT)))


@app.command()
def dashboard(
    port: Annotated[int, typer.Option(help="Port of the dashboard.")] = 8501,
) -> None:
    """Start the customer-success dashboard (Streamlit) on 127.0.0.1; it reads the marts as the BI role."""
    from cs_pipeline.app.dashboard import APP_SCRIPT
    from cs_pipeline.app.dashboard.connection import (
        ENV_DASHBOARD_CONNINFO,
        dashboard_conninfo,
        prepare_dashboard_access,
    )
    from cs_pipeline.core.warehouse import describe

    settings = load_settings()
    prepare_dashboard_access(settings)  # also starts the embedded server and keeps it for our lifetime
    conninfo = dashboard_conninfo(settings)
    env = child_env(settings, **{ENV_DASHBOARD_CONNINFO: conninfo})
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT), "--server.address", "127.0.0.1",
           "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    console.print(f"dashboard on http://127.0.0.1:{port} (reading marts as {describe(conninfo)})")
    raise typer.Exit(_serve(settings, cmd, env))
