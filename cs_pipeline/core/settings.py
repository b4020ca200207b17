"""The one owner of configuration: every environment variable cs_pipeline reads is a field here.

A process resolves its settings once, at start (``Settings.from_env()`` in the CLI, in
``cs_pipeline.definitions`` and in the dashboard), into absolute paths, validated: an invalid value fails
with one line naming the variable and the fix (``SettingsError``). Everything else receives the
``Settings`` (or a resource built from it) and never reads ``os.environ``.

The only other use of the process environment is building the environment of child processes (dbt, the
Dagster webserver and daemon, Streamlit, the embedded server's holder): ``cs_pipeline.core.child_env``. The full inventory of variables (name, field, default) is in docs/configuration.md.

Every setting has a default that works on a fresh machine (the embedded PostgreSQL under
``./.cs_pipeline``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

from cs_pipeline.core.calendar import (  # noqa: F401  (re-exported: the settings' calendar)
    CALENDAR_FILE,
    earliest_landing_day,
    remember_partition_start,
    remembered_partition_start,
)

#: Environment variable names (fixed: relied on by the README, CI and users' deployments).
ENV_DATABASE_URL = "CS_PIPELINE_DATABASE_URL"
ENV_DAGSTER_STORAGE_URL = "CS_PIPELINE_DAGSTER_STORAGE_URL"
ENV_HOME = "CS_PIPELINE_HOME"
ENV_LANDING_DIR = "CS_PIPELINE_LANDING_DIR"
ENV_PARTITION_START = "CS_PIPELINE_PARTITION_START"
ENV_BI_ROLE = "CS_PIPELINE_BI_ROLE"
ENV_SCORECARD = "CS_PIPELINE_SCORECARD"
ENV_FEATURE_CATALOGUE = "CS_PIPELINE_FEATURE_CATALOGUE"
ENV_CHURN_MODEL = "CS_PIPELINE_CHURN_MODEL"
ENV_SMTP_HOST = "CS_PIPELINE_SMTP_HOST"
ENV_SMTP_PORT = "CS_PIPELINE_SMTP_PORT"
ENV_SMTP_USER = "CS_PIPELINE_SMTP_USER"
ENV_SMTP_PASSWORD = "CS_PIPELINE_SMTP_PASSWORD"
ENV_SMTP_TLS = "CS_PIPELINE_SMTP_TLS"
ENV_SMTP_TLS_VERIFY = "CS_PIPELINE_SMTP_TLS_VERIFY"
#: An explicit libpq URL/conninfo for the dashboard (an external server's BI login, with its password).
ENV_DASHBOARD_DATABASE_URL = "CS_PIPELINE_DASHBOARD_DATABASE_URL"
#: Set by ``cs-pipeline dashboard`` for the Streamlit process it starts (the resolved conninfo).
ENV_DASHBOARD_CONNINFO = "CS_PIPELINE_DASHBOARD_CONNINFO"
ENV_DAGSTER_URL = "CS_PIPELINE_DAGSTER_URL"
ENV_DAGSTER_HOME = "DAGSTER_HOME"  # Dagster's own variable: where its instance (dagster.yaml) lives

DEFAULT_HOME = ".cs_pipeline"
DEFAULT_PARTITION_START = date(2024, 1, 1)
DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"
#: Where ``cs-pipeline import`` records a mapping's ``catalogue:`` (relative to CS_PIPELINE_HOME).
RECORDED_CATALOGUE = Path("catalogue") / "feature_catalogue.csv"
WAREHOUSE_DATABASE = "cs_pipeline"
DAGSTER_DATABASE = "dagster"
#: Shipped scorecards (``<name>.yaml``); ``CS_PIPELINE_SCORECARD`` names one or a YAML file.
SCORECARD_DIR = Path(__file__).resolve().parent.parent / "config" / "scorecards"

_FALSE = ("0", "false", "no", "off")


class SettingsError(ValueError):
    """A setting in the environment has an invalid value; the message is one line naming the variable
    and the fix."""


class SmtpSettings(BaseModel):
    """Outgoing e-mail (``CS_PIPELINE_SMTP_*``). ``host`` unset: messages are written as .eml files to the
    outbox under ``CS_PIPELINE_HOME``.

    Attributes:
        host: ``CS_PIPELINE_SMTP_HOST`` (default unset).
        port: ``CS_PIPELINE_SMTP_PORT`` (default 587).
        user: ``CS_PIPELINE_SMTP_USER`` (default unset: no login).
        password: ``CS_PIPELINE_SMTP_PASSWORD`` (a secret: never shown; the resource reads it through
            ``dg.EnvVar`` so the Dagster UI does not show it either).
        use_tls: ``CS_PIPELINE_SMTP_TLS`` (default true: STARTTLS).
        tls_verify: ``CS_PIPELINE_SMTP_TLS_VERIFY`` (default true: verify the server's certificate).
    """

    model_config = ConfigDict(frozen=True)

    host: str | None = None
    port: int = Field(default=587, ge=1, le=65535)
    user: str | None = None
    password: SecretStr | None = None
    use_tls: bool = True
    tls_verify: bool = True


class DashboardSettings(BaseModel):
    """The CS dashboard (Streamlit).

    Attributes:
        database_url: ``CS_PIPELINE_DASHBOARD_DATABASE_URL``: an explicit BI login (default: the warehouse's
            server as the BI role).
        conninfo: ``CS_PIPELINE_DASHBOARD_CONNINFO``: set by ``cs-pipeline dashboard`` for its Streamlit child.
        dagster_url: ``CS_PIPELINE_DAGSTER_URL`` (default http://127.0.0.1:3000): the webserver the quick
            actions submit runs to.
    """

    model_config = ConfigDict(frozen=True)

    database_url: SecretStr | None = None
    conninfo: SecretStr | None = None
    dagster_url: str = DEFAULT_DAGSTER_URL


class ScoringSettings(BaseModel):
    """What scores the accounts.

    Attributes:
        scorecard: ``CS_PIPELINE_SCORECARD`` (default ``ws168``): a shipped scorecard's name or a YAML path.
        feature_catalogue: the product's own feature catalogue (a CSV with the columns of
            ``dbt_project/seeds/feature_catalogue.csv``): ``CS_PIPELINE_FEATURE_CATALOGUE`` when set; else
            the one a mapping's ``catalogue:`` recorded in ``$CS_PIPELINE_HOME/catalogue/``; else ``None``,
            WedSync's shipped catalogue (``resolve_feature_catalogue``).
        churn_model: ``CS_PIPELINE_CHURN_MODEL``: the one churn model version that may score (issue 26), on
            the days after its training as-of day;
            ``None``: each day D the newest model in ops.churn_models trained as of a day before D (issue 28).
            Only files under ``$CS_PIPELINE_HOME/models`` are ever loaded.
    """

    model_config = ConfigDict(frozen=True)

    scorecard: str = "ws168"
    feature_catalogue: Path | None = None
    churn_model: str | None = None


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
        dagster_home: ``DAGSTER_HOME`` when set, else ``$CS_PIPELINE_HOME/dagster_home``; absolute.
        dagster_home_is_ours: True when ``DAGSTER_HOME`` was not set (cs_pipeline writes its dagster.yaml).
        operator: who runs the command (``USER``, default ``cli``), recorded with manual interventions.
        scoring, smtp, dashboard: the sub-models above.
    """

    model_config = ConfigDict(frozen=True)

    home: Path
    database_url: str | None = Field(default=None, repr=False)
    dagster_storage_url: str | None = Field(default=None, repr=False)
    landing_dir: Path
    partition_start: date = DEFAULT_PARTITION_START
    partition_start_origin: str = "by default"
    bi_role: str = Field(default="cs_bi_reader", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    dagster_home: Path | None = None
    dagster_home_is_ours: bool = True
    operator: str = "cli"
    scoring: ScoringSettings = ScoringSettings()
    smtp: SmtpSettings = SmtpSettings()
    dashboard: DashboardSettings = DashboardSettings()

    @field_validator("database_url", "dagster_storage_url")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:  # a password's reserved characters encoded
        from cs_pipeline.core.credentials import normalise_url
        return normalise_url(value.strip()) or None if value is not None else None

    def model_copy(self, *, update: Mapping[str, object] | None = None, deep: bool = False) -> Settings:
        """A copy with ``update`` applied (pydantic's ``model_copy``), where ``scorecard`` and
        ``feature_catalogue`` update the ``scoring`` sub-model.

        Raises:
            TypeError: a key of ``update`` is no setting (pydantic would keep it silently, unused).
        """
        changes = dict(update or {})
        scoring = {key: changes.pop(key) for key in ("scorecard", "feature_catalogue", "churn_model") if key in changes}
        if scoring:
            changes["scoring"] = self.scoring.model_copy(update=scoring)
        unknown = sorted(set(changes) - set(type(self).model_fields))
        if unknown:
            raise TypeError(f"not a setting: {', '.join(unknown)}")
        return super().model_copy(update=changes, deep=deep)

    @property
    def scorecard(self) -> str:
        """``scoring.scorecard`` (``CS_PIPELINE_SCORECARD``)."""
        return self.scoring.scorecard

    @property
    def churn_model(self) -> str | None:
        """``scoring.churn_model`` (``CS_PIPELINE_CHURN_MODEL``; None: each day the newest model trained as of an
        earlier day)."""
        return self.scoring.churn_model

    @property
    def feature_catalogue(self) -> Path | None:
        """``scoring.feature_catalogue`` (the team's catalogue in force, or None for WedSync's)."""
        return self.scoring.feature_catalogue

    @property
    def pgdata_dir(self) -> Path:
        """Data directory of the embedded PostgreSQL: ``$CS_PIPELINE_HOME/pgdata``."""
        return self.home / "pgdata"

    @property
    def dagster_instance_dir(self) -> Path:
        """DAGSTER_HOME of this deployment: ``dagster_home`` or ``$CS_PIPELINE_HOME/dagster_home``."""
        return self.dagster_home or self.home / "dagster_home"

    @property
    def outbox_dir(self) -> Path:
        """Where the embedded default writes e-mails as .eml files: ``$CS_PIPELINE_HOME/outbox``."""
        return self.home / "outbox"

    @property
    def embedded(self) -> bool:
        """True when no ``CS_PIPELINE_DATABASE_URL`` is set and the embedded PostgreSQL is used."""
        return self.database_url is None

    @classmethod
    def for_home(cls, home: Path | str, **values: object) -> Settings:
        """Settings for ``home`` without reading the environment (resources and tests): the landing folder
        ``<home>/landing`` unless given, the rest default or as given."""
        path = Path(home).expanduser().absolute()
        values.setdefault("landing_dir", path / "landing")
        return cls.model_validate({"home": path, **values})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting from ``environ`` (default ``os.environ``).

        Raises:
            SettingsError: a variable has an invalid value; one line naming the variable and the fix.
        """
        env = os.environ if environ is None else environ
        home = Path(env.get(ENV_HOME) or DEFAULT_HOME).expanduser().absolute()
        landing = env.get(ENV_LANDING_DIR)
        values: dict[str, object] = {
            "home": home,
            "database_url": env.get(ENV_DATABASE_URL),
            "dagster_storage_url": env.get(ENV_DAGSTER_STORAGE_URL),
            "landing_dir": Path(landing).expanduser().absolute() if landing else home / "landing",
            "operator": env.get("USER") or "cli",
        }
        if env.get(ENV_DAGSTER_HOME):
            values["dagster_home"] = Path(env[ENV_DAGSTER_HOME]).expanduser().absolute()
            values["dagster_home_is_ours"] = False
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
        values["scoring"] = {"scorecard": env.get(ENV_SCORECARD) or "ws168",
                             "feature_catalogue": resolve_feature_catalogue(env),
                             "churn_model": (env.get(ENV_CHURN_MODEL) or "").strip() or None}
        values["smtp"] = {
            "host": env.get(ENV_SMTP_HOST) or None,
            "port": env.get(ENV_SMTP_PORT) or 587,
            "user": env.get(ENV_SMTP_USER) or None,
            "password": env.get(ENV_SMTP_PASSWORD) or None,
            "use_tls": (env.get(ENV_SMTP_TLS) or "true").lower() not in _FALSE,
            "tls_verify": (env.get(ENV_SMTP_TLS_VERIFY) or "true").lower() not in _FALSE,
        }
        values["dashboard"] = {
            "database_url": env.get(ENV_DASHBOARD_DATABASE_URL) or None,
            "conninfo": env.get(ENV_DASHBOARD_CONNINFO) or None,
            "dagster_url": (env.get(ENV_DAGSTER_URL) or DEFAULT_DAGSTER_URL).rstrip("/"),
        }
        try:
            settings = cls.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            name = _VARIABLE_OF.get(tuple(str(p) for p in err["loc"][:2]), _VARIABLE_OF.get((str(err["loc"][0]),), str(err["loc"][0])))
            raise SettingsError(f"{name}: {err['msg']}; {_FIX_OF.get(name, 'see docs/configuration.md')}") from exc
        check_settings(settings)
        return settings


#: Variable of each field (for messages), by the field's location in the model.
_VARIABLE_OF = {
    ("partition_start",): ENV_PARTITION_START,
    ("bi_role",): ENV_BI_ROLE,
    ("smtp", "port"): ENV_SMTP_PORT,
    ("dashboard", "dagster_url"): ENV_DAGSTER_URL,
}
_FIX_OF = {
    ENV_PARTITION_START: "set it to a day YYYY-MM-DD, e.g. 2025-01-01",
    ENV_BI_ROLE: "use a lower-case PostgreSQL role name (letters, digits, _), e.g. cs_bi_reader",
    ENV_SMTP_PORT: "set a port number 1-65535, e.g. 587",
}


def resolve_feature_catalogue(environ: Mapping[str, str] | None = None, home: Path | None = None) -> Path | None:
    """The feature catalogue CSV in force (absolute), or ``None`` for WedSync's shipped one.

    ``CS_PIPELINE_FEATURE_CATALOGUE`` wins; else ``<home>/catalogue/feature_catalogue.csv`` (``home``
    default ``CS_PIPELINE_HOME``) when an import recorded one there; else ``None``. Cheap (one ``stat``),
    so ingestion can ask per call; the file is validated where it is read (``cs_pipeline.core.catalogue``).
    """
    env = os.environ if environ is None else environ
    if env.get(ENV_FEATURE_CATALOGUE):
        return Path(env[ENV_FEATURE_CATALOGUE]).expanduser().absolute()
    base = home if home is not None else Path(env.get(ENV_HOME) or DEFAULT_HOME).expanduser().absolute()
    recorded = base / RECORDED_CATALOGUE
    return recorded if recorded.is_file() else None


def check_settings(settings: Settings) -> None:
    """What a value alone cannot say: URLs parse, the scorecard and the catalogue exist (called by
    ``Settings.from_env``; never echoes a URL, which may carry a password).

    Raises:
        SettingsError: one line naming the variable and the fix.
    """
    from psycopg.conninfo import conninfo_to_dict

    for name, value in ((ENV_DATABASE_URL, settings.database_url),
                        (ENV_DAGSTER_STORAGE_URL, settings.dagster_storage_url),
                        (ENV_DASHBOARD_DATABASE_URL, settings.dashboard.database_url)):
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not text:
            continue
        try:
            params = conninfo_to_dict(text.replace("postgresql+psycopg2://", "postgresql://", 1))
        except Exception:  # psycopg's message may quote the URL, password included: never shown
            params = None
        if params is None or not (params.get("host") or params.get("dbname") or text.startswith("postgres")):
            raise SettingsError(f"{name} is not a libpq URL or conninfo; set it like "
                                "postgresql://USER:PASSWORD@HOST:5432/DBNAME (percent-encode @ : / % ? in the "
                                "password), or unset it to use the embedded PostgreSQL")
    if not settings.dashboard.dagster_url.startswith(("http://", "https://")):
        raise SettingsError(f"{ENV_DAGSTER_URL} must be an http(s) URL, e.g. {DEFAULT_DAGSTER_URL}")
    card = settings.scoring.scorecard
    shipped = sorted(p.stem for p in SCORECARD_DIR.glob("*.yaml"))
    if card not in shipped and not Path(card).expanduser().is_file():
        raise SettingsError(f"{ENV_SCORECARD}={card} is neither a shipped scorecard ({', '.join(shipped)}) nor a "
                            "YAML file; set one of those names or the path of your scorecard YAML")
    catalogue = settings.scoring.feature_catalogue
    if catalogue is not None and not catalogue.is_file():
        raise SettingsError(f"{ENV_FEATURE_CATALOGUE}: {catalogue} is not a file; set the path of your feature "
                            "catalogue CSV (columns of dbt_project/seeds/feature_catalogue.csv) or unset it")
