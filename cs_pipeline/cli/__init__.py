"""The ``cs-pipeline`` command line (typer).

Every command reads its settings from the environment (see the README); the embedded PostgreSQL is
started on demand and stopped when the command exits. The commands live in thin modules (``run``,
``data``, ``db``, ``interventions``, ``scorecard``, ``ui``) that parse arguments, call the stages and
``cs_pipeline.runtime``, and print; no SQL and no private Dagster imports here (tests/test_layout.py).
"""

from __future__ import annotations

from cs_pipeline.cli import data, db, interventions, model, run, scorecard, ui  # noqa: F401  (register the commands)
from cs_pipeline.cli.common import app

#: The order ``cs-pipeline --help`` lists the commands in; others follow in the order they were added, then
#: the sub-command groups.
COMMAND_ORDER = ["generate", "run", "materialize", "demo", "import", "report", "intervene", "dbt", "dev", "dashboard"]


def _rank(command) -> int:
    name = command.name or command.callback.__name__
    return COMMAND_ORDER.index(name) if name in COMMAND_ORDER else len(COMMAND_ORDER)


app.registered_commands.sort(key=_rank)

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point ``cs-pipeline``."""
    from cs_pipeline.runtime.notices import silence_dagster_notices

    silence_dagster_notices()
    app()
