"""Issue 26 item 7: the churn model's reasons in words built over the whole frame (``drivers.churn_reasons``,
what customer_health writes into ``drivers``, the one implementation of the reasons) say exactly what the
previous per-row ``explain`` said (kept below as the reference), row by row, for both algorithms, on every
row of a planted-signal history (missing values, values at the median and near-zero probabilities included)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cs_pipeline.health.churn_features import RATE_COLUMNS, describe_feature
from cs_pipeline.health.churn_model import _groups, one_thread
from cs_pipeline.health.drivers import churn_reasons, reason_words
from tests.health.test_churn_model import fit, planted


@pytest.fixture(scope="module")
def data():
    engagement, fd, labels, probability = planted(accounts=300, weeks=12, seed=7)
    # Some missing values, so the "unknown" wording is exercised.
    engagement.loc[engagement.index[::9], "client_activity_rate"] = np.nan
    engagement.loc[engagement.index[::13], "days_since_last_login"] = np.nan
    return engagement, fd, labels, probability


@pytest.mark.parametrize("algorithm", ["logistic", "gbm"])
def test_reasons_over_the_frame_equal_the_per_row_definition(data, algorithm):
    result, features = fit(data, algorithm=algorithm)
    with one_thread():
        expected = reference_explain(result.model, features)
    got = churn_reasons(result.model, features)
    assert len(got) == len(features)
    assert sum(1 for r in expected if r) > len(features) // 4  # most rows have a reason to compare
    assert got == expected
    assert churn_reasons(result.model, features.iloc[0:0]) == []


def test_reason_words_cover_every_wording():
    names = ["events_30d", "stickiness", "feat__forms__uses_30d"]
    described = ["events in the last 30 days", "stickiness", "uses of forms in the last 30 days"]
    medians = np.array([np.log1p(10.0), 0.5, 0.0])
    rates = np.array([False, True, False])
    which = np.array([0, 0, 1, 2, 0])
    value = np.array([np.log1p(2.0), np.log1p(10.2), 0.8, np.log1p(3.0), np.nan])
    missing = np.array([False, False, False, False, True])
    delta = np.array([0.123, 0.05, 0.0149, 0.2, 0.01])
    assert reason_words(names, described, medians, rates, which, value, missing, delta).tolist() == [
        "events in the last 30 days 80 % below similar accounts: +12 % churn risk",
        "events in the last 30 days as for similar accounts: +5 % churn risk",
        "stickiness 60 % above similar accounts: +1 % churn risk",
        "uses of forms in the last 30 days 3 against 0 for similar accounts: +20 % churn risk",
        "events in the last 30 days unknown: +1 % churn risk",
    ]


def _words(model, group: str, value: float, missing: bool) -> str:
    text = describe_feature(group)
    if missing or np.isnan(value):
        return f"{text} unknown"
    median = model.medians.get(group, np.nan)
    if group not in RATE_COLUMNS:  # back from log1p to the metric's own scale
        value, median = np.sign(value) * np.expm1(abs(value)), np.sign(median) * np.expm1(abs(median))
    if np.isnan(median) or median == 0:
        return f"{text} {value:.3g} against {0 if median == 0 else 'none'} for similar accounts"
    change = (value - median) / abs(median)
    if abs(change) < 0.05:
        return f"{text} as for similar accounts"
    return f"{text} {abs(change) * 100:.0f} % {'below' if change < 0 else 'above'} similar accounts"


def reference_explain(model, features: pd.DataFrame, top: int = 3) -> list[str]:
    """The previous per-row ``churn_model.explain`` (before it became ``drivers.churn_reasons``): every gbm
    candidate predicted on every row, the words one string per distinct reason."""
    n = len(features)
    x = model.matrix(features)
    base = model.estimator.predict_proba(x)[:, 1]
    groups = _groups(model.inputs)
    medians = np.array([model.medians.get(name, 0.0) for name in model.inputs])
    names = list(groups) if model.algorithm == "logistic" else [g for g in model.candidates if g in groups]
    if model.algorithm == "logistic":
        pipeline = model.estimator.estimator.estimator if hasattr(model.estimator, "estimator") else None
        coef = np.array([model.coefficients.get(name, 0.0) for name in model.inputs])
        scaler = pipeline.named_steps["scale"] if pipeline is not None else None
        z = scaler.transform(pipeline.named_steps["impute"].transform(x))
        z_med = scaler.transform(medians.reshape(1, -1))
        parts = np.column_stack([(coef[idx] * (z[:, idx] - z_med[:, idx])).sum(axis=1) for idx in groups.values()])
        order = np.argsort(-parts, axis=1)[:, : min(top + 2, len(names))]
        candidates = sorted({names[j] for j in np.unique(order)})
        # only each row's own largest contributions are tried (n x (top + 2) predictions, not n x groups)
        member = np.zeros((n, len(names)), dtype=bool)
        member[np.arange(n)[:, None], order] = True
        tried = {name: member[:, names.index(name)] for name in candidates}
    else:
        candidates = names
        tried = {name: np.ones(n, dtype=bool) for name in candidates}
    deltas = np.full((n, len(candidates)), -np.inf)
    if model.algorithm == "logistic":
        # The pipeline is affine up to the logit: setting a quantity to the median moves the logit by exactly
        # -parts, so the calibrated probability without it is the calibration map of logit - parts.
        calibrated = model.estimator.calibrated_classifiers_
        logit = calibrated[0].estimator.decision_function(x)

        def probability(values):
            return np.mean([c.calibrators[0].predict(values) for c in calibrated], axis=0)

        for k, name in enumerate(candidates):
            rows = tried[name]
            deltas[rows, k] = base[rows] - probability(logit[rows] - parts[rows, names.index(name)])
    for k, name in enumerate(candidates if model.algorithm != "logistic" else []):
        rows = tried[name]
        changed = x[rows]
        changed[:, groups[name]] = medians[groups[name]]
        deltas[rows, k] = base[rows] - model.estimator.predict_proba(changed)[:, 1]
    # Words only for the distinct (quantity, shown value, shown risk) of each rank, not one string per row.
    rows = np.arange(n)
    order = np.argsort(-deltas, axis=1)[:, :top]
    out = np.full(n, "", dtype=object)
    going = np.ones(n, dtype=bool)
    for rank in range(order.shape[1]):
        k = order[:, rank]
        delta = deltas[rows, k]
        going &= delta >= 0.005
        if not going.any():
            break
        value = np.full(n, np.nan)
        missing = np.zeros(n, dtype=bool)
        for j, name in enumerate(candidates):
            at = going & (k == j)
            for i in groups[name]:
                if model.inputs[i].endswith("__missing"):
                    missing[at] |= x[at, i] == 1
                else:
                    value[at] = x[at, i]
        combined = np.zeros(int(going.sum()), dtype=np.int64)
        for part in (k[going], missing[going], np.round(value[going], 3), np.round(delta[going] * 100)):
            part_codes, part_uniques = pd.factorize(part)
            combined = combined * (len(part_uniques) + 1) + part_codes + 1
        codes = pd.factorize(combined)[0]
        first = pd.Series(np.flatnonzero(going)).groupby(codes).first().to_numpy()
        words = np.array([f"{_words(model, candidates[k[i]], value[i], missing[i])}: +{delta[i] * 100:.0f} % churn risk"
                          for i in first], dtype=object)
        text = words[codes]
        current = out[going]
        out[going] = np.where(current == "", text, current + "; " + text)
    return out.tolist()


def test_tree_by_tree_probability_is_predict_proba_to_the_bit(data):
    """The gradient boosting's reasons re-evaluate only the trees that split on a quantity
    (``drivers._Trees``): its probabilities, before and after setting a quantity to its median, are exactly
    ``predict_proba``'s (not merely close: a reason's rounding must not move)."""
    from cs_pipeline.health.drivers import _Trees

    result, features = fit(data, algorithm="gbm")
    model = result.model
    x = model.matrix(features)
    medians = np.array([model.medians.get(name, 0.0) for name in model.inputs])
    with one_thread():
        trees = _Trees.of(model, x, medians)
        assert trees is not None
        np.testing.assert_array_equal(trees.probability(), model.estimator.predict_proba(x)[:, 1])
        rows = np.arange(len(x)) % 3 == 0
        for name in model.candidates[:3]:
            idx = _groups(model.inputs)[name]
            changed = x[rows]
            changed[:, idx] = medians[idx]
            np.testing.assert_array_equal(trees.probability(rows, idx), model.estimator.predict_proba(changed)[:, 1])
