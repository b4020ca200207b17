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

from cs_pipeline.core.db import ddl_transaction, now_utc, read_frame, relation_exists
from cs_pipeline.core.settings import Settings
from cs_pipeline.health.backtest import label_churn
from cs_pipeline.health.churn_features import (
    build_features,
    engagement_columns,
    weekly_days,
)
from cs_pipeline.health.churn_model import ChurnModel, ChurnModelError
from cs_pipeline.health.churn_scoring import WEEK, read_model_rows, score_for_comparison
from cs_pipeline.health.churn_train import TrainResult, train
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
SCORES_DDL = """
CREATE TABLE IF NOT EXISTS ops.churn_model_scores (
  version text NOT NULL,
  as_of_date date NOT NULL,
  supplier_id text NOT NULL,
  churn_probability numeric(5, 4) NOT NULL,
  PRIMARY KEY (as_of_date, version, supplier_id)  -- by day: a re-scored day drops its rows (forget_scores)
)
"""


def ensure_churn_tables(conn: psycopg.Connection) -> None:
    """Create ops.churn_models, ops.churn_model_scores (``churn_scoring.score_for_comparison``) and the
    health tables the model's backtest row goes to."""
    ensure_health_tables(conn)
    with ddl_transaction(conn):
        conn.execute("CREATE SCHEMA IF NOT EXISTS ops")
        conn.execute(DDL)
        conn.execute(SCORES_DDL)


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
    # The days the model's first week of scoring compares with (churn_probability_7d_ago), scored once now
    # rather than again by every daily run of that week. Only a saving: a failure leaves the model stored.
    try:
        week = [as_of - timedelta(days=k) for k in range(WEEK - 1, -1, -1)]
        score_for_comparison(conn, result.model, read_model_rows(conn, result.model, week), settings.churn_model)
    except psycopg.Error as exc:
        result.warnings.append(f"the probabilities of the {WEEK} days up to {as_of} were not stored "
                               f"({type(exc).__name__}); daily runs compute them again")
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
    """Rows of ops.churn_models, newest first (no ``features``/``metrics`` JSON; ``settings``, the deployed fit's
    chosen settings in words, from the metrics: None for models trained before they were recorded)."""
    ensure_churn_tables(conn)
    return read_frame(conn, "SELECT version, trained_at, training_as_of, churn_kind, horizon_days, algorithm, "
                            "metrics->>'settings' AS settings, training_rows, "
                            "churners, val_auc, val_auc_ci_low, val_auc_ci_high, scorecard_version, scorecard_auc, "
                            "recency_auc, brier, top_decile_lift FROM ops.churn_models ORDER BY trained_at DESC")


def comparison_rows(metrics: dict, algorithm_name: str) -> list[dict]:
    """The comparison table of one training: the model (its algorithm and the deployed fit's settings), the other
    candidate, and each baseline, on the same validation rows: ``name``, ``auc``, ``auc_95``,
    ``top_decile_lift``, ``brier`` (model only)."""
    def interval(ci):
        return f"{ci[0]:.3f}-{ci[1]:.3f}" if ci else ""

    # The figures are the validation folds' (each fold chose its own settings); the settings are the deployed fit's.
    chosen = f"{algorithm_name}; deployed: {metrics['settings']}" if metrics.get("settings") else algorithm_name
    rows = [{"name": f"churn model ({chosen})", "auc": metrics["auc"], "auc_95": interval(metrics["auc_ci"]),
             "top_decile_lift": metrics["top_decile_lift"], "brier": metrics["brier"]}]
    for algorithm, auc in metrics["candidates"].items():
        if algorithm != metrics["algorithm"]:
            rows.append({"name": f"candidate {algorithm} (not chosen)", "auc": auc, "auc_95": "",
                         "top_decile_lift": None, "brier": None})
    for name, b in metrics["baselines"].items():
        rows.append({"name": name, "auc": b["auc"], "auc_95": interval(b["auc_ci"]),
                     "top_decile_lift": b["top_decile_lift"], "brier": None})
    return rows
