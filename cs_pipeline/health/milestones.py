"""Success milestones as data (YAML) and their evaluation: pure, vectorised, no database.

A milestone is achieved on the first day its criterion held *and* all its prerequisites had been
achieved (on that day or before). ``reconcile_milestones`` keeps the stored table equal to that rule
over every built day whatever order days are loaded and re-run in (issue 28): a run from day D
recomputes every achievement on or after D, removes what the data no longer supports and retracts
(``retracted_at``) what was already celebrated.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import Field, model_validator

from cs_pipeline.core.config import StrictModel, load_yaml_model
from cs_pipeline.core.paths import CONFIG_DIR

MILESTONES_YAML = CONFIG_DIR / "milestones.yaml"
CATEGORIES = ("setup", "first_use", "proficiency", "mastery", "growth", "success", "advocacy")
#: The facts a criterion may read, per supplier and day (computed by the success_milestones asset).
MILESTONE_FACTS = (
    "onboarded", "logins_total", "clients_total", "forms_sent_total", "forms_completed_total",
    "journeys_completed_total", "reviews_total", "integrations_total", "upgrades_total",
    "adopted_core_features", "core_features_total", "days_since_signup",
)
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}


class MilestoneError(ValueError):
    """The milestones file is missing or invalid; the message names the file and the field."""


class Condition(StrictModel):
    metric: Literal[MILESTONE_FACTS]  # type: ignore[valid-type]
    op: Literal[">=", ">", "<=", "<", "=="]
    value: float | None = None
    value_metric: Literal[MILESTONE_FACTS] | None = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _one_value(self) -> Condition:
        if (self.value is None) == (self.value_metric is None):
            raise ValueError("give exactly one of value or value_metric")
        return self


class Criterion(StrictModel):
    all: list[Condition] = Field(min_length=1)


class Milestone(StrictModel):
    """One milestone type: its category (DOMAIN.md), criterion and prerequisites."""

    type: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    category: Literal[CATEGORIES]  # type: ignore[valid-type]
    description: str
    criterion: Criterion
    prerequisites: list[str] = Field(default_factory=list)


class MilestoneSet(StrictModel):
    milestones: list[Milestone] = Field(min_length=1)

    @model_validator(mode="after")
    def _graph(self) -> MilestoneSet:
        names = [m.type for m in self.milestones]
        if len(set(names)) != len(names):
            raise ValueError("milestone types must be unique")
        for m in self.milestones:
            unknown = set(m.prerequisites) - set(names)
            if unknown:
                raise ValueError(f"{m.type}: unknown prerequisite(s) {sorted(unknown)}")
        self.ordered()  # raises on a cycle
        return self

    def ordered(self) -> list[Milestone]:
        """Milestones with every prerequisite before its dependants.

        Raises:
            ValueError: the prerequisites form a cycle.
        """
        by_type = {m.type: m for m in self.milestones}
        done: list[Milestone] = []
        state: dict[str, int] = {}

        def visit(name: str, path: tuple[str, ...]) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise ValueError(f"prerequisite cycle: {' -> '.join(path + (name,))}")
            state[name] = 1
            for p in by_type[name].prerequisites:
                visit(p, path + (name,))
            state[name] = 2
            done.append(by_type[name])

        for m in self.milestones:
            visit(m.type, ())
        return done


def load_milestones(path: Path = MILESTONES_YAML) -> MilestoneSet:
    """Load and validate a milestones YAML file.

    Raises:
        MilestoneError: missing file, invalid YAML or fields (the message names file and field).
    """
    return load_yaml_model(path, MilestoneSet, MilestoneError, "milestones file")


def _holds(facts: pd.DataFrame, criterion: Criterion) -> np.ndarray:
    mask = np.ones(len(facts), dtype=bool)
    for cond in criterion.all:
        left = pd.to_numeric(facts[cond.metric], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        right = cond.value if cond.value is not None else pd.to_numeric(
            facts[cond.value_metric], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        with np.errstate(invalid="ignore"):
            mask &= np.nan_to_num(_OPS[cond.op](left, right).astype(float), nan=0).astype(bool)
    return mask


def evaluate_milestones(facts: pd.DataFrame, milestones: MilestoneSet, achieved: pd.DataFrame) -> pd.DataFrame:
    """First achievement day per supplier and milestone type, given facts and what is stored.

    Args:
        facts: one row per supplier and day: ``supplier_id``, ``as_of_date`` (date) and the
            ``MILESTONE_FACTS`` columns.
        milestones: the validated milestone set.
        achieved: stored achievements: ``supplier_id``, ``milestone_type``, ``achieved_at`` (date).

    Returns:
        DataFrame ``supplier_id``, ``milestone_type``, ``category``, ``achieved_at`` (date): every
        achievement implied by ``facts`` whose day is new or earlier than the stored one. Several
        milestones may be achieved on one day; prerequisites are respected (a dependant is never
        dated before its prerequisite).
    """
    columns = ["supplier_id", "milestone_type", "category", "achieved_at"]
    if not len(facts):
        return pd.DataFrame(columns=columns)
    # Per supplier of ``facts`` (codes in sorted supplier order), days as integers; NONE: not achieved.
    # Stored achievements of suppliers absent from ``facts`` can neither improve nor gate a candidate.
    codes, suppliers = pd.factorize(facts["supplier_id"], sort=True)
    n = len(suppliers)
    day = _day_numbers(facts["as_of_date"])
    stored_codes = suppliers.get_indexer(achieved["supplier_id"]) if len(achieved) else np.zeros(0, dtype=int)
    stored_days = _day_numbers(achieved["achieved_at"]) if len(achieved) else np.zeros(0, dtype=np.int64)
    stored_types = achieved["milestone_type"].to_numpy(dtype=object) if len(achieved) else np.zeros(0, dtype=object)
    known: dict[str, np.ndarray] = {}
    for m in milestones.milestones:
        first = np.full(n, NONE)
        rows = (stored_types == m.type) & (stored_codes >= 0)
        np.minimum.at(first, stored_codes[rows], stored_days[rows])
        known[m.type] = first
    results = []
    for m in milestones.ordered():
        candidate = _holds(facts, m.criterion)
        for p in m.prerequisites:  # achieved on the day or before (NONE: never, so never <= a day)
            candidate &= known[p][codes] <= day
        first = np.full(n, NONE)
        np.minimum.at(first, codes[candidate], day[candidate])
        better = first < known[m.type]
        known[m.type] = np.minimum(known[m.type], first)
        if better.any():
            results.append(pd.DataFrame({"supplier_id": suppliers[better].to_numpy(dtype=object), "milestone_type": m.type,
                                         "category": m.category,
                                         "achieved_at": first[better].astype("datetime64[D]").astype(object)}))
    if not results:
        return pd.DataFrame(columns=columns)
    return pd.concat(results, ignore_index=True)[columns]


NONE = np.iinfo(np.int64).max
"""``evaluate_milestones``' day number of "not achieved" (after every real day)."""


def _day_numbers(values: pd.Series) -> np.ndarray:
    """Dates as days since 1970-01-01 (int64)."""
    return pd.to_datetime(values).to_numpy().astype("datetime64[D]").astype(np.int64)


KEYS = ["supplier_id", "milestone_type"]


@dataclass(frozen=True)
class MilestoneChanges:
    """What a run changes in marts.success_milestones (``reconcile_milestones``).

    Attributes:
        upserts: ``supplier_id``, ``milestone_type``, ``category``, ``achieved_at`` (date): rows to insert
            or to set to this day, with ``retracted_at`` cleared (the data supports them again).
        deletes: ``supplier_id``, ``milestone_type``: uncelebrated rows the data no longer supports.
        retractions: ``supplier_id``, ``milestone_type``: celebrated rows the data no longer supports:
            kept, ``retracted_at`` set (a celebration cannot be unsent; no second one follows, since
            the row stays celebrated).
    """

    upserts: pd.DataFrame
    deletes: pd.DataFrame
    retractions: pd.DataFrame


def reconcile_milestones(facts: pd.DataFrame, milestones: MilestoneSet, stored: pd.DataFrame,
                         since: date) -> MilestoneChanges:
    """Bring the stored milestones to what a full evaluation of every built day gives, after the
    facts of ``since`` and later days were (re)built.

    An achievement before ``since`` depends only on facts before ``since`` (the first day a criterion
    held, prerequisites achieved no later), so it stands; every other one is recomputed from the facts
    of ``since`` onwards on top of the standing ones.

    Args:
        facts: the facts (``evaluate_milestones``'s columns) of every built day on or after ``since``.
        milestones: the validated milestone set.
        stored: marts.success_milestones: ``supplier_id``, ``milestone_type``, ``achieved_at`` (date),
            ``celebrated`` (bool), ``retracted_at`` (timestamp or null).
        since: the earliest day whose facts changed (UTC day).

    Returns:
        ``MilestoneChanges``; only rows that differ from ``stored`` (a daily run with nothing new
        changes nothing).
    """
    stored = stored.assign(achieved_at=pd.to_datetime(stored["achieved_at"]).dt.date,
                           retracted=stored["retracted_at"].notna(), celebrated=stored["celebrated"].astype(bool))
    standing = stored.loc[(stored["achieved_at"] < since) & ~stored["retracted"]]
    recomputed = evaluate_milestones(facts, milestones, standing[[*KEYS, "achieved_at"]])
    open_rows = stored.loc[(stored["achieved_at"] >= since) | stored["retracted"]]
    merged = open_rows.merge(recomputed.rename(columns={"achieved_at": "new_at"}), on=KEYS, how="outer",
                             indicator=True, suffixes=("", "_new"))
    supported = merged["_merge"] != "left_only"
    changed = supported & ((merged["_merge"] == "right_only") | merged["retracted"].fillna(False).astype(bool)
                           | (merged["achieved_at"] != merged["new_at"]))
    upserts = merged.loc[changed, [*KEYS, "category", "new_at"]]
    upserts.columns = [*KEYS, "category", "achieved_at"]
    gone = merged.loc[~supported]
    celebrated = gone["celebrated"].astype(bool)
    retract = gone.loc[celebrated & ~gone["retracted"].astype(bool), KEYS]
    return MilestoneChanges(upserts=upserts.reset_index(drop=True), deletes=gone.loc[~celebrated, KEYS].reset_index(drop=True),
                            retractions=retract.reset_index(drop=True))
