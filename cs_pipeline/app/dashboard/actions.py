"""Quick actions: submit a ``manual_intervention`` run to the running Dagster webserver (GraphQL).

The dashboard's database connection stays read-only: an action is a Dagster run of the pipeline's own
``manual_intervention`` job (the intervention stage owns its rules: opt-outs, cooldowns, the record in
ops.interventions). The buttons are shown only when that job exists in a reachable Dagster webserver
(``CS_PIPELINE_DAGSTER_URL``, default http://127.0.0.1:3000, as started by ``cs-pipeline dev``).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

import requests

from cs_pipeline.core.settings import DEFAULT_DAGSTER_URL, ENV_DAGSTER_URL, Settings

__all__ = ["DEFAULT_DAGSTER_URL", "ENV_DAGSTER_URL", "dagster_url", "find_job", "locate_manual_job"]
MANUAL_JOB = "manual_intervention"
CHANNELS = {"email": "E-mail", "in_app": "In-app message", "call": "Call task"}

_JOBS_QUERY = """
query DashboardJobs {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes { name location { name } jobs { name solidHandles { handleID solid { definition { ... on SolidDefinition { configField { configType { key } } } } } } } }
    }
  }
}
"""


@dataclass(frozen=True)
class JobLocation:
    """Where a job lives in the Dagster workspace, and which op takes its config."""

    repository: str
    location: str
    op: str


def dagster_url(settings: Settings) -> str:
    """``settings.dashboard.dagster_url``: ``CS_PIPELINE_DAGSTER_URL`` or http://127.0.0.1:3000."""
    return settings.dashboard.dagster_url


def find_job(payload: dict, job: str = MANUAL_JOB) -> JobLocation | None:
    """Find ``job`` in the answer of ``_JOBS_QUERY`` (GraphQL ``data``); the op is the one with a config
    schema (the first, when several). None when the job is absent."""
    repos = (payload.get("repositoriesOrError") or {}).get("nodes") or []
    for repo in repos:
        for candidate in repo.get("jobs") or []:
            if candidate.get("name") != job:
                continue
            handles = candidate.get("solidHandles") or []
            configured = [h["handleID"] for h in handles
                          if ((h.get("solid") or {}).get("definition") or {}).get("configField")]
            op = (configured or [h["handleID"] for h in handles] or [""])[0]
            return JobLocation(repository=repo["name"], location=repo["location"]["name"], op=op)
    return None


def locate_manual_job(url: str, timeout: float = 2.0) -> JobLocation | None:
    """Ask the Dagster webserver at ``url`` whether ``manual_intervention`` exists. None when it does not
    or the webserver is not reachable (the dashboard then shows no quick actions)."""
    try:
        response = requests.post(f"{url}/graphql", json={"query": _JOBS_QUERY}, timeout=timeout)
        response.raise_for_status()
        return find_job(response.json().get("data") or {})
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return None


def manual_run_config(where: JobLocation, supplier_id: str, channel: str, template: str = "",
                      message: str = "", force: bool = False) -> dict:
    """The run config of one manual intervention (keys fixed by the interventions stage: supplier_id,
    channel email|in_app|call, template, message, force).

    Raises:
        ValueError: unknown channel.
    """
    if channel not in CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    config = {"supplier_id": supplier_id, "channel": channel, "template": template, "message": message,
              "force": force}
    return {"ops": {where.op: {"config": config}}}


def _client(url: str):
    from dagster_graphql import DagsterGraphQLClient

    parsed = urlparse(url)
    return DagsterGraphQLClient(parsed.hostname or "127.0.0.1", port_number=parsed.port,
                                use_https=parsed.scheme == "https")


def submit_manual_intervention(url: str, where: JobLocation, run_config: dict) -> str:
    """Launch ``manual_intervention`` with ``run_config``; returns the Dagster run id.

    Raises:
        dagster_graphql.DagsterGraphQLClientError: the webserver refused the run (the message says why).
    """
    return _client(url).submit_job_execution(MANUAL_JOB, repository_location_name=where.location,
                                             repository_name=where.repository, run_config=run_config,
                                             tags={"cs_pipeline/source": "dashboard"})


def run_status(url: str, run_id: str) -> str:
    """The run's status name (QUEUED, STARTED, SUCCESS, FAILURE, ...), or 'UNKNOWN' when unreachable."""
    try:
        return _client(url).get_run_status(run_id).value
    except Exception:  # the webserver went away or forgot the run: say so, do not break the page
        return "UNKNOWN"
