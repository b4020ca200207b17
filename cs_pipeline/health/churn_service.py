"""The churn model against the warehouse (issue 26): train and store (``ops.churn_models`` and a file under
``$CS_PIPELINE_HOME/models/<version>/``), list, load the active model, and score engagement rows. Called
by the ``models/churn_model`` asset, ``cs-pipeline model train|list`` and ``customer_health``; the logic
lives in ``churn_features``, ``churn_model`` and ``churn_train``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import psycopg
from psycopg import sql

from cs_pipeline.core.db import ddl_transaction, now_utc, read_frame, read_frame_bulk, relation_exists
from cs_pipeline.core.settings import Settings
from cs_pipeline.health.backtest import label_churn
from cs_pipeline.health.churn_features import (
    FEATURE_WINDOW_DAYS,
    build_features,
    engagement_columns,
    weekly_days,
)
from cs_pipeline.health.churn_model import ChurnModel, ChurnModelError
from cs_pipeline.health.churn_train import TrainResult, train
from cs_pipeline.health.drivers import churn_reasons
from cs_pipeline.health.scorecard import Churn, Scorecard, load_scorecard
from cs_pipeline.health.scoring import score_suppliers, seasonal_index_from_sums
from cs_pipeline.health.store import (
    ensure_health_tables,
    read_activity_days,
    read_seasonal_sums,
)

MODEL_FILE = "model.joblib"
DDL = """
CREATE TABLE IF NOT EXISTS ops.churn_models (
  version text PRIMARY KEY,
  trained_at timestamptz NOT NULL,
  training_as_of date NOT NULL,
  churn_kind text NOT NULL,
  horizon_days integer NOT NULL,
  algorithm text NOT NULL,
  features jsonb NOT NULL,
  training_rows integer NOT NULL,
  churners integer NOT NULL,
  val_auc numeric(6, 4),
  val_auc_ci_low numeric(6, 4),
  val_auc_ci_high numeric(6, 4),
  scorecard_version text,
  scorecard_auc numeric(6, 4),
  recency_auc numeric(6, 4),
  brier numeric(6, 4),
  top_decile_lift numeric(8, 3),
  metrics jsonb NOT NULL
)
"""


def ensure_churn_tables(conn: psycopg.Connection) -> None:
    """Create ops.churn_models (and the health tables the model's backtest row goes to)."""
    ensure_health_tables(conn)
    with ddl_transaction(conn):
        conn.execute("CREATE SCHEMA IF NOT EXISTS ops")
        conn.execute(DDL)


def parse_churn(text: str) -> Churn:
    """``KIND:DAYS`` (``cancellation:30``, ``inactivity:90``) as a ``Churn`` block.

    Raises:
        ValueError: not of that form (the message says the form)."""
    kind, _, days = text.partition(":")
    try:
        return Churn(kind=kind.strip(), horizon_days=int(days))
    except Exception as exc:
        raise ValueError(f"--churn {text!r}: use KIND:DAYS with KIND cancellation or inactivity, e.g. cancellation:30") from exc


def models_dir(settings: Settings) -> Path:
    """``$CS_PIPELINE_HOME/models`` (resolved): the only folder models are loaded from."""
    return (settings.home / "models").resolve()


def model_path(settings: Settings, version: str) -> Path:
    """The model file of ``version``: ``$CS_PIPELINE_HOME/models/<version>/model.joblib``.

    Raises:
        ChurnModelError: the resolved path (symbolic links followed) is not inside the models folder, e.g. a
            version of ``../x``: a joblib file runs code when loaded, so nothing outside is ever opened."""
    root = models_dir(settings)
    path = (root / version / MODEL_FILE).resolve()
    if not path.is_relative_to(root) or path.parent == root:
        raise ChurnModelError(f"churn model {version!r}: its file would be outside {root}; not loaded")
    return path


def load_model(settings: Settings, version: str) -> ChurnModel:
    """Load a stored model by version (only from the models folder, see ``model_path``).

    Raises:
        ChurnModelError: outside the models folder, or no such file."""
    path = model_path(settings, version)
    if not path.is_file():
        raise ChurnModelError(f"churn model {version!r}: no file {path}")
    model = joblib.load(path)
    if not isinstance(model, ChurnModel):
        raise ChurnModelError(f"churn model {version!r}: {path} holds no churn model")
    return model


def active_model(conn: psycopg.Connection, settings: Settings) -> ChurnModel | None:
    """The model that scores: ``settings.churn_model`` (``CS_PIPELINE_CHURN_MODEL``) or the newest row of
    ops.churn_models; None when there is none. Raises ChurnModelError as ``load_model``."""
    version = settings.churn_model
    if version is None:
        if not relation_exists(conn, "ops.churn_models"):
            return None
        row = conn.execute("SELECT version FROM ops.churn_models ORDER BY trained_at DESC LIMIT 1").fetchone()
        if row is None:
            return None
        version = row[0]
    return load_model(settings, version)


def catalogue_features(conn: psycopg.Connection) -> list[str]:
    """The feature catalogue's features (the product's own), sorted."""
    if relation_exists(conn, "intermediate.int_feature_catalogue_features"):
        frame = read_frame(conn, "SELECT DISTINCT feature FROM intermediate.int_feature_catalogue_features")
        return sorted(frame["feature"].astype(str))
    return []


def read_feature_days(conn: psycopg.Connection, first: date, last: date) -> pd.DataFrame:
    """``supplier_id, feature, activity_date, uses`` of intermediate.int_supplier_feature_days in [first, last]."""
    if not relation_exists(conn, "intermediate.int_supplier_feature_days"):
        return pd.DataFrame(columns=["supplier_id", "feature", "activity_date", "uses"])
    return read_frame(conn, "SELECT supplier_id, feature, activity_date, uses FROM intermediate.int_supplier_feature_days "
                            "WHERE activity_date BETWEEN %s AND %s", (first, last))


def read_rows(conn: psycopg.Connection, days: list[date]) -> pd.DataFrame:
    """Engagement rows of the given as-of days (accounts already cancelled left out: they cannot churn)."""
    rows = read_frame(conn, "SELECT * FROM marts.supplier_engagement_daily WHERE as_of_date = ANY(%s) "
                            "ORDER BY as_of_date, supplier_id", (days,))
    if "status" in rows:
        rows = rows.loc[rows["status"].ne("cancelled")]
    return rows.reset_index(drop=True)


def features_for(conn: psycopg.Connection, engagement: pd.DataFrame, columns: list[str] | None,
                 catalogue: list[str]) -> pd.DataFrame:
    """``build_features`` of engagement rows with the feature days they need (30 days up to each row)."""
    if engagement.empty:
        return build_features(engagement, pd.DataFrame(), catalogue, columns)
    days = pd.to_datetime(engagement["as_of_date"]).dt.date
    feature_days = read_feature_days(conn, days.min() - timedelta(days=30), days.max())
    return build_features(engagement, feature_days, catalogue, columns)


FEATURE_DAYS = "intermediate.int_supplier_feature_days"
WINDOW_DAYS_PER_QUERY = 32
"""As-of days aggregated by one query of ``read_feature_windows`` (two filtered aggregates each)."""
WINDOW_GRID_BYTES = 64 << 20
"""Memory cap of one query's suppliers x features x days grid in ``read_feature_windows`` (bytes)."""


def read_feature_windows(conn: psycopg.Connection, rows: pd.DataFrame, features: list[str],
                         table: str = FEATURE_DAYS, window_days: int = FEATURE_WINDOW_DAYS) -> pd.DataFrame:
    """``churn_features.feature_usage`` of ``rows`` computed in PostgreSQL: per row and catalogue feature the
    sum of the non-null ``uses`` and the number of feature-day rows with a ``uses`` in the ``window_days``
    days up to and including the row's as-of day, from ``table`` (``supplier_id, feature, activity_date,
    uses``: intermediate.int_supplier_feature_days).

    Args:
        rows: ``supplier_id``, ``as_of_date`` (UTC days: date or midnight timestamps), any order, repeats allowed.
        features: the catalogue's features (a feature without feature days gets zeros).

    Returns:
        DataFrame aligned with ``rows`` (fresh index), float columns ``feat__<feature>__uses_30d`` and
        ``feat__<feature>__active_days_30d``, the same values as ``feature_usage`` on the table's rows.

    One grouped scan per ``WINDOW_DAYS_PER_QUERY`` distinct as-of days (BRIN on ``activity_date``), one
    filtered sum and count per as-of day: a daily run (the day and
    the day 7 days before, ``churn_probability_7d_ago``) returns one row per supplier and feature instead of
    every feature day of the 37 days (752,000 rows at 10,000 suppliers: about 1 s of CPU to read into pandas).
    Fewer days per scan when the suppliers x features grid of a scan would pass ``WINDOW_GRID_BYTES``.

    ``table`` is the project's own relation name (``schema.name``, quoted as identifiers), never user input.

    Raises:
        psycopg.Error: the query fails (e.g. the table lacks a column)."""
    columns = [f"feat__{f}__{kind}" for f in features for kind in ("uses_30d", "active_days_30d")]
    out = np.zeros((len(rows), len(columns)))
    if len(rows) and features and relation_exists(conn, table):
        codes, suppliers = pd.factorize(rows["supplier_id"].astype(str))
        row_days = pd.to_datetime(rows["as_of_date"]).dt.date.to_numpy()
        distinct = sorted(set(row_days))
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
            found = read_frame_bulk(conn, query, [*params, low, high])
            if found.empty:
                continue
            known = found.iloc[:, 0].notna() & found.iloc[:, 1].notna()  # a null id or feature matches no row
            who = suppliers.get_indexer(found.iloc[:, 0].astype(str).str[1:])
            what = pd.Index(features).get_indexer(found.iloc[:, 1].astype(str).str[1:])
            keep = known.to_numpy() & (who >= 0) & (what >= 0)
            sums = np.nan_to_num(found.iloc[:, 2:].to_numpy(dtype=float)).reshape(len(found), len(chunk), 2)
            # suppliers x features x as-of days x (uses, active days)
            grid = np.zeros((len(suppliers), len(features), len(chunk), 2))
            grid[who[keep], what[keep]] = sums[keep]
            at = pd.Index(chunk).get_indexer(row_days)
            mine = at >= 0
            out[mine] = grid[codes[mine], :, at[mine]].reshape(int(mine.sum()), -1)
    return pd.DataFrame(out, columns=columns)


@dataclass
class Trained:
    """A stored training: the result, the file written and the scorecard compared."""

    result: TrainResult
    path: Path
    scorecard: str


def train_churn_model(conn: psycopg.Connection, settings: Settings, *, as_of: date | None = None,
                      churn: Churn | None = None, algorithm: str = "auto", scorecard: Scorecard | None = None) -> Trained:
    """Train on the warehouse's history up to ``as_of`` (default: its last engagement day), store the model
    file and its ops.churn_models row, and add its validation row to marts.health_score_backtest.

    The label is ``churn`` or the scorecard's ``churn`` block (``settings.scorecard`` by default); training
    rows are the weekly as-of days whose horizon ended by ``as_of``. The scorecard, recency
    (``days_since_last_activity``) and tenure are compared on the same validation rows.

    Raises:
        ChurnModelError: no history, or a refusal of ``churn_train.train`` (one line).
    """
    ensure_churn_tables(conn)
    card = scorecard or load_scorecard(settings.scorecard)
    churn = churn or card.churn
    first, last = conn.execute("SELECT min(as_of_date), max(as_of_date) FROM marts.supplier_engagement_daily").fetchone()
    if first is None:
        raise ChurnModelError("churn model refused: no engagement history yet (run the pipeline first)")
    as_of = as_of or last
    days = weekly_days(first, as_of - timedelta(days=churn.horizon_days))
    engagement = read_rows(conn, days) if days else pd.DataFrame(columns=["supplier_id", "as_of_date"])
    churn_dates = activity = None
    if churn.kind == "cancellation":
        frame = read_frame(conn, "SELECT supplier_id, cancelled_date FROM marts.dim_suppliers WHERE cancelled_date <= %s",
                           (as_of,))
        churn_dates = pd.Series(pd.to_datetime(frame["cancelled_date"]).to_numpy(), index=frame["supplier_id"].to_numpy())
    else:
        activity = read_activity_days(conn, first, as_of, churn.events)
    labels = label_churn(engagement, churn, churn_dates, activity) if len(engagement) else np.zeros(0, dtype=bool)
    catalogue = catalogue_features(conn)
    columns = engagement_columns(engagement)
    features = features_for(conn, engagement, columns, catalogue)
    baselines = {}
    if len(engagement):
        seasonal = None
        if card.seasonal_metrics and card.seasonality.enabled:
            sums = read_seasonal_sums(conn, as_of - timedelta(days=730), as_of, card.seasonal_metrics)
            seasonal = seasonal_index_from_sums(sums, card.seasonal_metrics, card.seasonality)
        try:
            health = score_suppliers(engagement, card, seasonal=seasonal)["health_score"].to_numpy(dtype=float)
            baselines[f"scorecard {card.version}"] = -health
        except KeyError:  # the mart lacks a metric the scorecard reads: no scorecard comparison
            pass
        baselines["recency"] = pd.to_numeric(engagement.get("days_since_last_activity"), errors="coerce") \
            .astype(float).fillna(1e6).to_numpy()
        baselines["tenure"] = -pd.to_numeric(engagement.get("tenure_days"), errors="coerce").astype(float).fillna(0).to_numpy()
    result = train(features, labels, horizon_days=churn.horizon_days, churn_kind=churn.kind, training_as_of=as_of,
                   columns=columns, catalogue=catalogue, algorithm=algorithm, baselines=baselines, trained_at=now_utc())
    path = store_model(conn, settings, result, card.version)
    return Trained(result=result, path=path, scorecard=card.version)


def store_model(conn: psycopg.Connection, settings: Settings, result: TrainResult, scorecard_version: str) -> Path:
    """Write the model file and its ops.churn_models and marts.health_score_backtest rows (one transaction)."""
    model, m = result.model, result.metrics
    path = model_path(settings, model.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, path)
    card = m["baselines"].get(f"scorecard {scorecard_version}", {})
    ci = m["auc_ci"] or [None, None]
    first_day, last_day = m["validation_days"].split("..")
    with conn.transaction():
        conn.execute(
            "INSERT INTO ops.churn_models (version, trained_at, training_as_of, churn_kind, horizon_days, algorithm, "
            "features, training_rows, churners, val_auc, val_auc_ci_low, val_auc_ci_high, scorecard_version, "
            "scorecard_auc, recency_auc, brier, top_decile_lift, metrics) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (model.version, model.trained_at, model.training_as_of, model.churn_kind, model.horizon_days,
             model.algorithm, json.dumps(model.inputs), m["training_rows"], m["churners"], m["auc"], ci[0], ci[1],
             scorecard_version, card.get("auc"), m["baselines"].get("recency", {}).get("auc"), m["brier"],
             m["top_decile_lift"], json.dumps(m | {"warnings": result.warnings})))
        conn.execute(
            "INSERT INTO marts.health_score_backtest (scorecard_version, evaluated_at, first_day, last_day, horizon_days, "
            "observations, churners, auc, churn_rate, critical_lift, churn_rate_by_level, calibration, churn_kind, "
            "top_decile_lift, brier, auc_ci_low, auc_ci_high, kind) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, NULL, '{}', %s, %s, %s, %s, %s, %s, 'model')",
            (model.version, model.trained_at, first_day, last_day, model.horizon_days, m["validation_rows"],
             m["validation_churners"], m["auc"], m["validation_churners"] / max(1, m["validation_rows"]),
             json.dumps({f"decile {c['decile']}": {"predicted": c["predicted"], "observed": c["observed"]}
                         for c in m["calibration"]}), model.churn_kind,
             m["top_decile_lift"], m["brier"], ci[0], ci[1]))
    return path


def list_models(conn: psycopg.Connection) -> pd.DataFrame:
    """Rows of ops.churn_models, newest first (no ``features``/``metrics`` JSON)."""
    ensure_churn_tables(conn)
    return read_frame(conn, "SELECT version, trained_at, training_as_of, churn_kind, horizon_days, algorithm, training_rows, "
                            "churners, val_auc, val_auc_ci_low, val_auc_ci_high, scorecard_version, scorecard_auc, "
                            "recency_auc, brier, top_decile_lift FROM ops.churn_models ORDER BY trained_at DESC")


def score_churn(conn: psycopg.Connection, model: ChurnModel | None, engagement: pd.DataFrame,
                week_ago: pd.DataFrame | None = None) -> pd.DataFrame:
    """``churn_probability`` (float 0-1, NaN without a model), ``churn_model_version`` (None without one),
    ``churn_reasons`` (the model's top three reasons in words, "" without one; ``drivers.churn_reasons``, the
    model's reasons built over the whole frame) and ``churn_probability_7d_ago`` (float 0-1:
    the same model's probability for the supplier's engagement row 7 days before the row's ``as_of_date``,
    from ``week_ago``; NaN when that row is absent or there is no model), aligned with ``engagement``.

    ``week_ago``: engagement rows (same columns) of the days 7 days earlier; rows without a match are
    ignored. Scoring them with the *same* model is what makes the playbook's ``rise_7d`` a change in the
    supplier, never a change of model (issue 26 item 6): with a weekly retrain, the model that scored the
    day 7 days earlier is always another one. They use only data up to their own day (point in time)."""
    n = len(engagement)
    if model is None or n == 0:
        return pd.DataFrame({"churn_probability": np.full(n, np.nan), "churn_model_version": [None] * n,
                             "churn_reasons": [""] * n, "churn_probability_7d_ago": np.full(n, np.nan)})
    engagement = engagement.reset_index(drop=True)
    earlier = week_ago.reset_index(drop=True) if week_ago is not None else engagement.iloc[:0]
    both = pd.concat([engagement, earlier], ignore_index=True)
    features = build_features(both, None, model.catalogue, model.columns,
                              usage=read_feature_windows(conn, both, model.catalogue))
    probability = np.round(model.predict(features), 4)
    now = features.iloc[:n].reset_index(drop=True)
    before = pd.Series(probability[n:], index=pd.MultiIndex.from_arrays([
        earlier["supplier_id"].astype(str).to_numpy(), pd.to_datetime(earlier["as_of_date"]).to_numpy()]))
    before = before[~before.index.duplicated(keep="last")]
    wanted = pd.MultiIndex.from_arrays([engagement["supplier_id"].astype(str).to_numpy(),
                                        (pd.to_datetime(engagement["as_of_date"]) - pd.Timedelta(days=7)).to_numpy()])
    return pd.DataFrame({"churn_probability": probability[:n], "churn_model_version": [model.version] * n,
                         "churn_reasons": churn_reasons(model, now),
                         "churn_probability_7d_ago": before.reindex(wanted).to_numpy(dtype=float)})


def comparison_rows(metrics: dict, algorithm_name: str) -> list[dict]:
    """The comparison table of one training: the model, the other candidate, and each baseline, on the same
    validation rows: ``name``, ``auc``, ``auc_95``, ``top_decile_lift``, ``brier`` (model only)."""
    def interval(ci):
        return f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else ""

    rows = [{"name": f"churn model ({algorithm_name})", "auc": metrics["auc"], "auc_95": interval(metrics["auc_ci"]),
             "top_decile_lift": metrics["top_decile_lift"], "brier": metrics["brier"]}]
    for algorithm, auc in metrics["candidates"].items():
        if algorithm != metrics["algorithm"]:
            rows.append({"name": f"candidate {algorithm} (not chosen)", "auc": auc, "auc_95": "",
                         "top_decile_lift": None, "brier": None})
    for name, b in metrics["baselines"].items():
        rows.append({"name": name, "auc": b["auc"], "auc_95": interval(b["auc_ci"]),
                     "top_decile_lift": b["top_decile_lift"], "brier": None})
    return rows
