"""Scoring with the churn model against the warehouse (issue 26): the per-feature 30-day windows of the scored
rows, ``churn_probability`` with the model's reasons, and ``churn_probability_7d_ago``, the same model's
probability for each supplier's row 7 days earlier (the playbook's ``rise_7d``). Called by
``health/window.score_window`` (``customer_health``) and, for the days a new model will compare with, by
``churn_service.train_churn_model``. Pure logic lives in ``churn_features``, ``churn_model`` and ``drivers``.

What a daily run reads (the scoring cost target of issue 26 item 7: at most 10 % of ``customer_health``):

- The day's per-feature windows come from ``marts.fct_feature_adoption`` when that mart is as of the day
  (its ``uses_30d`` / ``active_days_30d`` are the same 30-day windows of the same feature days: one row per
  supplier and feature), else they are aggregated from the feature days (``read_feature_windows``).
- The probabilities 7 days earlier are not recomputed when the same model already gave them: from this
  pass (a window of several days), from ``marts.customer_health`` (the day was scored by that model), or
  from ``ops.churn_model_scores`` (the 7 days up to a model's training as-of day, scored when it was
  trained: with a weekly retrain, the days a new model compares with were all scored by the model before).
  Only what none of these holds is featurised and predicted again.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from cs_pipeline.core.db import (
    columns_of,
    copy_frame,
    fetch_arrays,
    read_frame,
    read_frame_bulk,
    relation_exists,
)
from cs_pipeline.health.churn_features import FEATURE_WINDOW_DAYS, build_features
from cs_pipeline.health.churn_model import ChurnModel
from cs_pipeline.health.drivers import explain_churn

ADOPTION = "marts.fct_feature_adoption"
"""The feature-adoption mart: per supplier and catalogue feature as of its newest day, ``uses_30d`` and
``active_days_30d`` (dbt_project/models/marts/fct_feature_adoption.sql)."""
MODEL_SCORES = "ops.churn_model_scores"
"""Probabilities of the 7 days up to each model's training as-of day (``score_for_comparison``)."""
KEEP_SCORES_OF = 8
"""ops.churn_model_scores keeps the rows of the newest this many models (about two months of weekly models)."""
WEEK = 7
"""Days back of ``churn_probability_7d_ago`` (the playbook's ``rise_7d``)."""


FEATURE_DAYS = "intermediate.int_supplier_feature_days"
WINDOW_DAYS_PER_QUERY = 32
"""As-of days aggregated by one query of ``read_feature_windows`` (two filtered aggregates each)."""
WINDOW_GRID_BYTES = 64 << 20
"""Memory cap of one query's suppliers x features x days grid in ``read_feature_windows`` (bytes)."""


def read_feature_windows(conn: psycopg.Connection, rows: pd.DataFrame, features: list[str],
                         table: str = FEATURE_DAYS, window_days: int = FEATURE_WINDOW_DAYS,
                         adoption: str | None = None) -> pd.DataFrame:
    """``churn_features.feature_usage`` of ``rows`` computed in PostgreSQL: per row and catalogue feature the
    sum of the non-null ``uses`` and the number of feature-day rows with a ``uses`` in the ``window_days``
    days up to and including the row's as-of day, from ``table`` (``supplier_id, feature, activity_date,
    uses``: intermediate.int_supplier_feature_days).

    Args:
        rows: ``supplier_id``, ``as_of_date`` (UTC days: date or midnight timestamps), any order, repeats allowed.
        features: the catalogue's features (a feature without feature days gets zeros).
        adoption: the feature-adoption mart of ``table`` (``ADOPTION`` for ``FEATURE_DAYS``; None: not used).
            The rows of the day it is as of take its ``uses_30d`` / ``active_days_30d`` (the same sums of the
            same feature days, already aggregated by dbt: ``uses`` is never null there, a ``not_null`` test)
            when it holds every feature and every supplier of that day's rows and ``window_days`` is 30.

    Returns:
        DataFrame aligned with ``rows`` (fresh index), float columns ``feat__<feature>__uses_30d`` and
        ``feat__<feature>__active_days_30d``, the same values as ``feature_usage`` on the table's rows.

    Other days: one grouped scan per ``WINDOW_DAYS_PER_QUERY`` distinct as-of days (index on ``activity_date``),
    one filtered sum and count per as-of day, one row per supplier and feature read back instead of every
    feature day (752,000 rows for a day and its D-7 at 10,000 suppliers: about 1 s of CPU to read into
    pandas). Fewer days per scan when the suppliers x features grid of a scan would pass ``WINDOW_GRID_BYTES``.

    ``table`` and ``adoption`` are the project's own relation names (``schema.name``, quoted as identifiers),
    never user input.

    Raises:
        psycopg.Error: a query fails (e.g. the table lacks a column)."""
    columns = [f"feat__{f}__{kind}" for f in features for kind in ("uses_30d", "active_days_30d")]
    out = np.zeros((len(rows), len(columns)))
    if not (len(rows) and features and relation_exists(conn, table)):
        return pd.DataFrame(out, columns=columns)
    codes, suppliers = pd.factorize(rows["supplier_id"].astype(str))
    at_day, given = pd.factorize(rows["as_of_date"])  # a few distinct days: each converted to a date once
    row_days = np.append(pd.to_datetime(pd.Series(given)).dt.date.to_numpy(), None)[at_day]
    distinct = sorted(set(row_days))
    if adoption is not None and window_days == 30 and relation_exists(conn, adoption):
        day = conn.execute(sql.SQL("SELECT as_of_date FROM {} LIMIT 1").format(
            sql.Identifier(*adoption.split(".")))).fetchone()
        mine = row_days == (day[0] if day else None)
        grid = _adoption_grid(conn, adoption, day[0], pd.Index(pd.unique(codes[mine])), suppliers, features) \
            if mine.any() else None
        if grid is not None:
            out[mine] = grid[codes[mine]]
            distinct.remove(day[0])
    # The dense grid below holds suppliers x features x days x 2 floats: fewer days per query for a large
    # population or catalogue, so that it stays within WINDOW_GRID_BYTES.
    per_query = max(1, min(WINDOW_DAYS_PER_QUERY, WINDOW_GRID_BYTES // (len(suppliers) * len(features) * 16)))
    for start in range(0, len(distinct), per_query):
        chunk = distinct[start:start + per_query]
        low, high = chunk[0] - timedelta(days=window_days), chunk[-1]
        aggregates, params = [], []
        for day in chunk:
            # (day - window_days, day], without the comparisons the WHERE clause already makes
            bounds = [(sql.SQL("activity_date > %s"), day - timedelta(days=window_days))] * (day != chunk[0]) \
                + [(sql.SQL("activity_date <= %s"), day)] * (day != high)
            inside = sql.SQL(" FILTER (WHERE {})").format(sql.SQL(" AND ").join(b for b, _ in bounds)) \
                if bounds else sql.SQL("")
            # sums as PostgreSQL gives them (integer uses: whole numbers, read exactly)
            aggregates.append(sql.SQL("sum(uses){inside}, count(uses){inside}").format(inside=inside))
            params += [v for _, v in bounds] * 2
        # ids and features prefixed with "_": read as text by read_csv even when they look like numbers
        query = sql.SQL("SELECT '_' || supplier_id::text, '_' || feature::text, {} FROM {} "
                        "WHERE activity_date > %s AND activity_date <= %s GROUP BY 1, 2").format(
            sql.SQL(", ").join(aggregates), sql.Identifier(*table.split(".")))
        # Every supplier and feature of those days: fewer comparisons in PostgreSQL than a filter on the
        # scored suppliers and the catalogue; the others are dropped here.
        grid = _grid(read_frame_bulk(conn, query, [*params, low, high]), suppliers, features, len(chunk))
        at = pd.Index(chunk).get_indexer(row_days)
        mine = at >= 0
        out[mine] = grid[codes[mine], :, at[mine]].reshape(int(mine.sum()), -1)
    return pd.DataFrame(out, columns=columns)


def _grid(found: pd.DataFrame, suppliers: pd.Index, features: list[str], days: int) -> np.ndarray:
    """suppliers x features x days x (uses, active days) from rows ``'_' || supplier_id, '_' || feature``
    then ``days`` pairs of sums (NULL: 0); rows of other suppliers, other features or null keys dropped."""
    grid = np.zeros((len(suppliers), len(features), days, 2))
    if found.empty:
        return grid
    known = found.iloc[:, 0].notna() & found.iloc[:, 1].notna()  # a null id or feature matches no row
    who = suppliers.get_indexer(found.iloc[:, 0].astype(str).str[1:])
    what = pd.Index(features).get_indexer(found.iloc[:, 1].astype(str).str[1:])
    keep = known.to_numpy() & (who >= 0) & (what >= 0)
    sums = np.nan_to_num(found.iloc[:, 2:].to_numpy(dtype=float)).reshape(len(found), days, 2)
    grid[who[keep], what[keep]] = sums[keep]
    return grid


def _adoption_grid(conn: psycopg.Connection, adoption: str, day: date, needed: pd.Index, suppliers: pd.Index,
                   features: list[str]) -> np.ndarray | None:
    """suppliers x (features x (uses_30d, active_days_30d)) of ``day`` from the feature-adoption mart, pivoted
    in PostgreSQL (one row per supplier), or None when it lacks one of the ``needed`` supplier codes or a
    supplier's row for one of the ``features`` (then the feature days are aggregated)."""
    pivot = [sql.SQL("sum(uses_30d) FILTER (WHERE feature = %s), sum(active_days_30d) FILTER (WHERE feature = %s)")
             for _ in features]
    query = sql.SQL("SELECT array_agg(supplier_id), array_agg(sums) FROM (SELECT supplier_id::text AS supplier_id, "
                    "ARRAY[{}] AS sums FROM {} WHERE as_of_date = %s AND supplier_id IS NOT NULL "
                    "GROUP BY supplier_id) AS pivoted").format(
        sql.SQL(", ").join(pivot), sql.Identifier(*adoption.split(".")))
    ids, sums = fetch_arrays(conn, query, [*np.repeat(features, 2), day], (object, float))
    values = sums.reshape(len(ids), len(features), 2)
    who = suppliers.get_indexer(ids)
    # The mart holds a row per supplier and catalogue feature, 0 without use: a null sum is a feature it
    # does not hold for that supplier.
    if np.isnan(values).any() or not np.isin(needed, who).all():
        return None
    grid = np.zeros((len(suppliers), len(features), 2))
    grid[who[who >= 0]] = values[who >= 0]
    return grid.reshape(len(suppliers), -1)


def predict_rows(conn: psycopg.Connection, model: ChurnModel, rows: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """(calibrated probability per row, rounded to 4 decimals as stored; the feature matrix,
    ``model_features``) of engagement rows.

    Raises:
        psycopg.Error: a read fails."""
    features = model_features(conn, model, rows)
    return np.round(model.predict(features), 4), features


def model_features(conn: psycopg.Connection, model: ChurnModel, rows: pd.DataFrame) -> pd.DataFrame:
    """The feature matrix (``churn_features.build_features``) of engagement rows (``supplier_id``,
    ``as_of_date`` and the model's ``columns``), each with data up to its own day (per-feature windows:
    ``read_feature_windows`` with the feature-adoption mart).

    Raises:
        psycopg.Error: a read fails."""
    return build_features(rows, None, model.catalogue, model.columns,
                          usage=read_feature_windows(conn, rows, model.catalogue, adoption=ADOPTION))


def read_model_rows(conn: psycopg.Connection, model: ChurnModel, days: list[date]) -> pd.DataFrame:
    """The rows of marts.supplier_engagement_daily of ``days`` (UTC) with only what ``model`` reads:
    ``supplier_id``, ``as_of_date`` and those of its ``columns`` the mart still has (an absent one scores as
    all-missing, ``build_features``).

    Raises:
        psycopg.Error: a read fails."""
    present = columns_of(conn, "marts", "supplier_engagement_daily")
    columns = [c for c in ["supplier_id", "as_of_date", *model.columns] if c in present]
    return read_frame(conn, sql.SQL("SELECT {} FROM marts.supplier_engagement_daily WHERE as_of_date = ANY(%s)")
                      .format(sql.SQL(", ").join(map(sql.Identifier, columns))), (days,))


def stored_probabilities(conn: psycopg.Connection, version: str, days: list[date]) -> pd.DataFrame:
    """The probabilities ``version`` already gave for ``days``: from marts.customer_health (the days it scored)
    and ops.churn_model_scores (the days up to its training as-of day). Columns ``supplier_id`` (str),
    ``as_of_date`` (datetime64[ns], UTC day), ``churn_probability`` (float 0-1); customer_health's row first
    when both hold one.

    Raises:
        psycopg.Error: a read fails."""
    parts = []
    for source, (table, column) in enumerate((("marts.customer_health", "churn_model_version"),
                                              (MODEL_SCORES, "version"))):
        if days and relation_exists(conn, table):
            # the day as days since 1970-01-01, whatever the server's DateStyle
            parts.append(sql.SQL("SELECT supplier_id::text AS supplier_id, "
                                 "as_of_date::date - DATE '1970-01-01' AS day, "
                                 "churn_probability::float8 AS p, {} AS source FROM {} "
                                 "WHERE {} = %s AND as_of_date = ANY(%s) AND churn_probability IS NOT NULL").format(
                sql.Literal(source), sql.Identifier(*table.split(".")), sql.Identifier(column)))
    if not parts:
        return pd.DataFrame({"supplier_id": pd.Series([], dtype=object),
                             "as_of_date": pd.Series([], dtype="datetime64[ns]"), "churn_probability": []})
    query = sql.SQL("SELECT array_agg(supplier_id), array_agg(day), array_agg(p), array_agg(source) "
                    "FROM ({}) AS found").format(sql.SQL(" UNION ALL ").join(parts))
    ids, day, p, source = fetch_arrays(conn, query, [version, days] * len(parts), (object, np.int64, float, np.int64))
    first = np.argsort(source, kind="stable")  # customer_health's rows first
    return pd.DataFrame({"supplier_id": ids[first],
                         "as_of_date": day[first].astype("datetime64[D]").astype("datetime64[ns]"),
                         "churn_probability": p[first]})


EPOCH = date(1970, 1, 1).toordinal() - (1 << 19)
"""Day 0 of ``_Keys``: 2**19 days (about 1,435 years) before 1970-01-01, so that every day is 0..2**20 - 1."""


class _Keys:
    """(supplier, UTC day) pairs as int64 keys: the supplier's position in ``suppliers`` times 2**20 plus the
    day's number since ``EPOCH`` (-1 for a supplier outside ``suppliers``); ``days`` reads the days back."""

    def __init__(self, suppliers: pd.Series) -> None:
        self.suppliers = pd.Index(pd.unique(suppliers.astype(str).to_numpy(dtype=object)))

    def of(self, suppliers: pd.Series, days: pd.Series) -> np.ndarray:
        """The keys of (``suppliers[i]``, ``days[i]``) (days: dates or datetimes, UTC; -1 for a supplier
        outside this key's suppliers or a null day)."""
        code = self.suppliers.get_indexer(suppliers.astype(str).to_numpy(dtype=object)).astype(np.int64)
        at, distinct = pd.factorize(days)  # a few distinct days: converted once each; -1: a null day
        day = pd.to_datetime(pd.Series(distinct)).to_numpy(dtype="datetime64[D]").astype(np.int64)
        day = np.append(day, 0)[at]
        return np.where((code >= 0) & (at >= 0), (code << 20) + day + (1 << 19), -1)

    @staticmethod
    def days(keys: np.ndarray) -> list[date]:
        """The distinct days (ascending) of keys (none -1)."""
        return [date.fromordinal(int(d) + EPOCH) for d in np.unique(keys & ((1 << 20) - 1))]


def score_churn(conn: psycopg.Connection, model: ChurnModel | None, engagement: pd.DataFrame,
                week_ago: bool = False) -> pd.DataFrame:
    """``churn_probability`` (float 0-1, NaN without a model), ``churn_model_version`` (None without one),
    ``churn_reasons`` (the model's top three reasons in words, "" without one; ``drivers.explain_churn``,
    which gives the probability and the reasons from one evaluation of the model) and
    ``churn_probability_7d_ago`` (float 0-1 with ``week_ago``: the same model's probability for the
    supplier's row of marts.supplier_engagement_daily ``WEEK`` days before the row's ``as_of_date``; NaN when
    there is no such row, no model, or ``week_ago`` is False),
    aligned with ``engagement`` (rows of that mart: ``supplier_id``, ``as_of_date`` and the model's columns).

    Scoring the earlier rows with the *same* model is what makes the playbook's ``rise_7d`` a change in the
    supplier, never a change of model (issue 26 item 6): with a weekly retrain, the model that scored the day
    7 days earlier is always another one. They use only data up to their own day (point in time). A
    probability the model already gave for such a row is taken as given: a row of ``engagement`` itself, then
    ``stored_probabilities``; only the rest are read and computed.

    Raises:
        psycopg.Error: a read fails.
        ValueError: a gradient boosting model that this version cannot explain (``tree_paths``)."""
    n = len(engagement)
    if model is None or n == 0:
        return pd.DataFrame({"churn_probability": np.full(n, np.nan), "churn_model_version": [None] * n,
                             "churn_reasons": [""] * n, "churn_probability_7d_ago": np.full(n, np.nan)})
    engagement = engagement.reset_index(drop=True)
    probability, reasons = explain_churn(model, model_features(conn, model, engagement))
    probability = np.round(probability, 4)  # as stored (predict_rows)
    before = _earlier_probabilities(conn, model, engagement, probability) if week_ago else np.full(n, np.nan)
    return pd.DataFrame({"churn_probability": probability, "churn_model_version": [model.version] * n,
                         "churn_reasons": reasons, "churn_probability_7d_ago": before})


def _earlier_probabilities(conn: psycopg.Connection, model: ChurnModel, engagement: pd.DataFrame,
                           probability: np.ndarray) -> np.ndarray:
    """Per row of ``engagement`` ``model``'s probability of the supplier's engagement row ``WEEK`` days
    earlier (NaN: no such row): from ``engagement`` itself (``probability``), then ``stored_probabilities``,
    then the rows read and scored."""
    keys = _Keys(engagement["supplier_id"])
    own = keys.of(engagement["supplier_id"], engagement["as_of_date"])
    wanted = np.where(own >= 0, own - WEEK, -1)  # the same supplier, WEEK days earlier
    known = pd.Series(probability, index=own)
    known = known[(known.index >= 0) & ~known.index.duplicated(keep="last")]
    missing = np.unique(wanted[(wanted >= 0) & ~np.isin(wanted, known.index)])
    if len(missing):
        stored = stored_probabilities(conn, model.version, _Keys.days(missing))
        stored = pd.Series(stored["churn_probability"].to_numpy(),
                           index=keys.of(stored["supplier_id"], stored["as_of_date"]))
        stored = stored[np.isin(stored.index, missing) & ~stored.index.duplicated(keep="first")]  # never -1
        known = pd.concat([known, stored])
        missing = missing[~np.isin(missing, known.index)]
    if len(missing):
        rows = read_model_rows(conn, model, _Keys.days(missing))
        at = keys.of(rows["supplier_id"], rows["as_of_date"])
        wanted_rows = np.isin(at, missing)
        rows = rows.loc[wanted_rows].reset_index(drop=True)
        known = pd.concat([known, pd.Series(predict_rows(conn, model, rows)[0], index=at[wanted_rows])])
    known = known[~known.index.duplicated(keep="first")]
    return np.where(wanted >= 0, known.reindex(wanted).to_numpy(dtype=float), np.nan)


def score_for_comparison(conn: psycopg.Connection, model: ChurnModel, engagement: pd.DataFrame,
                         pinned: str | None = None) -> int:
    """Store in ops.churn_model_scores ``model``'s probabilities of ``engagement`` (the rows of the ``WEEK``
    days up to its training as-of day: the days its first week of scoring compares with; a repeated
    (supplier, day) once); replaces the model's earlier rows and drops those of models other than the
    ``KEEP_SCORES_OF`` latest by training as-of day and the ``pinned`` version (``CS_PIPELINE_CHURN_MODEL``):
    a missing row is only recomputed. Returns the rows written.

    Raises:
        psycopg.Error: ops.churn_model_scores is missing (``churn_service.ensure_churn_tables``)."""
    rows = engagement.drop_duplicates(["supplier_id", "as_of_date"]).reset_index(drop=True)
    with conn.transaction():  # a savepoint inside the caller's transaction: a failure here leaves it usable
        probability = predict_rows(conn, model, rows)[0] if len(rows) else np.zeros(0)
        frame = pd.DataFrame({"version": model.version, "as_of_date": pd.to_datetime(rows["as_of_date"]).dt.date,
                              "supplier_id": rows["supplier_id"].astype(str), "churn_probability": probability})
        conn.execute("DELETE FROM ops.churn_model_scores WHERE version = %s OR (version IS DISTINCT FROM %s AND "
                     "version NOT IN (SELECT version FROM ops.churn_models "
                     "ORDER BY training_as_of DESC, trained_at DESC LIMIT %s))",
                     (model.version, pinned, KEEP_SCORES_OF))
        return copy_frame(conn, ("ops", "churn_model_scores"), frame, list(frame.columns))


def forget_scores(conn: psycopg.Connection, days: list[date]) -> None:
    """Drop the ops.churn_model_scores rows of ``days`` (UTC): days ``customer_health`` scores again after their
    data changed (a re-run, a full refresh), so that a probability stored from the older data is recomputed
    rather than taken as given."""
    if days and relation_exists(conn, MODEL_SCORES):
        with conn.transaction():
            conn.execute("DELETE FROM ops.churn_model_scores WHERE as_of_date = ANY(%s)", (days,))
