"""dbt wiring that is not Dagster: the project, its profile environment, its day window, its manifest
and its parse state.

Pure helpers (``dbt_env``; the day window is ``cs_pipeline.core.window.DayWindow``) are unit-tested; ``prepare_manifest`` runs
``dbt parse`` when the manifest is missing or older than any project file, so users never run it by hand.

Partial parsing (issue 18): dbt re-parses the whole project (seconds) when the ``--vars``, the profile or
its environment differ from the last parse. So the runs pass their day window in the environment
(``DayWindow.dbt_env``; the macros read it only when executing), and each warehouse has its own parse state
(``prepare_parse_state``: ``dbt parse`` into ``$CS_PIPELINE_HOME/dbt_target`` with that warehouse's
profile), from which dagster-dbt seeds every invocation's target directory (``DBT_TARGET_PATH``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from cs_pipeline.core.child_env import child_env, put_on_path
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
TARGET_DIR = DBT_PROJECT_DIR / "target"
MANIFEST = TARGET_DIR / "manifest.json"


def dbt_env(conninfo: str) -> dict[str, str]:
    """Environment variables for ``dbt_project/profiles.yml`` from a libpq conninfo or URL.

    Socket directories (the embedded server) go in ``host`` as they are; dbt-postgres accepts them.
    Missing parts fall back to libpq's defaults (port 5432, user postgres). TLS parameters (``sslmode``,
    ``sslrootcert``, ``sslcert``, ``sslkey``) pass through unchanged, so dbt verifies the server exactly
    as psycopg and dagster-postgres do; absent ones are "" and the profile leaves them out, so libpq's
    own ``PGSSLMODE``... environment still applies (the profile never forces ``sslmode=prefer``). Every
    security parameter of the conninfo, including those dbt-postgres has no profile field for
    (``require_auth``, ``channel_binding``, ``target_session_attrs``), is also given as its libpq ``PG*``
    variable (``cs_pipeline.core.credentials.libpq_env``), which dbt's psycopg2 honours.

    Raises:
        cs_pipeline.core.warehouse.WarehouseError: the conninfo is malformed (message with secrets masked).
    """
    from cs_pipeline.core.credentials import libpq_env
    from cs_pipeline.core.warehouse import parse_conninfo

    params = parse_conninfo(conninfo)
    return {
        **libpq_env(params),
        PROFILE_ENV["sslmode"]: params.get("sslmode") or "",
        PROFILE_ENV["sslrootcert"]: params.get("sslrootcert") or "",
        PROFILE_ENV["sslcert"]: params.get("sslcert") or "",
        PROFILE_ENV["sslkey"]: params.get("sslkey") or "",
        PROFILE_ENV["host"]: params.get("host") or "localhost",
        PROFILE_ENV["port"]: str(params.get("port") or 5432),
        PROFILE_ENV["user"]: params.get("user") or "postgres",
        PROFILE_ENV["password"]: params.get("password") or "",
        PROFILE_ENV["dbname"]: params.get("dbname") or "cs_pipeline",
    }


def apply_dbt_env(conninfo: str, environ: dict[str, str]) -> None:
    """Add ``dbt_env(conninfo)`` to ``environ`` (a child process's environment, see
    ``cs_pipeline.core.settings.child_env``)."""
    environ.update(dbt_env(conninfo))


def apply_catalogue_env(settings, environ: dict[str, str]) -> str:
    """Add ``CS_PIPELINE_DBT_SEED_DIR`` to ``environ`` (a child process's environment): the directory
    holding the feature catalogue in force for ``settings`` (a ``Settings``: ``settings.feature_catalogue``),
    staged by ``stage_for_dbt``. Returns the directory, relative to the dbt project.

    Raises:
        cs_pipeline.core.catalogue.CatalogueError: the team's catalogue is invalid (names the file and fix).
    """
    from cs_pipeline.core.catalogue import stage_for_dbt

    seed_dir = stage_for_dbt(settings.feature_catalogue, settings.home)
    environ[SEED_DIR_ENV] = seed_dir
    return seed_dir


#: Invocation directories kept under a parse-state directory (dagster-dbt makes one per dbt command).
KEEP_INVOCATIONS = 20


def _profile_stamp(env: dict[str, str]) -> str:
    from importlib.metadata import version

    # Without the password: parsing never uses it, and the stamp is a file on disk.
    shown = {key: value for key, value in env.items() if key != PROFILE_ENV["password"]}
    # The project's directory too: a parse of another checkout's project (same home) is newer than this
    # project's files, yet dbt finds its project config changed and parses in full on every run.
    text = json.dumps({"profile_env": shown, "dbt": version("dbt-core"), "project": str(DBT_PROJECT_DIR)},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def prepare_parse_state(state_dir: Path, env: dict[str, str]) -> Path:
    """Make ``state_dir`` hold a current dbt parse (``manifest.json``, ``partial_parse.msgpack``) made
    with ``env``: the profile's variables (``dbt_env``) and the project's (the catalogue's seed
    directory), running ``dbt parse --target-path state_dir`` (no database connection) only when it is
    missing, older than a project file, or made for another profile, dbt version or project directory
    (a SHA-256 stamp, no secret in clear). A file lock serialises concurrent runs. Also prunes
    dagster-dbt's invocation directories under it: beyond the newest ``KEEP_INVOCATIONS``, those older
    than a day. The state is per ``state_dir`` (one per ``CS_PIPELINE_HOME``): two warehouses or catalogues
    alternating in one home re-parse when they alternate.

    Returns ``state_dir``; set ``DBT_TARGET_PATH`` to it around ``DbtCliResource.cli`` so that each
    invocation starts from this parse (dagster-dbt copies ``partial_parse.msgpack`` from there).

    Raises:
        RuntimeError: ``dbt parse`` failed (its last output lines, secrets masked by dbt).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    stamp = _profile_stamp(env)
    stamp_file = state_dir / "profile.sha256"
    with open(state_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        same_stamp = stamp_file.exists() and stamp_file.read_text() == stamp
        fresh = ((state_dir / "partial_parse.msgpack").exists()
                 and not manifest_is_stale(DBT_PROJECT_DIR, state_dir / "manifest.json") and same_stamp)
        if not same_stamp:
            # dbt would parse partially from another profile's or project's state and keep its paths.
            (state_dir / "partial_parse.msgpack").unlink(missing_ok=True)
        if not fresh:
            done = subprocess.run(
                [dbt_executable(), "parse", "--project-dir", str(DBT_PROJECT_DIR),
                 "--profiles-dir", str(DBT_PROJECT_DIR), "--target-path", str(state_dir)],
                env=child_env(**env, DBT_LOG_PATH=str(state_dir)), capture_output=True, text=True, check=False)
            if done.returncode != 0:
                tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
                raise RuntimeError(f"dbt parse of {DBT_PROJECT_DIR} failed:\n{tail}")
            stamp_file.write_text(stamp)
            stamp_file.chmod(0o600)
        # Prune the oldest invocation directories, but only those untouched for a day: a long backfill's
        # directory (made at its start) must survive other processes' invocations meanwhile.
        invocations = sorted((p for p in state_dir.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
        day_ago = time.time() - 86_400
        for old in invocations[:-KEEP_INVOCATIONS]:
            if old.stat().st_mtime < day_ago:
                shutil.rmtree(old, ignore_errors=True)
    return state_dir


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
    put_on_path(str(Path(sys.executable).parent))


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
