"""Drivers and trend of health scores: pure, vectorised functions (split from ``scoring``, which calls
them). ``_drivers`` words the components that lost the most points, ``_missing`` names the missing ones,
``add_history`` adds the 7/30-day deltas, the trend and the previous risk level from stored scores.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cs_pipeline.health.scorecard import Component, Scorecard

# --- drivers ---------------------------------------------------------------------------------------


_UNIT_SCALE = {"percent": 100.0, "days": 1.0, "count": 1.0, "ratio": 10.0, "score": 10.0}


#: The metric code of a metric without a value (a never-logged-in supplier's login recency).
NO_VALUE = 9999


def _metric_code(values: np.ndarray, unit: str) -> np.ndarray:
    """Integer bucket of a metric as it is printed (percent: whole %, days/count: whole, else 0.1);
    ``NO_VALUE`` for a null metric (it is worded apart, never as 0)."""
    v = np.asarray(values, dtype=float)
    code = np.clip(np.rint(np.nan_to_num(v, nan=0.0) * _UNIT_SCALE[unit]), 0, NO_VALUE - 1).astype(np.int64)
    return np.where(np.isnan(v), NO_VALUE, code)


def _phrase(component: Component, code: int, points: int, weight: int) -> str:
    if code == NO_VALUE:
        words = component.phrase_when_none or component.phrase.replace("{metric}", "no data")
        return f"{words}: {points} of {weight} points"
    if component.unit == "percent":
        shown = f"{code}%"
    elif component.unit in ("days", "count"):
        shown = str(code)
    else:
        shown = f"{code / 10:.1f}"
    return f"{component.phrase.replace('{metric}', shown)}: {points} of {weight} points"


def _drivers(components: list[Component], lost: np.ndarray, metrics: np.ndarray, points: np.ndarray,
             weights: np.ndarray, top: int = 2) -> np.ndarray:
    """The ``top`` components that lost the most points, as words, per row (object array).

    ``lost`` (n x k, -1 for missing components) is overwritten.

    Rows are reduced to integer codes (component, printed metric, points, weight); only the distinct
    combinations are formatted, so the cost is one sort of integers, not one string per row.
    """
    n, k = lost.shape
    if n == 0 or k == 0:
        return np.full(n, "", dtype=object)
    rows = np.arange(n)
    # One integer per row and component: (component, printed metric, points, weight).
    code_matrix = np.empty((n, k), dtype=np.int64)
    for j, component in enumerate(components):
        code_matrix[:, j] = (((j * 10000 + _metric_code(metrics[:, j], component.unit)) * 128
                              + np.clip(np.rint(np.nan_to_num(points[:, j])), 0, 127).astype(np.int64)) * 128
                             + np.clip(np.rint(weights[:, j]), 0, 127).astype(np.int64))
    remaining = lost  # consumed in place: the caller does not need it afterwards
    codes = []
    for _ in range(min(top, k)):
        col = np.argmax(remaining, axis=1)  # first of equal losses: component order breaks ties
        picked = remaining[rows, col]
        codes.append(np.where(picked > 0.005, code_matrix[rows, col], -1))
        remaining[rows, col] = -np.inf
    # Factorise each rank's codes, then the combination (hash based, no sort of the rows).
    combined = np.zeros(n, dtype=np.int64)
    uniques = []
    for code in codes:
        inverse, values = pd.factorize(code)
        uniques.append(values)
        combined = combined * (len(values) + 1) + inverse
    inverse, unique_combined = pd.factorize(combined)
    # Words for each distinct single code, then for each distinct combination of ranks.
    words = []
    for values in uniques:
        texts = []
        for code in values.tolist():
            if code < 0:
                texts.append("")
                continue
            wgt, rest = code % 128, code // 128
            pts, rest = rest % 128, rest // 128
            texts.append(_phrase(components[rest // 10000], rest % 10000, pts, wgt))
        words.append(np.array(texts, dtype=object))
    positions = []
    remainder = np.asarray(unique_combined, dtype=np.int64)
    for values in reversed(uniques):
        remainder, position = np.divmod(remainder, len(values) + 1)
        positions.append(position)
    positions.reverse()
    texts = words[0][positions[0]]
    for rank in range(1, len(words)):
        extra = words[rank][positions[rank]]
        texts = np.where(extra == "", texts, texts + "; " + extra)
    return np.array(texts, dtype=object)[inverse]


def _missing(names: list[str], missing: np.ndarray) -> np.ndarray:
    """Comma-separated names of the missing components per row (object array; "" when none)."""
    n = missing.shape[0]
    if n == 0:
        return np.full(0, "", dtype=object)
    bits = (missing.astype(np.int64) << np.arange(len(names), dtype=np.int64)).sum(axis=1)
    inverse, unique_bits = pd.factorize(bits)
    texts = [",".join(name for j, name in enumerate(names) if b >> j & 1) for b in unique_bits]
    return np.array(texts, dtype=object)[inverse]


# --- history ---------------------------------------------------------------------------------------


def add_history(scores: pd.DataFrame, history: pd.DataFrame, scorecard: Scorecard) -> pd.DataFrame:
    """Add ``score_delta_7d``, ``score_delta_30d`` (points), ``trend`` and ``previous_risk_level``.

    Args:
        scores: output of ``score_suppliers`` (any days).
        history: stored rows (``supplier_id``, ``as_of_date``, ``health_score``, ``risk_level``) of other
            days; rows of the days in ``scores`` are ignored (the new scores win).
        scorecard: gives the trend thresholds (``improving_at`` / ``declining_at`` on the 7-day delta).

    Returns:
        ``scores`` with the four columns added. ``trend`` is improving / stable / declining, or None
        when there is no score 7 days earlier; ``previous_risk_level`` is the day before's level.
    """
    keys = ["supplier_id", "as_of_date"]
    new_days = set(pd.to_datetime(scores["as_of_date"]).dt.date)
    old = history.loc[~pd.to_datetime(history["as_of_date"]).dt.date.isin(new_days), keys + ["health_score", "risk_level"]] \
        if len(history) else pd.DataFrame(columns=keys + ["health_score", "risk_level"])
    combined = pd.concat([old, scores[keys + ["health_score", "risk_level"]]], ignore_index=True)
    combined["as_of_date"] = pd.to_datetime(combined["as_of_date"])
    lookup = combined.set_index(keys)
    lookup = lookup[~lookup.index.duplicated(keep="last")]
    out = scores.copy()
    when = pd.to_datetime(out["as_of_date"])
    result = {}
    for label, days in (("7d", 7), ("30d", 30), ("prev", 1)):
        idx = pd.MultiIndex.from_arrays([out["supplier_id"].to_numpy(), when - pd.Timedelta(days=days)])
        result[label] = lookup.reindex(idx)
    out["score_delta_7d"] = np.round(out["health_score"].to_numpy() - result["7d"]["health_score"].to_numpy(dtype=float), 2)
    out["score_delta_30d"] = np.round(out["health_score"].to_numpy() - result["30d"]["health_score"].to_numpy(dtype=float), 2)
    delta = out["score_delta_7d"].to_numpy(dtype=float)
    trend = np.where(delta >= scorecard.trend.improving_at, "improving",
                     np.where(delta <= scorecard.trend.declining_at, "declining", "stable")).astype(object)
    trend[np.isnan(delta)] = None
    out["trend"] = trend
    out["previous_risk_level"] = result["prev"]["risk_level"].to_numpy(dtype=object)
    return out
