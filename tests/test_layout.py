"""The package layout (README "Layout"): every import between rooms of ``cs_pipeline`` runs down the
data path, so no folder imports a folder that imports it. A unit test: it reads the source, imports
nothing."""

from __future__ import annotations

import ast
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
    "app",            # work outside Dagster: runner, instance, summary, report, dashboard
    "cli",            # the cs-pipeline command
]


def room_of(module: str) -> str | None:
    """``cs_pipeline.health.scoring`` -> ``health``; None outside the package or for the package root."""
    parts = module.split(".")
    if parts[0] != "cs_pipeline" or len(parts) < 2:
        return None
    return parts[1]


def imports_by_room() -> dict[str, set[tuple[str, str, int]]]:
    """For every room, the (imported room, file, line) of each import of another room, including
    imports inside functions."""
    edges: dict[str, set[tuple[str, str, int]]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        source_room = room_of(module)
        if source_room is None:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names] if node.module == "cs_pipeline" \
                    else [node.module]
            for name in names:
                target = room_of(name)
                if target and target != source_room:
                    edges.setdefault(source_room, set()).add((target, str(rel), node.lineno))
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
    stages = {"ingest", "transform", "health", "interventions", "feeds", "app", "definitions", "cli"}
    bad = sorted(f"{file}:{line} imports {target}" for target, file, line in imports_by_room().get(room, set())
                 if target in stages)
    assert not bad, f"{room} must import no stage:\n" + "\n".join(bad)


def test_only_settings_reads_the_environment() -> None:
    """Issue 25: ``cs_pipeline/core/settings.py`` owns every environment variable; it also builds child
    processes' environments. No other module touches ``os.environ`` or ``os.getenv``."""
    hits = sorted(f"{path.relative_to(PACKAGE.parent)}:{n}" for path in PACKAGE.rglob("*.py")
                  if path != PACKAGE / "core" / "settings.py"
                  for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                  if "os.environ" in line or "getenv(" in line)
    assert not hits, "read settings through cs_pipeline.core.settings instead:\n" + "\n".join(hits)
