"""The package layout (README "Layout"): every import between rooms of ``cs_pipeline`` runs down the
data path, so no folder imports a folder that imports it. A unit test: it reads the source, imports
nothing."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cs_pipeline"

#: Rooms from the bottom up. A module may import its own room and rooms below it, never above.
LAYERS = [
    "core",           # the platform every stage uses
    "quality",        # Great Expectations gates: stages call it, it imports no stage
    "ingest",         # landing files -> raw
    "transform",      # dbt: raw -> staging -> intermediate -> marts
    "health",         # marts -> customer_health, success_milestones, backtest
    "interventions",  # customer_health -> playbook -> e-mail, in-app, calls
    "feeds",          # what writes landing files (generator, import mappings)
    "definitions",    # merges the stages' Definitions
    "runtime",        # starting and stopping things: embedded server, Dagster instance, run_range
    "app",            # what people look at: summary, report, dashboard
    "cli",            # the cs-pipeline command
]


def room_of(module: str) -> str | None:
    """``cs_pipeline.health.scoring`` -> ``health``; None outside the package or for the package root."""
    parts = module.split(".")
    if parts[0] != "cs_pipeline" or len(parts) < 2:
        return None
    return parts[1]


def imported_names(tree: ast.AST) -> list[tuple[str, int]]:
    """(module, line) of every absolute import in ``tree``, including imports inside functions;
    ``from cs_pipeline import x`` also gives ``cs_pipeline.x``."""
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names] if node.module == "cs_pipeline" \
                else [node.module]
        found += [(name, node.lineno) for name in names]
    return found


def imports_between_rooms() -> list[tuple[str, str, str, int]]:
    """(room, imported module, file, line) of each import of another room of ``cs_pipeline``."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        source_room = room_of(module)
        if source_room is None:
            continue
        for name, line in imported_names(ast.parse(path.read_text(encoding="utf-8"))):
            target = room_of(name)
            if target and target != source_room:
                found.append((source_room, name, str(rel), line))
    return found


def imports_by_room() -> dict[str, set[tuple[str, str, int]]]:
    """For every room, the (imported room, file, line) of each import of another room, including
    imports inside functions."""
    edges: dict[str, set[tuple[str, str, int]]] = {}
    for source_room, name, file, line in imports_between_rooms():
        edges.setdefault(source_room, set()).add((room_of(name), file, line))
    return edges


def test_every_room_is_known() -> None:
    rooms = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.stem != "__init__")}
    assert rooms <= set(LAYERS), f"rooms missing from LAYERS (add them where they belong): {rooms - set(LAYERS)}"


def test_imports_run_down_the_data_path() -> None:
    rank = {room: i for i, room in enumerate(LAYERS)}
    upward = sorted(f"{file}:{line}: {room} imports {target}"
                    for room, targets in imports_by_room().items()
                    for target, file, line in targets if rank[target] > rank[room])
    assert not upward, "imports that run back up the layers:\n" + "\n".join(upward)


def test_no_folder_loop() -> None:
    graph = {room: {t for t, _, _ in targets} for room, targets in imports_by_room().items()}

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    loops = sorted(room for room in graph if room in reach(room))
    assert not loops, f"rooms on an import loop: {loops}"


@pytest.mark.parametrize("room", ["quality", "core"])
def test_platform_rooms_import_no_stage(room: str) -> None:
    stages = {"ingest", "transform", "health", "interventions", "feeds", "app", "definitions", "runtime", "cli"}
    bad = sorted(f"{file}:{line} imports {target}" for target, file, line in imports_by_room().get(room, set())
                 if target in stages)
    assert not bad, f"{room} must import no stage:\n" + "\n".join(bad)


def test_only_settings_reads_the_environment() -> None:
    """Issue 25: ``cs_pipeline/core/settings.py`` owns every environment variable and
    ``cs_pipeline/core/child_env.py`` builds child processes' environments. No other module touches
    ``os.environ`` or ``os.getenv``."""
    hits = sorted(f"{path.relative_to(PACKAGE.parent)}:{n}" for path in PACKAGE.rglob("*.py")
                  if path not in (PACKAGE / "core" / "settings.py", PACKAGE / "core" / "child_env.py")
                  for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                  if "os.environ" in line or "getenv(" in line)
    assert not hits, "read settings through cs_pipeline.core.settings instead:\n" + "\n".join(hits)


#: The stages of the data path: each imports the platform (settings, core, quality), never another stage
#: (issue 25); what two stages share belongs in core.
STAGES = ["ingest", "transform", "health", "interventions", "feeds"]

#: The one exception: feeds writes the landing files ingest reads, so it uses ingest's landing contract
#: (the sources' columns and the landing file-name rule) rather than a copy of it.
LANDING_CONTRACT = {("feeds", "cs_pipeline.ingest.sources"), ("feeds", "cs_pipeline.ingest.landing")}


def test_no_stage_imports_another_stage() -> None:
    bad = sorted(f"{file}:{line}: {room} imports {name}" for room, name, file, line in imports_between_rooms()
                 if room in STAGES and room_of(name) in STAGES and (room, name) not in LANDING_CONTRACT)
    assert not bad, "a stage imports another stage (move what they share into core):\n" + "\n".join(bad)


#: SQL in a string: a statement's opening words (any case) or an upper-case SELECT.
SQL_PATTERN = re.compile(
    r"\b(insert\s+into|delete\s+from|update\s+[\w.\"]+\s+set|truncate\s+(table\s+)?[\w.\"]+|"
    r"(create|drop|alter)\s+(or\s+replace\s+)?(table|schema|index|view|role|database|function|extension)|"
    r"grant\s+\w+\s+on|select\s+[\w.*,()\s\"]+\s+from\s+[\w\"]+\.)\b|(?-i:\bSELECT\b)", re.IGNORECASE)
SQL_MODULES = ("psycopg", "psycopg2", "sqlalchemy", "sqlite3", "asyncpg", "cs_pipeline.core.db")
DB_CALLS = {"execute", "executemany", "cursor", "copy_expert"}


def thin_command_violations(source: str) -> list[str]:
    """What a command module must not hold (issue 25): SQL in a string, an import of a database driver,
    psycopg's ``sql`` or ``cs_pipeline.core.db``, a ``.execute(...)``-style database call, or a private
    Dagster import (``dagster._...``). One line per finding: ``line: what``."""
    tree = ast.parse(source)
    found = []
    for name, line in imported_names(tree):
        if any(name == m or name.startswith(m + ".") for m in SQL_MODULES):
            found.append(f"{line}: imports {name} (database access belongs in a stage or in runtime)")
        if name.startswith("dagster._") or ".dagster._" in name:
            found.append(f"{line}: imports {name} (private Dagster API: wrap it in runtime)")
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL_PATTERN.search(node.value):
            found.append(f"{node.lineno}: SQL in a string: {node.value.strip()[:60]!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in DB_CALLS:
            found.append(f"{node.lineno}: database call .{node.func.attr}(...)")
    return found


@pytest.mark.parametrize(("source", "finding"), [
    ("import psycopg", "imports psycopg"),
    ("from psycopg import sql", "imports psycopg"),
    ("from cs_pipeline.core.db import read_frame", "imports cs_pipeline.core.db"),
    ("from dagster._core.selector.subset_selector import parse_asset_selection", "private Dagster"),
    ("import dagster._utils.warnings", "private Dagster"),
    ("q = 'SELECT max(as_of_date) FROM marts.supplier_engagement_daily'", "SQL in a string"),
    ("q = f'select status from ops.interventions where id = {i}'", "SQL in a string"),
    ("q = 'DELETE FROM raw.suppliers WHERE day = %s'", "SQL in a string"),
    ("q = 'insert into ops.interventions (a) values (%s)'", "SQL in a string"),
    ("q = 'CREATE TABLE IF NOT EXISTS ops.x (a int)'", "SQL in a string"),
    ("conn.execute(query)", "database call .execute"),
])
def test_the_thin_command_rule_finds(source: str, finding: str) -> None:
    assert any(finding in line for line in thin_command_violations(source)), thin_command_violations(source)


@pytest.mark.parametrize("source", [
    "import dagster as dg",
    "help_text = 'Assets: keys like raw/suppliers, or Dagster selection syntax (group:health).'",
    "note = 'Select the scorecard to refit: a YAML path or a shipped name.'",
    "job.execute_in_process(instance=instance)",
    "from cs_pipeline.runtime.warehouse import connect",
])
def test_the_thin_command_rule_passes(source: str) -> None:
    assert thin_command_violations(source) == []


def test_cli_has_no_sql_and_no_private_dagster_imports() -> None:
    cli = PACKAGE / "cli"
    assert (cli / "__init__.py").exists(), "cs_pipeline/cli/ is a package of command modules"
    bad = [f"{path.relative_to(PACKAGE.parent)}:{finding}" for path in sorted(cli.rglob("*.py"))
           for finding in thin_command_violations(path.read_text(encoding="utf-8"))]
    assert not bad, "cli/ parses arguments and calls functions (no SQL, no private Dagster):\n" + "\n".join(bad)
