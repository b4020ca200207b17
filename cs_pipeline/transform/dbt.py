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


def _project_files(project_dir: Path) -> list[Path]:
    patterns = ("*.sql", "*.yml", "*.yaml", "*.csv", "*.md")
    skip = {"target", "logs", "dbt_packages"}
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
