"""The `[tool.dg]` configuration of pyproject.toml: `dg list defs` / `dg check defs` run from the project's
virtual environment without activating it (`.venv/bin/dg ...`, as the docs show) print no warning about
the active virtual environment. Read through dg's own project context (dagster_dg_core), the code path
those commands take before loading the definitions."""

from __future__ import annotations

from pathlib import Path

from dagster_dg_core.context import DgContext

ROOT = Path(__file__).resolve().parent.parent


def test_dg_project_context_loads_without_a_venv_warning(tmp_path, monkeypatch, capsys):
    # A project `.venv` beside pyproject.toml and no $VIRTUAL_ENV: what `.venv/bin/dg list defs` sees.
    # A copy of pyproject.toml in a temporary project, so the check does not depend on this checkout's venv.
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    (tmp_path / "cs_pipeline").mkdir()
    (tmp_path / "cs_pipeline" / "__init__.py").write_text("")
    (tmp_path / ".venv").mkdir()
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    context = DgContext.for_project_environment(tmp_path, {})
    assert context.is_project
    assert context.config.project.root_module == "cs_pipeline"
    assert context.project_python_executable == tmp_path / ".venv" / "bin" / "python"
    out = capsys.readouterr()
    assert "virtual environment" not in out.err + out.out
    assert "deprecated" not in out.err + out.out
