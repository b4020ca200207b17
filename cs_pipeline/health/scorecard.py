"""Scorecards as data: YAML files validated with pydantic on load.

A scorecard has a ``version`` (stored with every score), risk-level thresholds, trend thresholds,
components and per-segment overrides. Each component reads one metric of
``marts.supplier_engagement_daily`` and turns it into points with a rule:

* ``step``: tiers ``{lt: x, points: p}`` (or ``gt`` for "higher is better"), first match wins, else
  ``otherwise`` points;
* ``linear``: ``weight x clip((metric - lower) / (upper - lower), 0, 1)`` (``lower > upper`` for "lower
  is better");
* ``percentile``: ``weight x`` the metric's percentile rank among suppliers of the same segment
  (``by`` columns) on the same day, so a product judged by its own cadence rather than a fixed bar.

A component whose metric is null is *missing*: it is left out and the present weights are rescaled to
100 (DOMAIN.md). ``fallback_metric`` fills a null metric first (days since signup for a supplier who
never logged in, so that recency is 0 points rather than missing). Seasonality (``seasonal: true`` on a
component, and the scorecard's ``seasonality`` block) divides the metric by the vendor category's usual
level for that calendar month before the rule applies.

Shipped scorecards live in ``cs_pipeline/config/scorecards/``: ``ws168`` (the WS-168 specification,
default) and ``ws133`` (the WS-133 split).

Errors name the file and the field: ``ScorecardError: ws168.yaml: components.0.weight: ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cs_pipeline.core.paths import CONFIG_DIR
from cs_pipeline.core.config import load_yaml_model

SCORECARD_DIR = CONFIG_DIR / "scorecards"
SEGMENT_COLUMNS = ("vendor_category", "tier", "lifecycle_stage")
RISK_LEVELS = ("healthy", "at_risk", "critical")
#: Other tools' risk vocabulary, offered as an alias of the stored level (DOMAIN.md).
RISK_ALIASES = {"healthy": "low", "at_risk": "medium", "critical": "high"}


class ScorecardError(ValueError):
    """A scorecard file is missing or invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tier(_Strict):
    """One step: applies when the metric is below ``lt`` (or above ``gt``)."""

    lt: float | None = None
    gt: float | None = None
    points: float = Field(ge=0)

    @model_validator(mode="after")
    def _one_bound(self) -> Tier:
        if (self.lt is None) == (self.gt is None):
            raise ValueError("a tier needs exactly one of lt or gt")
        return self


class StepRule(_Strict):
    type: Literal["step"]
    tiers: list[Tier] = Field(min_length=1)
    otherwise: float = Field(default=0, ge=0)


class LinearRule(_Strict):
    type: Literal["linear"]
    lower: float
    upper: float

    @model_validator(mode="after")
    def _distinct(self) -> LinearRule:
        if self.lower == self.upper:
            raise ValueError("lower and upper must differ")
        return self


class PercentileRule(_Strict):
    type: Literal["percentile"]
    by: list[Literal["vendor_category", "tier", "lifecycle_stage"]] = Field(default_factory=lambda: ["vendor_category"])
    higher_is_better: bool = True


Rule = Annotated[StepRule | LinearRule | PercentileRule, Field(discriminator="type")]


class Component(_Strict):
    """A weighted component: ``weight`` is its maximum points."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    metric: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    fallback_metric: str | None = None
    weight: float = Field(ge=0, le=100)
    rule: Rule
    seasonal: bool = False
    #: How a driver reads, with {metric} (the raw metric, formatted per ``unit``).
    phrase: str
    unit: Literal["days", "percent", "count", "ratio", "score"] = "count"

    @model_validator(mode="after")
    def _points_within_weight(self) -> Component:
        if isinstance(self.rule, StepRule):
            top = max([t.points for t in self.rule.tiers] + [self.rule.otherwise])
            if top > self.weight:
                raise ValueError(f"rule gives {top} points, more than the weight {self.weight}")
        return self


class RiskLevels(_Strict):
    """health_score < critical_below -> critical; < at_risk_below -> at_risk; else healthy."""

    critical_below: float = Field(default=40, ge=0, le=100)
    at_risk_below: float = Field(default=70, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> RiskLevels:
        if self.critical_below > self.at_risk_below:
            raise ValueError("critical_below must not exceed at_risk_below")
        return self


class Trend(_Strict):
    """score_delta_7d >= improving_at -> improving; <= declining_at -> declining; else stable."""

    improving_at: float = 5
    declining_at: float = -5


class Seasonality(_Strict):
    """Judge seasonal components against the vendor category's usual level in the calendar month."""

    enabled: bool = True
    #: Observations (supplier-days) a category-month needs before its index is trusted.
    min_observations: int = Field(default=200, ge=1)
    #: The index is clipped to this range, so that a thin month cannot excuse everything.
    min_index: float = Field(default=0.4, gt=0)
    max_index: float = Field(default=1.6, gt=0)


class ComponentOverride(_Strict):
    weight: float | None = Field(default=None, ge=0, le=100)
    rule: Rule | None = None


class SegmentOverride(_Strict):
    """Changes for suppliers matching every listed segment value (first matching override wins)."""

    name: str
    when: dict[Literal["vendor_category", "tier", "lifecycle_stage"], list[str]] = Field(min_length=1)
    components: dict[str, ComponentOverride] = Field(default_factory=dict)
    risk_levels: RiskLevels | None = None


class Scorecard(_Strict):
    """A validated scorecard. ``version`` is stored with every score it produces."""

    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    name: str
    source: str = ""
    risk_levels: RiskLevels = RiskLevels()
    trend: Trend = Trend()
    seasonality: Seasonality = Seasonality()
    components: list[Component] = Field(min_length=1)
    overrides: list[SegmentOverride] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Scorecard:
        names = [c.name for c in self.components]
        if len(set(names)) != len(names):
            raise ValueError("component names must be unique")
        if sum(c.weight for c in self.components) <= 0:
            raise ValueError("the component weights must add up to more than 0")
        for override in self.overrides:
            unknown = set(override.components) - set(names)
            if unknown:
                raise ValueError(f"override {override.name!r} names unknown component(s): {sorted(unknown)}")
        return self

    def for_override(self, override: SegmentOverride | None) -> Scorecard:
        """This scorecard with ``override`` applied (components re-weighted or re-ruled)."""
        if override is None:
            return self
        components = []
        for c in self.components:
            change = override.components.get(c.name)
            if change is None:
                components.append(c)
                continue
            components.append(c.model_copy(update={k: v for k, v in
                                                   (("weight", change.weight), ("rule", change.rule)) if v is not None}))
        return self.model_copy(update={"components": components,
                                       "risk_levels": override.risk_levels or self.risk_levels,
                                       "overrides": []})

    @property
    def seasonal_metrics(self) -> list[str]:
        """The metrics of seasonal components (judged against the category's usual month), sorted."""
        return sorted({c.metric for c in self.components if c.seasonal})


def load_scorecard(name_or_path: str | Path) -> Scorecard:
    """Load a shipped scorecard by name (``ws168``, ``ws133``) or a YAML file by path.

    Raises:
        ScorecardError: missing file, invalid YAML, or invalid fields (message names file and field).
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = SCORECARD_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in SCORECARD_DIR.glob("*.yaml")))
        raise ScorecardError(f"{path}: scorecard not found (shipped: {shipped})")
    return load_yaml_model(path, Scorecard, ScorecardError, "scorecard")


def shipped_scorecards() -> dict[str, Scorecard]:
    """Every scorecard shipped in ``cs_pipeline/config/scorecards``, by file stem."""
    return {p.stem: load_scorecard(p) for p in sorted(SCORECARD_DIR.glob("*.yaml"))}
