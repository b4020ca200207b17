"""Project settings, read from the environment when asked (never at import time).

Every setting has a default that works on a fresh machine (the embedded PostgreSQL under
``./.cs_pipeline``). The environment variables are listed in the README.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import date
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

#: Environment variable names (fixed: relied on by the README, CI and users' deployments).
ENV_DATABASE_URL = "CS_PIPELINE_DATABASE_URL"
ENV_DAGSTER_STORAGE_URL = "CS_PIPELINE_DAGSTER_STORAGE_URL"
ENV_HOME = "CS_PIPELINE_HOME"
ENV_LANDING_DIR = "CS_PIPELINE_LANDING_DIR"
ENV_PARTITION_START = "CS_PIPELINE_PARTITION_START"
ENV_BI_ROLE = "CS_PIPELINE_BI_ROLE"
ENV_SCORECARD = "CS_PIPELINE_SCORECARD"
ENV_FEATURE_CATALOGUE = "CS_PIPELINE_FEATURE_CATALOGUE"

DEFAULT_HOME = ".cs_pipeline"
DEFAULT_PARTITION_START = date(2024, 1, 1)
CALENDAR_FILE = "calendar.json"
#: Where ``cs-pipeline import`` records a mapping's ``catalogue:`` (relative to CS_PIPELINE_HOME).
RECORDED_CATALOGUE = Path("catalogue") / "feature_catalogue.csv"
WAREHOUSE_DATABASE = "cs_pipeline"
DAGSTER_DATABASE = "dagster"


class SettingsError(ValueError):
    """A setting in the environment has an invalid value; the message names the variable."""


class Settings(BaseModel):
    """Resolved settings of one process.

    Attributes:
        home: ``CS_PIPELINE_HOME`` (default ``./.cs_pipeline``), absolute. Holds the embedded
            PostgreSQL data directory (``pgdata``), the landing zone, the outbox and DAGSTER_HOME.
        database_url: ``CS_PIPELINE_DATABASE_URL``; ``None`` means "start the embedded PostgreSQL".
        dagster_storage_url: ``CS_PIPELINE_DAGSTER_STORAGE_URL``; ``None`` means database
            ``dagster`` on the warehouse's server.
        landing_dir: ``CS_PIPELINE_LANDING_DIR`` (default ``$CS_PIPELINE_HOME/landing``).
        partition_start: the first day of the daily partitions (UTC): ``CS_PIPELINE_PARTITION_START``
            (YYYY-MM-DD) when set; else the day remembered in ``$CS_PIPELINE_HOME/calendar.json`` (written
            by ``cs-pipeline import``: the earliest day imported); else the earliest landing file's day;
            else 2024-01-01. The calendar follows the data.
        partition_start_origin: where ``partition_start`` came from, for messages (names the variable).
        bi_role: ``CS_PIPELINE_BI_ROLE`` (default ``cs_bi_reader``), the read-only role for BI tools.
        scorecard: ``CS_PIPELINE_SCORECARD`` (default ``ws168``): a shipped scorecard name or a YAML path.
        feature_catalogue: the product's own feature catalogue (a CSV with the columns of
            ``dbt_project/seeds/feature_catalogue.csv``): ``CS_PIPELINE_FEATURE_CATALOGUE`` when set; else
            the one a mapping's ``catalogue:`` recorded in ``$CS_PIPELINE_HOME/catalogue/``; else ``None``,
            WedSync's shipped catalogue (``resolve_feature_catalogue``).
    """

    model_config = ConfigDict(frozen=True)

    home: Path
    database_url: str | None = None
    dagster_storage_url: str | None = None
    landing_dir: Path
    partition_start: date = DEFAULT_PARTITION_START
    partition_start_origin: str = "by default"
    bi_role: str = Field(default="cs_bi_reader", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    scorecard: str = "ws168"
    feature_catalogue: Path | None = None
    churn_model: str | None = None
    """``CS_PIPELINE_CHURN_MODEL``: the churn model version that scores (issue 26); ``None``: the newest one
    in ops.churn_models. Only files under ``$CS_PIPELINE_HOME/models`` are ever loaded."""

    @field_validator("database_url", "dagster_storage_url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @property
    def pgdata_dir(self) -> Path:
        """Data directory of the embedded PostgreSQL: ``$CS_PIPELINE_HOME/pgdata``."""
        return self.home / "pgdata"

    @property
    def dagster_home(self) -> Path:
        """Default DAGSTER_HOME when the user has not set one: ``$CS_PIPELINE_HOME/dagster_home``."""
        return self.home / "dagster_home"

    @property
    def outbox_dir(self) -> Path:
        """Where the embedded default writes e-mails as .eml files: ``$CS_PIPELINE_HOME/outbox``."""
        return self.home / "outbox"

    @property
    def embedded(self) -> bool:
        """True when no ``CS_PIPELINE_DATABASE_URL`` is set and the embedded PostgreSQL is used."""
        return self.database_url is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``environ`` (default ``os.environ``).

        Raises:
            SettingsError: a variable has an invalid value; the message names the variable.
        """
        env = os.environ if environ is None else environ
        home = Path(env.get(ENV_HOME) or DEFAULT_HOME).expanduser().absolute()
        landing = env.get(ENV_LANDING_DIR)
        values: dict[str, object] = {
            "home": home,
            "database_url": env.get(ENV_DATABASE_URL),
            "dagster_storage_url": env.get(ENV_DAGSTER_STORAGE_URL),
            "landing_dir": Path(landing).expanduser().absolute() if landing else home / "landing",
        }
        if env.get(ENV_PARTITION_START):
            values["partition_start"] = env[ENV_PARTITION_START]
            values["partition_start_origin"] = f"set by {ENV_PARTITION_START}"
        elif (remembered := remembered_partition_start(home)) is not None:
            values["partition_start"] = remembered
            values["partition_start_origin"] = f"remembered in {home / CALENDAR_FILE}"
        elif (earliest := earliest_landing_day(values["landing_dir"])) is not None:  # type: ignore[arg-type]
            values["partition_start"] = earliest
            values["partition_start_origin"] = "taken from the earliest landing file"
        if env.get(ENV_BI_ROLE):
            values["bi_role"] = env[ENV_BI_ROLE]
        if env.get(ENV_SCORECARD):
            values["scorecard"] = env[ENV_SCORECARD]
        values["feature_catalogue"] = resolve_feature_catalogue(env)
        if env.get("CS_PIPELINE_CHURN_MODEL"):
            values["churn_model"] = env["CS_PIPELINE_CHURN_MODEL"].strip()
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            names = {
                "partition_start": ENV_PARTITION_START,
                "bi_role": ENV_BI_ROLE,
            }
            problems = "; ".join(
                f"{names.get(str(err['loc'][0]), err['loc'][0])}: {err['msg']}" for err in exc.errors()
            )
            raise SettingsError(f"invalid cs_pipeline setting: {problems}") from exc


def resolve_feature_catalogue(environ: Mapping[str, str] | None = None) -> Path | None:
    """The feature catalogue CSV in force (absolute), or ``None`` for WedSync's shipped one.

    ``CS_PIPELINE_FEATURE_CATALOGUE`` wins; else ``$CS_PIPELINE_HOME/catalogue/feature_catalogue.csv``
    when an import recorded one there; else ``None``. Cheap (one ``stat``), so ingestion can ask per
    call; the file is validated where it is read (``cs_pipeline.core.catalogue``).
    """
    env = os.environ if environ is None else environ
    if env.get(ENV_FEATURE_CATALOGUE):
        return Path(env[ENV_FEATURE_CATALOGUE]).expanduser().absolute()
    recorded = Path(env.get(ENV_HOME) or DEFAULT_HOME).expanduser().absolute() / RECORDED_CATALOGUE
    return recorded if recorded.is_file() else None


_LANDING_DAY = re.compile(r"_(\d{4}-\d{2}-\d{2})\.")


def remembered_partition_start(home: Path) -> date | None:
    """The first partition day remembered in ``<home>/calendar.json`` (``{"start": "YYYY-MM-DD"}``), if any
    (an unreadable file counts as none)."""
    path = home / CALENDAR_FILE
    try:
        return date.fromisoformat(json.loads(path.read_text())["start"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remember_partition_start(home: Path, day: date) -> date:
    """Remember ``day`` as the first partition day in ``<home>/calendar.json``, unless an earlier day is
    remembered already (partitions only ever start earlier, so materialised days stay inside).
    Returns the day remembered."""
    current = remembered_partition_start(home)
    start = min(day, current) if current else day
    home.mkdir(parents=True, exist_ok=True)
    (home / CALENDAR_FILE).write_text(json.dumps({"start": start.isoformat()}) + "\n")
    return start


def earliest_landing_day(landing_dir: Path) -> date | None:
    """The earliest ``<source>_<YYYY-MM-DD>.<ext>`` day among the files in ``landing_dir`` (not recursive)."""
    try:
        names = [p.name for p in landing_dir.iterdir()]
    except OSError:
        return None
    days = []
    for name in names:
        match = _LANDING_DAY.search(name)
        if match:
            try:
                days.append(date.fromisoformat(match.group(1)))
            except ValueError:
                continue
    return min(days) if days else None
