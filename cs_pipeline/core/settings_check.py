"""Checks of resolved settings that a field's type alone cannot make: database URLs parse, the dagster URL is
http(s), the scorecard and the feature catalogue exist. Messages are one line naming the variable and the
fix, and never echo a URL (it may carry a password). Pure: no database, no environment read.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from cs_pipeline.core.settings import (
    DEFAULT_DAGSTER_URL,
    ENV_DAGSTER_STORAGE_URL,
    ENV_DAGSTER_URL,
    ENV_DASHBOARD_DATABASE_URL,
    ENV_DATABASE_URL,
    ENV_FEATURE_CATALOGUE,
    ENV_SCORECARD,
    SCORECARD_DIR,
    Settings,
    SettingsError,
)


def check_settings(settings: Settings) -> None:
    """What a value alone cannot say: URLs parse, the scorecard and the catalogue exist (called by
    ``Settings.from_env``).

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
