"""Health scores: pure, vectorised functions over pandas DataFrames (no database, no Dagster).

``score_suppliers`` turns rows of ``marts.supplier_engagement_daily`` into health scores with a
``Scorecard`` (WS-168 by default, DOMAIN.md); ``seasonal_index`` learns what is normal per vendor
category and calendar month; ``cs_pipeline.health.drivers`` words the drivers and ``add_history`` adds
deltas, trend and previous risk level from stored scores. Every function works on many suppliers and many days at once: no per-supplier Python loops.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from cs_pipeline.health.drivers import _drivers, _missing, add_history  # noqa: F401 (add_history: its home before)
from cs_pipeline.health.scorecard import (
    Component,
    LinearRule,
    PercentileRule,
    Scorecard,
    Seasonality,
    StepRule,
)

# --- seasonality -----------------------------------------------------------------------------------


def seasonal_sums(history: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """The sufficient statistics of ``seasonal_index`` from engagement rows: per ``vendor_category`` and
    calendar ``month`` (int 1-12), ``<metric>__sum`` (float) and ``<metric>__count`` (int, non-null values)
    for each metric. ``history`` has ``vendor_category``, ``as_of_date`` and the ``metrics`` columns.
    ``cs_pipeline.health.store.read_seasonal_sums`` gives the same frame, aggregated in the database."""
    h = history.loc[:, ["vendor_category", "as_of_date"]].copy()
    h["month"] = pd.to_datetime(history["as_of_date"]).dt.month.astype(int)
    for metric in metrics:
        values = pd.to_numeric(history[metric], errors="coerce")
        h[f"{metric}__sum"] = values
        h[f"{metric}__count"] = values.notna().astype(int)
    aggregations = {c: "sum" for metric in metrics for c in (f"{metric}__sum", f"{metric}__count")}
    return h.groupby(["vendor_category", "month"], as_index=False).agg(aggregations)


def seasonal_index(history: pd.DataFrame, metrics: list[str], settings: Seasonality) -> pd.DataFrame:
    """What is normal per vendor category and calendar month, relative to the category's own year:
    ``seasonal_index_from_sums`` of ``seasonal_sums(history, metrics)``.

    Args:
        history: rows of supplier_engagement_daily with ``vendor_category``, ``as_of_date`` and the
            ``metrics`` columns (any number of days; more history, better index).
        metrics: the metric columns to index.
        settings: the scorecard's seasonality block (``min_observations``, clip range).

    Returns:
        see ``seasonal_index_from_sums``.
    """
    if history.empty:
        return pd.DataFrame(columns=["vendor_category", "month", *metrics])
    return seasonal_index_from_sums(seasonal_sums(history, metrics), metrics, settings)


def seasonal_index_from_sums(sums: pd.DataFrame, metrics: list[str], settings: Seasonality) -> pd.DataFrame:
    """The seasonal index from history already aggregated per category and month (``seasonal_sums``'s
    columns; ``cs_pipeline.health.store.read_seasonal_sums`` aggregates in the database, so the index
    costs the same whatever the history: issue 18).

    Args:
        sums: ``vendor_category``, ``month``, ``<metric>__sum`` and ``<metric>__count`` per metric.
        metrics: the metric columns to index.
        settings: the scorecard's seasonality block (``min_observations``, clip range).

    Returns:
        DataFrame with columns ``vendor_category`` (str), ``month`` (int 1-12) and one float column per
        metric: mean of the metric in that category and month / mean of the category's monthly means.
        A category-month with fewer than ``min_observations`` non-null values falls back to the index
        of that month over all categories, and to 1.0 when that is thin too; values are clipped to
        [min_index, max_index].
    """
    columns = ["vendor_category", "month", *metrics]
    if sums.empty:
        return pd.DataFrame(columns=columns)
    out = None
    for metric in metrics:
        total = sums[f"{metric}__sum"].astype(float).fillna(0.0)
        count = sums[f"{metric}__count"].astype(float).fillna(0.0)
        frame = pd.DataFrame({"vendor_category": sums["vendor_category"], "month": sums["month"].astype(int),
                              "total": total, "count": count})
        by_cat = frame.groupby(["vendor_category", "month"])[["total", "count"]].sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            by_cat["mean"] = by_cat["total"] / by_cat["count"].where(by_cat["count"] > 0)
        cat_level = by_cat["mean"].groupby(level=0).mean()
        index = by_cat["mean"] / cat_level.reindex(by_cat.index.get_level_values(0)).to_numpy()
        by_month = frame.groupby("month")[["total", "count"]].sum()
        by_month["mean"] = by_month["total"] / by_month["count"].where(by_month["count"] > 0)
        month_index = by_month["mean"] / by_month["mean"].mean()
        fallback = month_index.reindex(by_cat.index.get_level_values(1)).to_numpy()
        fallback_ok = by_month["count"].reindex(by_cat.index.get_level_values(1)).to_numpy() >= settings.min_observations
        fallback = np.where(fallback_ok, fallback, 1.0)
        values_idx = np.where(by_cat["count"].to_numpy() >= settings.min_observations, index.to_numpy(), fallback)
        values_idx = np.where(np.isfinite(values_idx) & (values_idx > 0), values_idx, 1.0)
        values_idx = np.clip(values_idx, settings.min_index, settings.max_index)
        part = pd.DataFrame({"vendor_category": by_cat.index.get_level_values(0),
                             "month": by_cat.index.get_level_values(1).astype(int), metric: values_idx})
        out = part if out is None else out.merge(part, on=["vendor_category", "month"], how="outer")
    return out.fillna(1.0)[columns]


# --- component points ------------------------------------------------------------------------------


def _metric(frame: pd.DataFrame, component: Component) -> np.ndarray:
    if component.metric not in frame:
        raise KeyError(f"engagement data has no column {component.metric!r} (component {component.name})")
    values = pd.to_numeric(frame[component.metric], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    if component.fallback_metric:
        fallback = pd.to_numeric(frame[component.fallback_metric], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        values = np.where(np.isnan(values), fallback, values)
    return values


def _step_points(values: np.ndarray, rule: StepRule) -> np.ndarray:
    conditions = [values < t.lt if t.lt is not None else values > t.gt for t in rule.tiers]
    points = np.select(conditions, [t.points for t in rule.tiers], default=rule.otherwise).astype(float)
    return np.where(np.isnan(values), np.nan, points)


def _linear_points(values: np.ndarray, rule: LinearRule, weight: float) -> np.ndarray:
    return weight * np.clip((values - rule.lower) / (rule.upper - rule.lower), 0.0, 1.0)


def _percentile_points(values: np.ndarray, frame: pd.DataFrame, rule: PercentileRule, weight: float) -> np.ndarray:
    """Mid-rank percentile of each value among the rows of the same segment and day, x weight.

    The mid-rank percentile is ``(rank - 0.5) / n`` with ties given their average rank (``rank`` 1 =
    worst, ``n`` = non-null values in the group): the share of the group below a value plus half the
    share equal to it. When 93 % of the accounts share the worst value each gets 0.465 (not 0.93, as
    ``method="max"`` would give). A lone value gets 0.5. Null values stay null (NaN points).
    """
    keys = [_codes(frame, c)[0] for c in [*rule.by, "as_of_date"]]
    series = pd.Series(values)
    grouped = series.groupby(keys, dropna=False)
    ranks = grouped.rank(method="average", ascending=rule.higher_is_better)
    counts = grouped.transform("count")
    return weight * ((ranks - 0.5) / counts).to_numpy(dtype=float)


def _worst_fill(values: np.ndarray, component: Component) -> np.ndarray:
    """``values`` with nulls replaced by the rule's worst value (for ``missing: worst_value``)."""
    rule = component.rule
    if isinstance(rule, PercentileRule):
        worst = -np.inf if rule.higher_is_better else np.inf
    elif isinstance(rule, LinearRule):
        worst = rule.lower - abs(rule.upper - rule.lower)  # clipped to 0 points
    else:  # step: probe every interval between the bounds and take the value with the fewest points
        bounds = sorted({t.lt if t.lt is not None else t.gt for t in rule.tiers})
        probes = np.array([bounds[0] - 1.0, *bounds, *((a + b) / 2 for a, b in zip(bounds, bounds[1:])), bounds[-1] + 1.0])
        worst = float(probes[np.argmin(_step_points(probes, rule))])
    return np.where(np.isnan(values), worst, values)


def _points(values: np.ndarray, frame: pd.DataFrame, component: Component) -> np.ndarray:
    """Points of ``component`` for ``values`` (``frame``: the same rows, for percentile segments).

    Null values follow ``component.missing_policy``: ``exclude`` gives NaN (missing), ``zero_points``
    0 points, ``worst_value`` the points of the rule's worst value (for a percentile rule: ranked as
    the worst of the group).
    """
    policy = component.missing_policy
    null = np.isnan(values)
    if policy == "worst_value" and null.any():
        values = _worst_fill(values, component)
    rule = component.rule
    if isinstance(rule, StepRule):
        points = _step_points(values, rule)
    elif isinstance(rule, LinearRule):
        points = _linear_points(values, rule, component.weight)
    else:
        points = _percentile_points(values, frame, rule, component.weight)
    if policy == "zero_points":
        points = np.where(null, 0.0, points)
    return points


# --- scoring ---------------------------------------------------------------------------------------


def _codes(frame: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(integer code per row, distinct values) of a column, hash-based (no per-row Python objects)."""
    codes, uniques = pd.factorize(frame[column], use_na_sentinel=True)
    return np.asarray(codes), np.asarray(uniques, dtype=object)


def _segments(frame: pd.DataFrame, scorecard: Scorecard) -> np.ndarray:
    """Index of the first matching override per row, -1 for the default profile."""
    seg = np.full(len(frame), -1)
    factorized: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for i, override in enumerate(scorecard.overrides):
        mask = np.ones(len(frame), dtype=bool)
        for column, allowed in override.when.items():
            if column not in factorized:
                factorized[column] = _codes(frame, column)
            codes, uniques = factorized[column]
            mask &= np.isin(codes, np.flatnonzero(np.isin(uniques, allowed)))
        seg[(seg == -1) & mask] = i
    return seg


def _seasonal_factors(frame: pd.DataFrame, index: pd.DataFrame | None, metric: str) -> np.ndarray:
    """The seasonal index of each row's vendor category and calendar month (1.0 where unknown); when
    ``index`` has an ``as_of_date`` column (``seasonal.point_in_time_index``: one index per scored day,
    issue 28), each row's own day's index."""
    if index is None or index.empty or metric not in index:
        return np.ones(len(frame))
    day_codes, days = pd.factorize(frame["as_of_date"])
    months = pd.to_datetime(pd.Series(days)).dt.month.to_numpy()[day_codes]
    cat_codes, cats = _codes(frame, "vendor_category")
    if "as_of_date" in index:
        day_position = {d: i for i, d in enumerate(pd.to_datetime(pd.Series(days)).dt.date)}
        cat_position = {c: i for i, c in enumerate(cats)}
        table = np.ones((len(days), len(cats) + 1, 13))
        for day, cat, month, value in index[["as_of_date", "vendor_category", "month", metric]].itertuples(index=False):
            d, c = day_position.get(pd.Timestamp(day).date()), cat_position.get(cat)
            if d is not None and c is not None:
                table[d, c, int(month)] = value
        return table[day_codes, np.where(cat_codes < 0, len(cats), cat_codes), months]
    table = np.ones((len(cats) + 1, 13))
    position = {c: i for i, c in enumerate(cats)}
    for cat, month, value in index[["vendor_category", "month", metric]].itertuples(index=False):
        if cat in position:
            table[position[cat], int(month)] = value
    return table[np.where(cat_codes < 0, len(cats), cat_codes), months]


def score_suppliers(
    engagement: pd.DataFrame,
    scorecard: Scorecard,
    as_of: date | None = None,
    seasonal: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Score suppliers with ``scorecard`` (default rules: WS-168 scorecard, DOMAIN.md).

    Args:
        engagement: rows of ``marts.supplier_engagement_daily``: ``supplier_id``, ``as_of_date`` (date),
            ``vendor_category``, ``tier``, ``lifecycle_stage`` and every metric the scorecard reads
            (numbers; what a null means is the component's ``missing_policy``: missing and rescaled,
            0 points, or the rule's worst value). Any number of suppliers and days.
        scorecard: a validated ``Scorecard``.
        as_of: score only the rows of this UTC day; ``None`` scores every row.
        seasonal: the output of ``seasonal_index`` (ignored unless the scorecard's seasonality is on).

    Returns:
        One row per input row (in input order), columns:
        ``supplier_id``, ``as_of_date``, ``vendor_category``, ``tier``, ``lifecycle_stage``,
        ``health_score`` (float 0-100, 2 decimals; NaN when unscored), ``risk_level`` (healthy / at_risk
        / critical; None when unscored), ``scored`` (bool: False only for a row with no data at all),
        ``engagement_score`` and ``churn_risk_score`` (float 0-100), ``drivers`` (str: the components
        that lost the most points, e.g. "no login for 12 days: 10 of 30 points"), ``missing_components``
        (str, comma-separated, "" when none), ``scorecard_version``, ``segment`` ("default" or the
        override's name), and per component ``<name>_points`` (float, NaN when missing),
        ``<name>_max_points`` (float, the component's weight in the row's segment) and
        ``<name>_metric`` (the raw metric; ``<name>_seasonal_index`` for seasonal components).

    Raises:
        KeyError: a column the scorecard reads is absent.
    """
    frame = engagement
    if as_of is not None:
        frame = frame.loc[pd.to_datetime(frame["as_of_date"]).dt.date == as_of]
    frame = frame.reset_index(drop=True)
    n = len(frame)
    seg = _segments(frame, scorecard)
    profiles = {-1: scorecard} | {i: scorecard.for_override(o) for i, o in enumerate(scorecard.overrides)}
    names = [c.name for c in scorecard.components]
    k = len(names)
    # Column-major: each component's column is contiguous.
    points = np.full((n, k), np.nan, order="F")
    weights = np.zeros((n, k), order="F")
    metrics = np.full((n, k), np.nan, order="F")
    distinct_segments = np.unique(seg)
    segment_rows = {int(v): (None if len(distinct_segments) == 1 else seg == v) for v in distinct_segments}
    out: dict[str, object] = {col: frame[col] for col in
                              ["supplier_id", "as_of_date", "vendor_category", "tier", "lifecycle_stage"] if col in frame}
    seasonality_on = scorecard.seasonality.enabled and seasonal is not None
    for j, base in enumerate(scorecard.components):
        raw = _metric(frame, base)
        metrics[:, j] = raw
        adjusted = raw
        if base.seasonal and seasonality_on:
            factor = _seasonal_factors(frame, seasonal, base.metric)
            adjusted = raw / factor
            out[f"{base.name}_seasonal_index"] = factor
        for s, rows in segment_rows.items():
            component = profiles[s].components[j]
            if component.weight <= 0:
                continue
            if rows is None:  # every row in one segment: no gathering
                points[:, j] = _points(adjusted, frame, component)
                weights[:, j] = component.weight
                continue
            subset = frame.loc[rows] if isinstance(component.rule, PercentileRule) else frame
            points[rows, j] = _points(adjusted[rows], subset, component)
            weights[rows, j] = component.weight
        out[f"{base.name}_metric"] = raw
    present = ~np.isnan(points) & (weights > 0)
    weights_present = np.where(present, weights, 0.0)
    total = weights_present.sum(axis=1)
    earned = np.where(present, points, 0.0).sum(axis=1)
    # Only a row with no data at all is unscored (DOMAIN.md), even where nulls give worst-value points.
    scored = (total > 0) & ~np.isnan(metrics).all(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        health = np.where(scored, np.round(100.0 * earned / np.where(scored, total, 1.0), 2), np.nan)
    order_keys = sorted(profiles)  # -1 (default) first, then the overrides in order
    crit = np.array([profiles[s].risk_levels.critical_below for s in order_keys])[seg + 1]
    at_risk = np.array([profiles[s].risk_levels.at_risk_below for s in order_keys])[seg + 1]
    level = np.select([~scored, health < crit, health < at_risk], [3, 0, 1], default=2)
    risk = np.array(["critical", "at_risk", "healthy", None], dtype=object)[level]

    lost = weights - points
    lost[~present] = -1.0
    drivers = _drivers(scorecard.components, lost, metrics, points, weights)  # consumes ``lost``
    missing = _missing(names, (weights > 0) & np.isnan(points))

    out.update({
        "health_score": health,
        "risk_level": risk,
        "scored": scored,
        "engagement_score": engagement_score(frame),
        "churn_risk_score": np.where(scored, np.round(100.0 - health, 2), np.nan),
        "drivers": drivers,
        "missing_components": missing,
        "scorecard_version": pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), [scorecard.version]),
        "segment": pd.Categorical.from_codes((seg + 1).astype(np.int16),
                                             ["default", *[o.name for o in scorecard.overrides]]),
    })
    for j, name in enumerate(names):
        out[f"{name}_points"] = np.round(points[:, j], 2)
        out[f"{name}_max_points"] = weights[:, j]
    return pd.DataFrame({name: pd.Series(values, dtype=object, copy=False) if getattr(values, "dtype", None) == object
                         else values for name, values in out.items()}, copy=False)


def engagement_score(frame: pd.DataFrame) -> np.ndarray:
    """Engagement score 0-100: the mean of the available parts of active days (20 of 30 days = full),
    stickiness (DAU/MAU of 0.5 = full) and adoption breadth, x 100. NaN when none is available."""
    parts = []
    for column, full in (("active_days_30d", 20.0), ("stickiness", 0.5), ("adoption_breadth", 1.0)):
        if column in frame:
            values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
            parts.append(np.clip(values / full, 0.0, 1.0))
    if not parts:
        return np.full(len(frame), np.nan)
    stacked = np.vstack(parts)
    present = ~np.isnan(stacked)
    count = present.sum(axis=0)
    # the mean of the present parts; NaN (without numpy's "Mean of empty slice" warning in every run's log)
    # for a supplier with none
    mean = np.divide(np.where(present, stacked, 0.0).sum(axis=0), count, out=np.full(len(frame), np.nan),
                     where=count > 0)
    return np.round(100.0 * mean, 2)
