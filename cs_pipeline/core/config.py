"""Loading configuration a CS team edits (YAML) into pydantic models, with errors that name the file
and the field: ``ws168.yaml: components.0.weight: Input should be less than or equal to 100``."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base of every configuration model a CS team edits (scorecards, milestones, playbook, import
    mappings): an unknown key is an error, so a typo never passes silently, and loaded values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def describe_errors(exc: ValidationError) -> str:
    """``field.path: message; ...`` for every error of ``exc``."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def load_yaml_model(path: Path, model: type[M], error: type[Exception], what: str) -> M:
    """Parse ``path`` and validate it as ``model``.

    Raises:
        error: the file is missing (``<path>: <what> not found``), is not valid YAML, or does not
            validate (``<file name>: <field path>: <message>``).
    """
    if not path.is_file():
        raise error(f"{path}: {what} not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise error(f"{path.name}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise error(f"{path.name}: expected a mapping at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(f"{path.name}: {describe_errors(exc)}") from exc
