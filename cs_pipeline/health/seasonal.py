"""Point-in-time seasonal index (issue 28): the index that scores day D is learned only from the
engagement history *before* D, so a day's score is the same whichever day it is computed on, in a
daily run, a re-run of an old day, a full refresh or a backtest (the rule of feature stores such as
Feast or Tecton: a value for day D uses only data known by D).

The index of each day is ``seasonal_index_from_sums`` (``scoring``) of the history in
[D - ``LOOKBACK_DAYS``, D - 1]. Its sufficient statistics are kept per vendor category and *day*
(a few rows per day whatever the number of suppliers), so the window of each scored day is a slice of
one small dense array: a daily run costs one aggregation of the lookback, a full refresh one
aggregation of its whole range.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from cs_pipeline.core.db import read_frame
from cs_pipeline.health.scorecard import Seasonality
from cs_pipeline.health.scoring import seasonal_index_from_sums

#: Days of history before D the index of day D learns from (two years: every calendar month twice).
LOOKBACK_DAYS = 730


def daily_seasonal_sums(history: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """The per-day sufficient statistics of the seasonal index from engagement rows.

    Args:
        history: rows of marts.supplier_engagement_daily with ``vendor_category``, ``as_of_date`` and
            the ``metrics`` columns.
        metrics: the metric columns to index.

    Returns:
        one row per ``vendor_category`` (str) and ``as_of_date`` (date): ``<metric>__sum`` (float) and
        ``<metric>__count`` (int, non-null values) per metric; rows without a category are left out.
        ``read_daily_seasonal_sums`` gives the same frame, aggregated in PostgreSQL.
    """
    h = history.loc[history["vendor_category"].notna(), ["vendor_category"]].copy()
    h["as_of_date"] = pd.to_datetime(history.loc[h.index, "as_of_date"]).dt.date
    for metric in metrics:
        values = pd.to_numeric(history.loc[h.index, metric], errors="coerce")
        h[f"{metric}__sum"] = values.astype(float)
        h[f"{metric}__count"] = values.notna().astype(int)
    aggregations = {c: "sum" for metric in metrics for c in (f"{metric}__sum", f"{metric}__count")}
    return h.groupby(["vendor_category", "as_of_date"], as_index=False).agg(aggregations)


def read_daily_seasonal_sums(conn: psycopg.Connection, first: date, last: date, metrics: list[str]) -> pd.DataFrame:
    """``daily_seasonal_sums`` of marts.supplier_engagement_daily over as_of_date in [first, last],
    aggregated in PostgreSQL. Sums are taken over ``numeric`` (exact, whatever the order PostgreSQL
    reads the rows in) and only then cast to float8, so the same rows always give the same bits."""
    parts = [sql.SQL("sum({m}::numeric)::float8 AS {s}, count({m}) AS {c}").format(
        m=sql.Identifier(m), s=sql.Identifier(f"{m}__sum"), c=sql.Identifier(f"{m}__count")) for m in metrics]
    return read_frame(conn, sql.SQL(
        "SELECT vendor_category, as_of_date, {} FROM marts.supplier_engagement_daily "
        "WHERE as_of_date BETWEEN %s AND %s AND vendor_category IS NOT NULL "
        "GROUP BY 1, 2 ORDER BY 1, 2").format(sql.SQL(", ").join(parts)), (first, last))


def point_in_time_index(daily_sums: pd.DataFrame, days: list[date], metrics: list[str], settings: Seasonality,
                        lookback_days: int = LOOKBACK_DAYS) -> pd.DataFrame:
    """The seasonal index of each day in ``days``, learned from the history before that day.

    Args:
        daily_sums: ``daily_seasonal_sums`` (or ``read_daily_seasonal_sums``) covering at least
            [min(days) - lookback_days, max(days) - 1]; rows outside are ignored.
        days: the as-of days to index (UTC days).
        metrics: the metric columns to index.
        settings: the scorecard's seasonality block (``min_observations``, clip range).
        lookback_days: the index of day D uses history in [D - lookback_days, D - 1].

    Returns:
        DataFrame ``as_of_date`` (date), ``vendor_category`` (str), ``month`` (int 1-12) and one float
        column per metric (``seasonal_index_from_sums`` of the day's window); no rows for a day with no
        history before it (its factors are then 1.0). ``score_suppliers`` accepts it as ``seasonal``.

    Each day's window is summed over exactly ``lookback_days`` rows of a dense per-day array, so the
    result does not depend on how much history around the window was read.
    """
    columns = ["as_of_date", "vendor_category", "month", *metrics]
    days = sorted(set(days))
    if not days or daily_sums.empty:
        return pd.DataFrame(columns=columns)
    start = days[0] - timedelta(days=lookback_days)
    stats = [c for m in metrics for c in (f"{m}__sum", f"{m}__count")]
    frame = daily_sums.assign(as_of_date=pd.to_datetime(daily_sums["as_of_date"]).dt.date)
    frame = frame.loc[(frame["as_of_date"] >= start) & (frame["as_of_date"] < days[-1])]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    offsets = np.array([(d - start).days for d in frame["as_of_date"]], dtype=int)
    months = np.array([d.month for d in frame["as_of_date"]], dtype=int)
    cat_codes, cats = pd.factorize(frame["vendor_category"], sort=True)
    combo = cat_codes * 13 + months                                       # (category, month) key
    combos, combo_codes = np.unique(combo, return_inverse=True)
    n_days = (days[-1] - start).days
    dense = np.zeros((n_days, len(combos), len(stats)))
    np.add.at(dense, (offsets, combo_codes), frame[stats].to_numpy(dtype=float))
    base = pd.DataFrame({"vendor_category": np.asarray(cats)[combos // 13], "month": combos % 13})
    parts = []
    for day in days:
        hi = (day - start).days
        window = dense[hi - lookback_days:hi].sum(axis=0)
        present = window[:, [i for i, c in enumerate(stats) if c.endswith("__count")]].sum(axis=1) > 0
        if not present.any():
            continue
        sums = base.loc[present].reset_index(drop=True)
        sums[stats] = window[present]
        index = seasonal_index_from_sums(sums, metrics, settings)
        index.insert(0, "as_of_date", day)
        parts.append(index)
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True)[columns]
