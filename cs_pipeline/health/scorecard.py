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

What a null metric means depends on the metric (``NULL_MEANS``): "nothing happened" (no active day in
30 days, so no stickiness; never active, so no recency) gives the rule's *worst value* (the fewest points
the rule can give, or the bottom percentile rank); "this account has no such data" (no CSAT without
tickets, no ticketing integration) is *missing*: the component is left out and the present weights are
rescaled to 100 (DOMAIN.md). A component can override with ``missing: exclude | zero_points |
worst_value``. ``fallback_metric`` (optional, used by no shipped scorecard) fills a null metric from
another column before the ``missing`` policy applies; the shipped scorecards leave "never logged in" and
"never active" null, so they give the worst value (0 login-recency points in WS-168, however new the
account: before issue 13 WS-168 counted recency from signup, which gave a supplier created yesterday who
never logged in the full 30 points). Seasonality (``seasonal: true`` on a
component, and the scorecard's ``seasonality`` block) divides the metric by the vendor category's usual
level for that calendar month before the rule applies.

Tenure (``tenure_days``, days since signup or first activity) is a metric like any other: a component
``{metric: tenure_days, rule: {type: linear, lower: 0, upper: 365}}`` (or a percentile rule) gives more
points to older accounts, and ``cs-pipeline scorecard fit`` re-weights it with the others. A null tenure
(no signup date and no activity yet) is missing, not worst (``NULL_MEANS``).

Shipped scorecards live in ``cs_pipeline/config/scorecards/``: ``ws168`` (the WS-168 specification,
default, exactly as DOMAIN.md writes it: no segment overrides), ``ws133`` (the WS-133 split) and ``purchase`` (an example for purchase-based products: lifetime
metrics with percentile rules and an inactivity churn label).

Errors name the file and the field: ``ScorecardError: ws168.yaml: components.0.weight: ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, model_validator

from cs_pipeline.core.config import StrictModel, load_yaml_model
from cs_pipeline.core.paths import CONFIG_DIR

SCORECARD_DIR = CONFIG_DIR / "scorecards"


#: What a null value of a metric of ``marts.supplier_engagement_daily`` means. "nothing_happened": the
#: account did nothing that would give the metric a value, which is the worst case (``worst_value``);
#: "no_data": the account has no such data (no tickets, no integration, not yet in the window), so the
#: component is missing and the other weights are rescaled (``exclude``). Metrics not listed: "no_data".
NULL_MEANS: dict[str, Literal["nothing_happened", "no_data"]] = {
    "days_since_last_login": "nothing_happened",  # never logged in
    "days_since_last_activity": "nothing_happened",  # never active
    "stickiness": "nothing_happened",  # no active user in 30 days (DAU/MAU of 0/0)
    "client_activity_rate": "nothing_happened",  # no client active in 90 days
    "form_completion_rate": "nothing_happened",  # no form sent in 30 days
    "journey_completion_rate": "nothing_happened",  # no journey started in 30 days
    "mean_days_between_active_days": "nothing_happened",  # fewer than 2 active days ever
    "recency_to_cadence": "nothing_happened",  # fewer than 2 active days ever
    "active_days_per_30d_lifetime": "nothing_happened",
    "active_days_90d": "nothing_happened",
    "active_days_30d": "nothing_happened",
    "revenue_90d": "nothing_happened",  # nothing paid in 90 days
    "revenue_lifetime": "nothing_happened",
    "csat_30d": "no_data",  # no rated ticket
    "adoption_breadth": "no_data",
    "tenure_days": "no_data",
}
MissingPolicy = Literal["exclude", "zero_points", "worst_value"]


def null_policy(metric: str) -> MissingPolicy:
    """The default ``missing`` policy of a component reading ``metric`` (from ``NULL_MEANS``)."""
    return "worst_value" if NULL_MEANS.get(metric) == "nothing_happened" else "exclude"


class ScorecardError(ValueError):
    """A scorecard file is missing or invalid; the message names the file and the field."""


class Tier(StrictModel):
    """One step: applies when the metric is below ``lt`` (or above ``gt``)."""

    lt: float | None = None
    gt: float | None = None
    points: float = Field(ge=0)

    @model_validator(mode="after")
    def _one_bound(self) -> Tier:
        if (self.lt is None) == (self.gt is None):
            raise ValueError("a tier needs exactly one of lt or gt")
        return self


class StepRule(StrictModel):
    type: Literal["step"]
    tiers: list[Tier] = Field(min_length=1)
    otherwise: float = Field(default=0, ge=0)


class LinearRule(StrictModel):
    type: Literal["linear"]
    lower: float
    upper: float

    @model_validator(mode="after")
    def _distinct(self) -> LinearRule:
        if self.lower == self.upper:
            raise ValueError("lower and upper must differ")
        return self


class PercentileRule(StrictModel):
    type: Literal["percentile"]
    by: list[Literal["vendor_category", "tier", "lifecycle_stage"]] = Field(default_factory=lambda: ["vendor_category"])
    higher_is_better: bool = True


Rule = Annotated[StepRule | LinearRule | PercentileRule, Field(discriminator="type")]


class Component(StrictModel):
    """A weighted component: ``weight`` is its maximum points."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    label: str
    metric: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    #: Optional column that fills a null ``metric`` before ``missing`` applies (no shipped scorecard uses
    #: it: a null that means "nothing happened" should give the worst value, not another metric's).
    fallback_metric: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*$")
    weight: float = Field(ge=0, le=100)
    rule: Rule
    seasonal: bool = False
    #: How a driver reads, with {metric} (the raw metric, formatted per ``unit``).
    phrase: str
    #: How a driver reads when the metric has no value but the component is scored (``zero_points`` or
    #: ``worst_value``), e.g. "never logged in" (issue 29: not "no login for 0 days"). Unset:
    #: ``phrase`` with "no data" for {metric}.
    phrase_when_none: str | None = None
    unit: Literal["days", "percent", "count", "ratio", "score"] = "count"
    #: What a null metric gives: ``exclude`` (missing, other weights rescaled), ``zero_points``, or
    #: ``worst_value`` (the rule's worst: fewest step points, 0 linear points, bottom percentile).
    #: Unset: from the metric (``NULL_MEANS``).
    missing: MissingPolicy | None = None

    @property
    def missing_policy(self) -> MissingPolicy:
        """``missing`` if set, else what a null of the metric means (``null_policy``)."""
        return self.missing or null_policy(self.metric)

    @model_validator(mode="after")
    def _points_within_weight(self) -> Component:
        if isinstance(self.rule, StepRule):
            top = max([t.points for t in self.rule.tiers] + [self.rule.otherwise])
            if top > self.weight:
                raise ValueError(f"weight {self.weight} is below the {top} points the rule gives")
        return self


class RiskLevels(StrictModel):
    """health_score < critical_below -> critical; < at_risk_below -> at_risk; else healthy."""

    critical_below: float = Field(default=40, ge=0, le=100)
    at_risk_below: float = Field(default=70, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> RiskLevels:
        if self.critical_below > self.at_risk_below:
            raise ValueError("critical_below must not exceed at_risk_below")
        return self


class Trend(StrictModel):
    """score_delta_7d >= improving_at -> improving; <= declining_at -> declining; else stable."""

    improving_at: float = 5
    declining_at: float = -5


class Seasonality(StrictModel):
    """Judge seasonal components against the vendor category's usual level in the calendar month."""

    enabled: bool = True
    #: Observations (supplier-days) a category-month needs before its index is trusted.
    min_observations: int = Field(default=200, ge=1)
    #: The index is clipped to this range, so that a thin month cannot excuse everything.
    min_index: float = Field(default=0.4, gt=0)
    max_index: float = Field(default=1.6, gt=0)


class ComponentOverride(StrictModel):
    weight: float | None = Field(default=None, ge=0, le=100)
    rule: Rule | None = None
    missing: MissingPolicy | None = None


class Churn(StrictModel):
    """The churn label the backtest and ``scorecard fit`` use (issue 13).

    ``kind: cancellation``: the account is cancelled in (as-of day, as-of day + ``horizon_days``].
    ``kind: inactivity``: the account has no activity (of ``events`` when given, any event otherwise)
    in (as-of day, as-of day + ``horizon_days``].
    """

    kind: Literal["cancellation", "inactivity"] = "cancellation"
    horizon_days: int = Field(default=30, ge=1, le=730)
    events: list[str] | None = None

    @model_validator(mode="after")
    def _events_only_for_inactivity(self) -> Churn:
        if self.events is not None and self.kind != "inactivity":
            raise ValueError("events applies to kind: inactivity only")
        return self


class SegmentOverride(StrictModel):
    """Changes for suppliers matching every listed segment value (first matching override wins)."""

    name: str
    when: dict[Literal["vendor_category", "tier", "lifecycle_stage"], list[str]] = Field(min_length=1)
    components: dict[str, ComponentOverride] = Field(default_factory=dict)
    risk_levels: RiskLevels | None = None


class Scorecard(StrictModel):
    """A validated scorecard. ``version`` is stored with every score it produces."""

    version: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    name: str
    source: str = ""
    risk_levels: RiskLevels = RiskLevels()
    trend: Trend = Trend()
    seasonality: Seasonality = Seasonality()
    churn: Churn = Churn()
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
        for i, override in enumerate(self.overrides):
            self._override_profile(override, f"overrides.{i}")
        return self

    def _override_profile(self, override: SegmentOverride, where: str) -> Scorecard:
        """Build the profile of ``override`` through full validation (``where``: its field path)."""
        data = self.model_dump(exclude={"overrides"})
        for c in data["components"]:
            change = override.components.get(c["name"])
            if change is not None:
                c.update(change.model_dump(exclude_none=True))
        if override.risk_levels is not None:
            data["risk_levels"] = override.risk_levels.model_dump()
        try:
            return Scorecard.model_validate(data)
        except ValidationError as exc:
            details = []
            for e in exc.errors():
                loc = list(e["loc"])
                if len(loc) >= 2 and loc[0] == "components" and isinstance(loc[1], int):
                    loc = ["components", data["components"][loc[1]]["name"], *loc[2:]]
                details.append(f"{where}.{'.'.join(str(p) for p in loc)}: {e['msg']}")
            raise ValueError(f"override {override.name!r} is invalid: {'; '.join(details)}") from None

    def for_override(self, override: SegmentOverride | None) -> Scorecard:
        """This scorecard with ``override`` applied (components re-weighted or re-ruled), validated
        like a scorecard of its own (a step tier worth more than an overridden weight is refused).

        Raises:
            ValueError: the override's profile is invalid (message names ``overrides.N.components...``).
        """
        if override is None:
            return self
        index = self.overrides.index(override) if override in self.overrides else 0
        return self._override_profile(override, f"overrides.{index}")

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
