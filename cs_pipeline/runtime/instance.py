"""Dagster instance set-up for the CLI and the runtime: DAGSTER_HOME under CS_PIPELINE_HOME, storage in PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

from cs_pipeline.core.child_env import export_for_children
from cs_pipeline.core.credentials import without_password
from cs_pipeline.core.settings import ENV_DAGSTER_STORAGE_URL, Settings
from cs_pipeline.core.warehouse import Endpoints, resolve_endpoints

DAGSTER_YAML = """\
# Written by cs-pipeline. Runs, event logs and schedules live in PostgreSQL (dagster-postgres), at the
# storage URL cs-pipeline resolved (CS_PIPELINE_DAGSTER_STORAGE_URL, or database "dagster" on the
# warehouse's server), written here so that Dagster's own CLI (dagster dev, dagster asset materialize)
# finds it with DAGSTER_HOME set. On the embedded server, keep it up with `cs-pipeline db start`.
# The password is not here: libpq reads it from the 0600 file the URL's passfile= names, so that it never
# reaches the --instance-ref argument dagster dev passes to its webserver, daemon and code servers.
storage:
  postgres:
    postgres_url: {url}
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 2
    # One run at a time writes the marts: each run carries running totals from the day before its window
    # and rebuilds up to the newest built day, so two at once would read each other's half-built days.
    tag_concurrency_limits:
      - key: cs_pipeline/writes_marts
        limit: 1
telemetry:
  enabled: false
"""


#: The libpq password file of the Dagster storage, relative to ``CS_PIPELINE_HOME`` (0600 in a 0700 folder).
STORAGE_PASSFILE = Path("secrets") / "dagster_storage.pgpass"


def prepare_dagster_home(settings: Settings) -> tuple[Path, Endpoints]:
    """Resolve the warehouse, point DAGSTER_HOME at ``$CS_PIPELINE_HOME/dagster_home`` unless the user
    set DAGSTER_HOME, write its dagster.yaml with the resolved storage URL (when the file is ours), and
    export the storage URL.

    Returns (DAGSTER_HOME, endpoints), the storage URL without its password (``STORAGE_PASSFILE`` holds
    it, see ``without_password``). Exports the resolved paths and that URL for the Dagster webserver,
    daemon and run workers this process starts (``export_for_children``).
    """
    endpoints = resolve_endpoints(settings)
    storage = without_password(endpoints.dagster_storage, settings.home / STORAGE_PASSFILE)
    endpoints = Endpoints(endpoints.warehouse, storage, endpoints.embedded_socket_dir)
    path = settings.dagster_instance_dir
    path.mkdir(parents=True, exist_ok=True)
    config = path / "dagster.yaml"
    if not config.exists() or config.read_text().startswith("# Written by cs-pipeline"):
        text = DAGSTER_YAML.format(url=json.dumps(endpoints.dagster_storage))  # a JSON string is valid YAML
        if not config.exists() or config.read_text() != text:
            config.write_text(text)
        config.chmod(0o600)
    # Child processes (webserver, daemon, run workers) may run in another directory: absolute paths.
    export_for_children(settings, **{ENV_DAGSTER_STORAGE_URL: endpoints.dagster_storage})
    return path, endpoints


def get_instance(settings: Settings):
    """The persistent Dagster instance of this deployment (``DagsterInstance.get()`` after set-up), with
    its storages holding pooled connections.

    dagster-postgres opens a new connection for every event it writes (``NullPool``): with the
    password authentication of our servers that is two handshakes per event, 68 ms on this machine, and a
    backfill window writes about a thousand events (a materialisation per asset and day). Dagster's own
    ``optimize_for_webserver`` switches the storages to a pool (one connection kept, up to 5 more):
    14 ms per event (issue 18). Connections are recycled after 240 s (below common idle timeouts of
    load balancers); their statement timeout is 0, i.e. none, as for the per-event connections before.
    """
    import dagster as dg

    prepare_dagster_home(settings)
    instance = dg.DagsterInstance.get()
    instance.optimize_for_webserver(statement_timeout=0, pool_recycle=240, max_overflow=5)
    return instance
