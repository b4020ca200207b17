"""Churn model features, point in time (issue 26): pure functions over frames (no database, no Dagster).

For an as-of day D a supplier's feature row uses only data up to D: its row of
``marts.supplier_engagement_daily`` for D (every numeric column: counts log1p-scaled, rates as they are;
the lifetime metrics and tenure are columns of that mart), per catalogue feature the uses and active days
in the 30 days up to D (the definition of ``uses_30d`` / ``active_days_30d`` in ``marts.fct_feature_adoption``;
that mart only holds its newest day, so other days are recomputed from the feature days), and one
missing-value indicator per engagement column. The approach follows "Fighting Churn with Data" (Gold,
2020): metrics per account and period, log-scaled, standardised by the model's pipeline.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

#: Columns of the engagement mart that are not features (keys, labels, dates, segment names).
NOT_FEATURES = {"supplier_id", "as_of_date", "vendor_category", "tier", "status", "lifecycle_stage", "currency",
                "country", "signup_date", "onboarded_date", "last_login_date", "first_active_date",
                "last_active_date", "cancelled_date", "_loaded_at", "loaded_at"}
#: Ratios, shares and changes: used as they are. Every other numeric column is a count, a sum or a
#: number of days and is log1p-scaled (sign kept), as Gold's metrics are.
RATE_COLUMNS = {"stickiness", "events_change_7d", "events_change_30d", "client_activity_rate",
                "form_completion_rate", "journey_completion_rate", "adoption_breadth", "csat_30d",
                "active_days_per_30d_lifetime", "recency_to_cadence"}
FEATURE_WINDOW_DAYS = 30
MISSING = "__missing"


def engagement_columns(engagement: pd.DataFrame) -> list[str]:
    """The numeric feature columns of engagement rows (in frame order): every column outside
    ``NOT_FEATURES`` whose dtype is numeric or boolean, or whose non-null values (if any) are all numbers."""
    out = []
    for column in engagement.columns:
        if column in NOT_FEATURES or column.endswith("_date"):
            continue
        series = engagement[column]
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            out.append(column)
            continue
        values = series.dropna()
        if not len(values) or (pd.to_numeric(values, errors="coerce").notna().all()
                               and not values.map(lambda v: isinstance(v, str)).any()):
            out.append(column)
    return out


def feature_usage(rows: pd.DataFrame, feature_days: pd.DataFrame, features: list[str],
                  window_days: int = FEATURE_WINDOW_DAYS) -> pd.DataFrame:
    """Per row of ``rows`` (``supplier_id``, ``as_of_date``) and catalogue feature, the uses and the
    active days in the ``window_days`` days up to and including the as-of day (days, UTC).

    Args:
        rows: ``supplier_id``, ``as_of_date`` (date).
        feature_days: ``supplier_id``, ``feature``, ``activity_date`` (date), ``uses`` (int): rows of
            ``intermediate.int_supplier_feature_days``. Days after an as-of day are ignored for it.
        features: the catalogue's features, one pair of columns each (a feature never used gets zeros).

    Returns:
        DataFrame aligned with ``rows`` (same index order) with float columns
        ``feat__<feature>__uses_30d`` (sum of the non-null ``uses``) and ``feat__<feature>__active_days_30d``
        (number of feature-day rows with a ``uses``).

    One pass over all rows and features: feature days sorted by (supplier, feature, day) with running
    sums; a window (D - window_days, D] is the difference of the running sums at the last entry up to D and
    the last entry up to D - window_days (binary search on a (supplier, feature, day-rank) key).
    """
    columns = [f"feat__{f}__{kind}" for f in features for kind in ("uses_30d", "active_days_30d")]
    out = pd.DataFrame(0.0, index=range(len(rows)), columns=columns)
    if not len(rows) or not features or feature_days.empty:
        return out
    days = pd.to_datetime(rows["as_of_date"]).to_numpy(dtype="datetime64[ns]")
    since = days - np.timedelta64(window_days, "D")
    # Integer codes by hashing (factorize; no string sorts): a supplier code no row has is not scored.
    supplier_code = pd.factorize(pd.concat([rows["supplier_id"].astype(str),
                                            feature_days["supplier_id"].astype(str)], ignore_index=True))[0]
    row_supplier = supplier_code[: len(rows)].astype(np.int64)
    fd_supplier = np.where(np.isin(supplier_code[len(rows):], row_supplier), supplier_code[len(rows):], -1)
    when = pd.to_datetime(feature_days["activity_date"]).to_numpy(dtype="datetime64[ns]")
    feature_codes, feature_names = pd.factorize(feature_days["feature"])
    feature_code = np.append(pd.Index(features).get_indexer(feature_names), -1)[feature_codes]
    # Only feature days of a scored supplier, a catalogue feature and inside some row's window.
    keep = (feature_code >= 0) & (fd_supplier >= 0) & (when > since.min()) & (when <= days.max())
    if not keep.any():
        return out
    when, feature_code, fd_supplier = when[keep], feature_code[keep], fd_supplier[keep].astype(np.int64)
    # (supplier, feature, time) in one int64 key: times in whole days when they are, else their ranks.
    times = np.concatenate([when, days, since]).view(np.int64)
    day_ns = np.timedelta64(1, "D").astype("timedelta64[ns]").astype(np.int64)
    if (times % day_ns).any():
        times = np.unique(times, return_inverse=True)[1].astype(np.int64)
    else:
        times = times // day_ns
    times = times - times.min()
    t_when, t_day, t_since = np.split(times, [len(when), len(when) + len(days)])
    stride = int(times.max()) + 1
    keys = (fd_supplier * len(features) + feature_code) * stride + t_when
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    uses = pd.to_numeric(feature_days["uses"], errors="coerce").to_numpy(dtype=float)[keep][order]
    counted = ~np.isnan(uses)
    running_uses = np.concatenate([[0.0], np.cumsum(np.where(counted, uses, 0.0))])
    running_days = np.concatenate([[0.0], np.cumsum(counted.astype(float))])
    for j, feature in enumerate(features):
        group = (row_supplier * len(features) + j) * stride
        upper = np.searchsorted(keys, group + t_day, side="right")
        lower = np.searchsorted(keys, group + t_since, side="right")
        out[f"feat__{feature}__uses_30d"] = running_uses[upper] - running_uses[lower]
        out[f"feat__{feature}__active_days_30d"] = running_days[upper] - running_days[lower]
    return out


def build_features(engagement: pd.DataFrame, feature_days: pd.DataFrame | None, features: list[str],
                   columns: list[str] | None = None, usage: pd.DataFrame | None = None) -> pd.DataFrame:
    """The feature matrix of engagement rows, point in time.

    Args:
        engagement: rows of ``marts.supplier_engagement_daily`` (``supplier_id``, ``as_of_date`` and the
            metrics), any suppliers and days.
        feature_days: see ``feature_usage``.
        features: the catalogue's features (another product: its own event types).
        columns: the engagement columns to use (a trained model's list, so scoring builds the columns it
            was trained on; an absent one is all-missing); ``None``: ``engagement_columns(engagement)``.
        usage: the per-feature 30-day sums of these rows when already computed (``feature_usage``'s
            columns, aligned with ``engagement``; e.g. aggregated in PostgreSQL by
            ``churn_scoring.read_feature_windows``); then ``feature_days`` is not read.

    Returns:
        DataFrame aligned with ``engagement`` (same order, fresh index): ``supplier_id``, ``as_of_date``,
        per engagement column its value (float; log1p-scaled with sign unless in ``RATE_COLUMNS``; NaN
        when null) and ``<column>__missing`` (0/1), then the per-feature 30-day columns (log1p-scaled).
        Only the row itself and feature days up to its as-of day are read.
    """
    engagement = engagement.reset_index(drop=True)
    columns = engagement_columns(engagement) if columns is None else columns
    data: dict[str, np.ndarray] = {}
    for column in columns:
        if column in engagement and engagement[column].dtype.kind in "iuf":  # plain numpy numbers: as they are
            values = engagement[column].to_numpy(dtype=float)
        elif column in engagement:
            values = pd.to_numeric(engagement[column].astype(object), errors="coerce").to_numpy(dtype=float)
        else:
            values = np.full(len(engagement), np.nan)
        if column not in RATE_COLUMNS:
            values = np.sign(values) * np.log1p(np.abs(values))
        data[column] = values
        data[column + MISSING] = np.isnan(values).astype(float)
    if usage is None:
        usage = feature_usage(engagement, feature_days, features)
    for column in usage.columns:
        data[column] = np.log1p(usage[column].to_numpy(dtype=float))
    out = pd.DataFrame(data)
    out.insert(0, "as_of_date", pd.to_datetime(engagement["as_of_date"]).dt.date.to_numpy())
    out.insert(0, "supplier_id", engagement["supplier_id"].astype(str).to_numpy())
    return out


def weekly_days(first: date, last_as_of: date, every_days: int = 7) -> list[date]:
    """As-of days every ``every_days`` days counted back from ``last_as_of`` to ``first`` (ascending)."""
    if last_as_of < first:
        return []
    count = (last_as_of - first).days // every_days
    return [last_as_of - timedelta(days=every_days * k) for k in range(count, -1, -1)]


def describe_feature(name: str) -> str:
    """A feature column in words: ``events_30d`` -> "events in the last 30 days",
    ``feat__forms__uses_30d`` -> "uses of forms in the last 30 days"."""
    if name.startswith("feat__"):
        _, feature, kind = name.split("__", 2)
        what = "uses" if kind.startswith("uses") else "active days"
        return f"{what} of {feature.replace('_', ' ')} in the last 30 days"
    words = name
    for suffix, text in (("_7d", " in the last 7 days"), ("_30d", " in the last 30 days"),
                         ("_90d", " in the last 90 days"), ("_lifetime", " over the account's life")):
        if words.endswith(suffix):
            words = words[: -len(suffix)].replace("_", " ") + text
            break
    else:
        words = words.replace("_", " ")
    return words.replace("prev ", "previous ")
