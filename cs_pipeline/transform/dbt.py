"""dbt wiring that is not Dagster: the project, its profile environment, its vars, its manifest.

Pure helpers (``dbt_env``, ``dbt_vars``) are unit-tested; ``prepare_manifest`` runs ``dbt parse`` when the
manifest is missing or older than any project file, so users never run it by hand.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import date
from pathlib import Path

from cs_pipeline.core.paths import DBT_PROJECT_DIR

PROFILE_ENV = {
    "host": "CS_PIPELINE_DBT_HOST",
    "port": "CS_PIPELINE_DBT_PORT",
    "user": "CS_PIPELINE_DBT_USER",
    "password": "CS_PIPELINE_DBT_PASSWORD",
    "dbname": "CS_PIPELINE_DBT_DBNAME",
    "sslmode": "CS_PIPELINE_DBT_SSLMODE",
    "sslrootcert": "CS_PIPELINE_DBT_SSLROOTCERT",
    "sslcert": "CS_PIPELINE_DBT_SSLCERT",
    "sslkey": "CS_PIPELINE_DBT_SSLKEY",
}
#: The directory dbt loads the seed ``feature_catalogue`` from (``seed-paths`` in dbt_project.yml).
SEED_DIR_ENV = "CS_PIPELINE_DBT_SEED_DIR"
#: libpq's default sslmode, used when the conninfo sets none.
DEFAULT_SSLMODE = "prefer"
TARGET_DIR = DBT_PROJECT_DIR / "target"
MANIFEST = TARGET_DIR / "manifest.json"


def dbt_env(conninfo: str) -> dict[str, str]:
    """Environment variables for ``dbt_project/profiles.yml`` from a libpq conninfo or URL.

    Socket directories (the embedded server) go in ``host`` as they are; dbt-postgres accepts them.
    Missing parts fall back to libpq's defaults (port 5432, user postgres, sslmode prefer). TLS
    parameters (``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``) pass through unchanged, so dbt
    verifies the server exactly as psycopg and dagster-postgres do; absent file parameters are "".

    Raises:
        cs_pipeline.core.warehouse.WarehouseError: the conninfo is malformed (message with secrets masked).
    """
    from cs_pipeline.core.warehouse import parse_conninfo

    params = parse_conninfo(conninfo)
    return {
        PROFILE_ENV["sslmode"]: params.get("sslmode") or DEFAULT_SSLMODE,
        PROFILE_ENV["sslrootcert"]: params.get("sslrootcert") or "",
        PROFILE_ENV["sslcert"]: params.get("sslcert") or "",
        PROFILE_ENV["sslkey"]: params.get("sslkey") or "",
        PROFILE_ENV["host"]: params.get("host") or "localhost",
        PROFILE_ENV["port"]: str(params.get("port") or 5432),
        PROFILE_ENV["user"]: params.get("user") or "postgres",
        PROFILE_ENV["password"]: params.get("password") or "",
        PROFILE_ENV["dbname"]: params.get("dbname") or "cs_pipeline",
    }


def apply_dbt_env(conninfo: str, environ: dict[str, str] | None = None) -> None:
    """Export ``dbt_env(conninfo)`` into ``environ`` (default ``os.environ``) for dbt subprocesses."""
    (os.environ if environ is None else environ).update(dbt_env(conninfo))


def apply_catalogue_env(settings, environ: dict[str, str] | None = None) -> str:
    """Export ``CS_PIPELINE_DBT_SEED_DIR`` into ``environ`` (default ``os.environ``) for dbt subprocesses:
    the directory holding the feature catalogue in force for ``settings`` (a ``Settings``; its
    ``feature_catalogue`` resolved against its ``home``), staged by ``stage_for_dbt``. Returns the directory,
    relative to the dbt project.

    Raises:
        cs_pipeline.core.catalogue.CatalogueError: the team's catalogue is invalid (names the file and fix).
    """
    from cs_pipeline.core.catalogue import stage_for_dbt
    from cs_pipeline.settings import ENV_HOME, resolve_feature_catalogue

    catalogue = resolve_feature_catalogue({**os.environ, ENV_HOME: str(settings.home)})
    seed_dir = stage_for_dbt(catalogue, settings.home)
    (os.environ if environ is None else environ)[SEED_DIR_ENV] = seed_dir
    return seed_dir


def dbt_vars(first_day: date, last_day: date) -> dict[str, str]:
    """The ``--vars`` of a run over the inclusive UTC days [first_day, last_day].

    Raises:
        ValueError: last_day before first_day.
    """
    if last_day < first_day:
        raise ValueError(f"empty window: {first_day} > {last_day}")
    return {"min_date": first_day.isoformat(), "max_date": last_day.isoformat()}


def dbt_vars_arg(first_day: date, last_day: date) -> list[str]:
    """``["--vars", "<json>"]`` for ``dbt_vars``."""
    return ["--vars", json.dumps(dbt_vars(first_day, last_day), sort_keys=True)]


#: Run tag that makes the daily dbt models rebuild from raw (``dbt build --full-refresh``); set by
#: ``cs-pipeline run --full-refresh`` on its first run.
FULL_REFRESH_TAG = "cs_pipeline/full_refresh"

#: The newest day the daily marts hold (None before the first build). Both lookups use the leading
#: column of a unique index, so this is cheap whatever the history.
NEWEST_BUILT_SQL = """
SELECT greatest(
  (SELECT max(as_of_date) FROM marts.supplier_engagement_daily),
  (SELECT max(activity_date) FROM marts.fct_supplier_activity_daily))
"""

#: The first day whose marts a change of support tickets since the last build affects (None if no
#: ticket changed): a ticket that appeared (also late: opened days before the file it first appears
#: in), disappeared, or changed supplier, opened day or priority affects its opened day on; a changed
#: resolved day affects the earlier of the old and new resolved day (null = still open); a changed
#: CSAT affects the resolved day. ``least`` ignores nulls.
TICKET_CHANGES_SQL = """
SELECT min(CASE
  WHEN o.ticket_id IS NULL OR n.ticket_id IS NULL
       OR (o.supplier_id, o.opened_date, o.priority) IS DISTINCT FROM (n.supplier_id, n.opened_date, n.priority)
    THEN least(o.opened_date, n.opened_date)
  WHEN o.resolved_date IS DISTINCT FROM n.resolved_date THEN least(o.resolved_date, n.resolved_date)
  ELSE n.resolved_date END)
FROM intermediate.int_support_ticket_states o
FULL JOIN staging.stg_wedsync__support_tickets n USING (ticket_id)
WHERE (o.supplier_id, o.opened_date, o.resolved_date, o.priority, o.csat)
      IS DISTINCT FROM (n.supplier_id, n.opened_date, n.resolved_date, n.priority, n.csat)
"""


def rebuild_window(first_day: date, last_day: date, newest_built: date | None,
                   earliest_changed: date | None) -> tuple[date, date]:
    """The inclusive UTC days the daily dbt models rebuild for a run over [first_day, last_day].

    It starts at the earliest changed day (the run's first day, or the first day a late or corrected
    support ticket affects) and ends at the newest day already built when that is later than the run's
    last day: a re-run of an old day D must refresh every later day whose rolling windows, last-seen
    dates and running totals depend on D (issue 15). A daily run of the newest day gives
    ``(day, day)``; the models then read at most 89 days before the window and carry running totals
    forward from the day before it, so the cost does not grow with history.

    Args:
        first_day, last_day: the run's partition days.
        newest_built: ``NEWEST_BUILT_SQL`` (None before the first build or after a reset).
        earliest_changed: ``TICKET_CHANGES_SQL`` (None when no ticket changed).

    Raises:
        ValueError: last_day before first_day.
    """
    if last_day < first_day:
        raise ValueError(f"empty window: {first_day} > {last_day}")
    start = first_day if earliest_changed is None else min(first_day, earliest_changed)
    end = last_day if newest_built is None else max(last_day, newest_built)
    return start, end


def build_state(conn) -> tuple[date | None, date | None]:
    """``(newest_built, earliest_changed)`` for ``rebuild_window`` from the warehouse (a psycopg
    connection); None for a relation that does not exist yet (first run)."""
    exists = conn.execute(
        "SELECT to_regclass('marts.supplier_engagement_daily') IS NOT NULL "
        "AND to_regclass('marts.fct_supplier_activity_daily') IS NOT NULL, "
        "to_regclass('intermediate.int_support_ticket_states') IS NOT NULL "
        "AND to_regclass('staging.stg_wedsync__support_tickets') IS NOT NULL").fetchone()
    newest = conn.execute(NEWEST_BUILT_SQL).fetchone()[0] if exists[0] else None
    changed = conn.execute(TICKET_CHANGES_SQL).fetchone()[0] if exists[1] else None
    return newest, changed


def _project_files(project_dir: Path) -> list[Path]:
    patterns = ("*.sql", "*.yml", "*.yaml", "*.csv", "*.md")
    skip = {"target", "logs", "dbt_packages", "seeds_staged"}  # staged seeds do not change the manifest
    return [p for pattern in patterns for p in project_dir.rglob(pattern)
            if not skip.intersection(p.relative_to(project_dir).parts)]


def manifest_is_stale(project_dir: Path = DBT_PROJECT_DIR, manifest: Path = MANIFEST) -> bool:
    """True when the manifest is missing or older than any model, macro, seed or YAML file."""
    if not manifest.exists():
        return True
    built = manifest.stat().st_mtime
    return any(p.stat().st_mtime > built for p in _project_files(project_dir))


def put_dbt_on_path() -> None:
    """Put this Python's bin directory (where ``dbt`` is installed) first on ``PATH`` if it is not there,
    for dagster-dbt's preparer, which looks ``dbt`` up on ``PATH`` (a virtualenv need not be activated)."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def prepare_manifest(project) -> Path:
    """Run ``dbt parse`` through dagster-dbt's preparer when the manifest is stale; return its path.

    ``project`` is a ``dagster_dbt.DbtProject``. Parsing needs no database connection.
    """
    if manifest_is_stale(Path(project.project_dir), Path(project.manifest_path)):
        put_dbt_on_path()
        project.preparer.prepare(project)
    return Path(project.manifest_path)


def dbt_executable() -> str:
    """The ``dbt`` installed beside this Python (a virtualenv's bin need not be on PATH)."""
    candidate = Path(sys.executable).parent / "dbt"
    return str(candidate) if candidate.exists() else "dbt"
