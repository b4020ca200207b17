"""The one place that builds the environment of child processes (dbt, the Dagster webserver, daemon and
code servers, Streamlit, the embedded server's holder) and of libraries that read the environment
themselves. With ``cs_pipeline.core.settings`` (which reads the variables), the only module that touches
``os.environ`` (tests/test_layout.py keeps it so).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping

from cs_pipeline.core.settings import (
    ENV_DAGSTER_HOME,
    ENV_HOME,
    ENV_LANDING_DIR,
    Settings,
)


def child_env(settings: Settings | None = None, **extra: str) -> dict[str, str]:
    """The environment of a child process (dbt, Dagster webserver/daemon/code servers, Streamlit, the
    embedded server's holder): this process's environment, plus ``settings``' resolved paths as absolute
    ``CS_PIPELINE_HOME`` / ``CS_PIPELINE_LANDING_DIR`` / ``DAGSTER_HOME`` (children may run in another
    directory), plus ``extra``."""
    env = dict(os.environ)
    if settings is not None:
        env[ENV_HOME] = str(settings.home)
        env[ENV_LANDING_DIR] = str(settings.landing_dir)
        env[ENV_DAGSTER_HOME] = str(settings.dagster_instance_dir)
    env.update(extra)
    return env


def export_for_children(settings: Settings, **extra: str) -> None:
    """Write ``child_env(settings, **extra)``'s additions into this process's environment, for children
    that a library starts with the inherited environment (``dagster dev``, dagster-dbt). Idempotent."""
    for key, value in child_env(settings, **extra).items():
        if os.environ.get(key) != value:
            os.environ[key] = value


@contextlib.contextmanager
def exported(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in this process's environment for the block and restore what was there after:
    dagster-dbt's ``DbtCliResource.cli`` takes its subprocess environment from ``os.environ``."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def put_on_path(bin_dir: str) -> None:
    """Put ``bin_dir`` first on this process's ``PATH`` (inherited by children) unless it is there."""
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def set_library_defaults() -> None:
    """Defaults for libraries that read the environment themselves: Great Expectations' analytics off
    (no network calls) unless the user decided otherwise."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
