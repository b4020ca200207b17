"""Playbooks as data (YAML, pydantic-validated): rules, conditions, actions, cooldowns and caps.

The default playbook (``cs_pipeline/config/playbook.yaml``) is DOMAIN.md's: new supplier inactive 7
days after setup -> re-engagement email with tips + check-in call task; healthy -> at_risk ->
re-engagement email + in-app nudge toward the least adopted core feature; escalation to critical ->
check-in call task + alert email to the CS team; milestone achieved -> celebration; and, only while a
churn model scores (issue 26), churn probability at least 0.3 and up 0.1 in 7 days -> check-in call task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from cs_pipeline.core.config import StrictModel, load_yaml_model
from cs_pipeline.core.paths import CONFIG_DIR

PLAYBOOK_YAML = CONFIG_DIR / "playbook.yaml"
TEMPLATE_DIR = CONFIG_DIR / "templates"
CHANNELS = ("email", "in_app", "call")
#: The rule name recorded for interventions launched by hand (job ``manual_intervention``, ``cs-pipeline intervene``).
MANUAL_RULE = "manual"
#: Priority of manual interventions (above every playbook rule).
MANUAL_PRIORITY = 1000
CALL_TYPES = ("onboarding_call", "check_in", "technical_support", "upgrade_discussion")
LEVELS = ("healthy", "at_risk", "critical")
#: What a rule may require (``Rule.requires``): ``churn_model``, a churn model scoring the day (issue 26).
REQUIREMENTS = ("churn_model",)


class PlaybookError(ValueError):
    """The playbook is missing or invalid; the message names the file and the field."""


class RiskChange(StrictModel):
    from_: list[Literal[LEVELS]] = Field(alias="from", min_length=1)  # type: ignore[valid-type]
    to: list[Literal[LEVELS]] = Field(min_length=1)  # type: ignore[valid-type]


class ScoreDrop(StrictModel):
    points: float = Field(gt=0)
    days: Literal[7, 30] = 7


class ChurnProbability(StrictModel):
    """The churn model's ``churn_probability`` (0-1, ``marts.customer_health``) is at least ``at_least``
    and, with ``rise_7d``, exceeds its value 7 days earlier by at least ``rise_7d`` (probability, not
    percent). Both days must be scored by the same ``churn_model_version`` (a new model is not a rise); a
    null probability (no model, no score) never matches."""

    at_least: float = Field(ge=0, le=1)
    rise_7d: float | None = Field(default=None, gt=0, le=1)


class Condition(StrictModel):
    """All given parts must hold for the supplier on the day (and not all of them the day before)."""

    risk_changed: RiskChange | None = None
    score_drop: ScoreDrop | None = None
    lifecycle_stage: list[Literal["onboarding", "active", "paused"]] | None = None
    days_since_onboarded_at_least: int | None = Field(default=None, ge=0)
    days_since_last_login_at_least: int | None = Field(default=None, ge=0)
    risk_level: list[Literal[LEVELS]] | None = None  # type: ignore[valid-type]
    churn_probability: ChurnProbability | None = None
    milestone_achieved: bool = False
    #: With milestone_achieved: only milestones achieved within this many days are celebrated (a first
    #: run over old history does not congratulate anybody for last year's achievements).
    milestone_max_age_days: int = Field(default=7, ge=0)
    #: False (default): the rule fires on a *transition*, when the condition holds on the day and did not
    #: on the supplier's previous scored day (within the playbook's ``transition_max_gap_days``).
    #: True: the rule fires every day the condition holds; cooldowns limit the repeats (the critical alert).
    every_day: bool = False

    @model_validator(mode="after")
    def _not_empty(self) -> Condition:
        parts = self.model_dump(exclude={"milestone_max_age_days", "every_day"})
        if not any(v not in (None, False) for v in parts.values()):
            raise ValueError("a condition needs at least one part")
        return self


class Action(StrictModel):
    channel: Literal[CHANNELS]  # type: ignore[valid-type]
    template: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    audience: Literal["supplier", "cs_team"] = "supplier"
    delay_days: int = Field(default=0, ge=0, le=60)
    call_type: Literal[CALL_TYPES] | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _template_exists(self) -> Action:
        if not (TEMPLATE_DIR / f"{self.template}.txt").is_file():
            raise ValueError(f"template {self.template!r} not found in {TEMPLATE_DIR}")
        if self.channel == "call" and self.call_type is None:
            raise ValueError("a call action needs a call_type")
        return self


class Rule(StrictModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    priority: int = Field(ge=0)
    condition: Condition
    actions: list[Action] = Field(min_length=1)
    #: ``churn_model``: the rule is evaluated only on days a churn model scored (``ops.churn_models`` has a
    #: model and the day's ``marts.customer_health`` rows carry ``churn_probability``); otherwise it is left
    #: out of the day's plan and the reason is logged. Required by a ``churn_probability`` condition.
    requires: Literal[REQUIREMENTS] | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _model_required(self) -> Rule:
        if self.condition.churn_probability is not None and self.requires != "churn_model":
            raise ValueError("a churn_probability condition needs `requires: churn_model` on its rule")
        return self


class Playbook(StrictModel):
    version: str
    cooldown_days: int = Field(default=7, ge=0)
    weekly_cap: int = Field(default=3, ge=1)
    daily_cap: int = Field(default=500, ge=1)
    control_share: float = Field(default=0.10, ge=0, lt=1)
    #: A transition ("newly" at risk, ...) needs a previous score of the supplier at most this many days
    #: before the day; without one the supplier is not newly matching (a missing day never means mass contact).
    transition_max_gap_days: int = Field(default=3, ge=1, le=30)
    #: Hours after planning during which an undelivered message is retried by later runs (then ``expired``).
    retry_window_hours: int = Field(default=48, ge=1, le=24 * 30)
    #: Days after the trigger at which a case's outcome (health score change, churn) is read.
    outcome_days: int = Field(default=30, ge=1, le=365)
    cs_team_email: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")
    from_email: str
    rules: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Playbook:
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique")
        if MANUAL_RULE in names:
            raise ValueError(f"the rule name {MANUAL_RULE!r} is reserved for manual interventions")
        return self

    def rule(self, name: str) -> Rule:
        """The rule called ``name``.

        Raises:
            KeyError: no such rule.
        """
        for r in self.rules:
            if r.name == name:
                return r
        raise KeyError(f"playbook {self.version} has no rule {name!r}")


def load_playbook(path: Path = PLAYBOOK_YAML) -> Playbook:
    """Load and validate a playbook YAML file.

    Raises:
        PlaybookError: missing file, invalid YAML or invalid fields (the message names file and field).
    """
    return load_yaml_model(path, Playbook, PlaybookError, "playbook")
