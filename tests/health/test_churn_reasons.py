"""Issue 26 item 7: the churn model's reasons in words built over the whole frame (``drivers.churn_reasons``,
what customer_health writes into ``drivers``, the one implementation of the reasons) say exactly what a
plain per-row reference says (below: the logistic model's contributions, the gbm's path attributions from a
walk of every tree in Python), row by row, for both algorithms, on every row of a planted-signal history
(missing values, values at the median and near-zero probabilities included)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cs_pipeline.health.churn_features import RATE_COLUMNS, describe_feature
from cs_pipeline.health.churn_model import _groups, one_thread
from cs_pipeline.health.drivers import churn_reasons, explain_churn, reason_words
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
    probability, reasons = explain_churn(result.model, features)
    assert reasons == got
    np.testing.assert_array_equal(probability, result.model.predict(features))  # to the bit: one evaluation serves both
    assert len(got) == len(features)
    assert sum(1 for r in expected if r) > len(features) // 4  # most rows have a reason to compare
    assert got == expected
    assert churn_reasons(result.model, features.iloc[0:0]) == []


def test_reason_words_cover_every_wording():
    names = ["events_30d", "stickiness", "feat__forms__uses_30d"]
    described = ["events in the last 30 days", "stickiness", "uses of forms in the last 30 days"]
    medians = np.array([np.log1p(10.0), 0.5, 0.0])
    rates = np.array([False, True, False])
    which = np.array([0, 0, 1, 2, 0, 2])
    value = np.array([np.log1p(2.0), np.log1p(10.2), 0.8, np.log1p(3.0), np.nan, 0.0])
    missing = np.array([False, False, False, False, True, False])
    delta = np.array([0.123, 0.05, 0.0149, 0.2, 0.01, 0.03])
    assert reason_words(names, described, medians, rates, which, value, missing, delta).tolist() == [
        "events in the last 30 days 80 % below similar accounts: +12 % churn risk",
        "events in the last 30 days as for similar accounts: +5 % churn risk",
        "stickiness 60 % above similar accounts: +1 % churn risk",
        "uses of forms in the last 30 days 3 against 0 for similar accounts: +20 % churn risk",
        "events in the last 30 days unknown: +1 % churn risk",
        "uses of forms in the last 30 days as for similar accounts: +3 % churn risk",  # 0 against a median of 0
    ]


def _words(model, group: str, value: float, missing: bool) -> str:
    text = describe_feature(group)
    if missing or np.isnan(value):
        return f"{text} unknown"
    median = model.medians.get(group, np.nan)
    if group not in RATE_COLUMNS:  # back from log1p to the metric's own scale
        value, median = np.sign(value) * np.expm1(abs(value)), np.sign(median) * np.expm1(abs(median))
    if value == median:
        return f"{text} as for similar accounts"
    if np.isnan(median) or median == 0:
        return f"{text} {value:.3g} against {0 if median == 0 else 'none'} for similar accounts"
    change = (value - median) / abs(median)
    if abs(change) < 0.05:
        return f"{text} as for similar accounts"
    return f"{text} {abs(change) * 100:.0f} % {'below' if change < 0 else 'above'} similar accounts"


def _value_of(model, positions: list[int], row: np.ndarray) -> tuple[float, bool]:
    value, missing = np.nan, False
    for i in positions:
        if model.inputs[i].endswith("__missing"):
            missing |= row[i] == 1
        else:
            value = row[i]
    return value, missing


def reference_explain(model, features: pd.DataFrame, top: int = 3) -> list[str]:
    """The reasons from plain per-row code: each quantity's contribution to the logit (the logistic model's
    ``coef x (z - z_median)``; the gbm's ``walked_attributions``), each row's ``top`` + 2 largest tried, the
    words one string per distinct reason."""
    n = len(features)
    x = model.matrix(features)
    base = model.estimator.predict_proba(x)[:, 1]
    groups = _groups(model.inputs)
    medians = np.array([model.medians.get(name, 0.0) for name in model.inputs])
    names = list(groups)
    calibrated = model.estimator.calibrated_classifiers_
    logit = calibrated[0].estimator.decision_function(x)
    if model.algorithm == "logistic":
        pipeline = model.estimator.estimator.estimator if hasattr(model.estimator, "estimator") else None
        coef = np.array([model.coefficients.get(name, 0.0) for name in model.inputs])
        scaler = pipeline.named_steps["scale"] if pipeline is not None else None
        z = scaler.transform(pipeline.named_steps["impute"].transform(x))
        z_med = scaler.transform(medians.reshape(1, -1))
        parts = np.column_stack([(coef[idx] * (z[:, idx] - z_med[:, idx])).sum(axis=1) for idx in groups.values()])
    else:
        by_input = walked_attributions(model, x)
        parts = np.column_stack([by_input[:, idx].sum(axis=1) for idx in groups.values()])
    # a quantity as for similar accounts is never a reason: left out before each row's largest are picked
    similar = np.zeros((n, len(names)), dtype=bool)
    for j, name in enumerate(names):
        for i in range(n):
            value, missing = _value_of(model, groups[name], x[i])
            similar[i, j] = _words(model, name, value, missing).endswith(" as for similar accounts")
    order = np.argsort(-np.where(similar, -np.inf, parts), axis=1)[:, : min(top + 2, len(names))]
    candidates = sorted({names[j] for j in np.unique(order)})
    # only each row's own largest contributions are tried (n x (top + 2) predictions, not n x groups)
    member = np.zeros((n, len(names)), dtype=bool)
    member[np.arange(n)[:, None], order] = True
    tried = {name: member[:, names.index(name)] & ~similar[:, names.index(name)] for name in candidates}
    deltas = np.full((n, len(candidates)), -np.inf)

    # Without the quantity's contribution the logit moves by exactly -parts (for the logistic model the same
    # as setting the quantity to the median: the pipeline is affine up to the logit), so the calibrated
    # probability without it is the calibration map of logit - parts.
    def probability(values):
        return np.mean([c.calibrators[0].predict(values) for c in calibrated], axis=0)

    for k, name in enumerate(candidates):
        rows = tried[name]
        deltas[rows, k] = base[rows] - probability(logit[rows] - parts[rows, names.index(name)])
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


def walked_attributions(model, x: np.ndarray) -> np.ndarray:
    """Saabas's path attributions of a gbm model, row by row and tree by tree in Python (the reference for
    ``tree_paths``): rows x inputs. Each tree is walked from its root as ``TreePredictor`` walks it (left when
    the imputed value is at most the threshold; a missing value as the split says), and each split on the
    way credits its input with the change of the expected output (training-count weighted mean of the leaf
    values under the node)."""
    inner = model.estimator.estimator.estimator
    steps = getattr(inner, "named_steps", {"model": inner})  # a gbm saved before the imputer: no imputation
    xi = steps["impute"].transform(x) if "impute" in steps else x
    out = np.zeros(x.shape)
    for (tree,) in steps["model"]._predictors:
        nodes = tree.nodes

        def expected(i, nodes=nodes):
            if nodes["is_leaf"][i]:
                return float(nodes["value"][i]), float(nodes["count"][i])
            (lv, lc), (rv, rc) = expected(nodes["left"][i]), expected(nodes["right"][i])
            return (lv * lc + rv * rc) / (lc + rc), lc + rc

        means = [expected(i)[0] for i in range(len(nodes))]
        for r in range(len(xi)):
            i = 0
            while not nodes["is_leaf"][i]:
                f = nodes["feature_idx"][i]
                left = nodes["missing_go_to_left"][i] if np.isnan(xi[r, f]) else xi[r, f] <= nodes["num_threshold"][i]
                child = nodes["left"][i] if left else nodes["right"][i]
                out[r, f] += means[child] - means[i]
                i = child
    return out


def test_path_attributions_are_additive_and_the_raw_score_is_decision_function(data):
    """``tree_paths``: the raw score is the gradient boosting's ``decision_function`` to the bit (a reason's
    rounding must not move against the stored probability), each row's attributions sum to it minus the bias,
    and they are the ones a walk of every tree gives."""
    from cs_pipeline.health.tree_paths import PathAttributions

    result, features = fit(data, algorithm="gbm")
    model = result.model
    x = model.matrix(features)
    positions = list(_groups(model.inputs).values())
    with one_thread():
        paths = PathAttributions.of(model.estimator, positions)
        assert PathAttributions.of(model.estimator, positions) is paths  # prepared once per model
        raw, parts = paths.explain(x)
        np.testing.assert_array_equal(raw, model.estimator.estimator.estimator.decision_function(x))
        np.testing.assert_array_equal(np.mean([c.calibrators[0].predict(raw)
                                               for c in model.estimator.calibrated_classifiers_], axis=0),
                                      model.estimator.predict_proba(x)[:, 1])
    np.testing.assert_allclose(parts.sum(axis=1) + paths.bias, raw, rtol=0, atol=1e-9)
    walked = walked_attributions(model, x[:200])
    np.testing.assert_allclose(parts[:200], np.column_stack([walked[:, idx].sum(axis=1) for idx in positions]),
                               rtol=0, atol=1e-12)
    assert (np.abs(parts).max(axis=0) > 0).sum() >= 3  # several quantities carry weight


def test_a_model_this_version_cannot_explain_is_refused_with_the_fix(data):
    from cs_pipeline.health.tree_paths import PathAttributions

    result, _ = fit(data, algorithm="logistic")
    with pytest.raises(ValueError, match="retrain it with `cs-pipeline model train`"):
        PathAttributions.of(result.model.estimator, [[0]])


def test_one_split_credits_its_input_with_the_move_of_the_training_mean():
    """A one-tree, one-split gradient boosting checked by hand: a row going left is credited with the left
    leaf's value minus the training rows' mean output (counted from the data, not from the tree), and the bias
    is that mean plus the baseline."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.frozen import FrozenEstimator
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    from cs_pipeline.health.tree_paths import PathAttributions

    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 2))
    y = (x[:, 1] + rng.normal(scale=0.5, size=400) > 0.8).astype(int)
    pipeline = Pipeline([("impute", SimpleImputer(strategy="median")),
                         ("model", HistGradientBoostingClassifier(max_iter=1, max_leaf_nodes=2, min_samples_leaf=20,
                                                                  early_stopping=False))]).fit(x, y)
    estimator = CalibratedClassifierCV(FrozenEstimator(pipeline), method="sigmoid").fit(x, y)
    (tree,), = pipeline.named_steps["model"]._predictors
    root, left, right = tree.nodes[0], tree.nodes[tree.nodes[0]["left"]], tree.nodes[tree.nodes[0]["right"]]
    assert root["feature_idx"] == 1
    goes_left = x[:, 1] <= root["num_threshold"]
    mean = (goes_left.sum() * left["value"] + (~goes_left).sum() * right["value"]) / len(x)
    paths = PathAttributions.of(estimator, [[0], [1]])
    raw, parts = paths.explain(x)
    np.testing.assert_allclose(parts[:, 0], 0.0)
    np.testing.assert_allclose(parts[:, 1], np.where(goes_left, left["value"], right["value"]) - mean, atol=1e-12)
    baseline = float(np.ravel(pipeline.named_steps["model"]._baseline_prediction)[0])
    assert paths.bias == pytest.approx(baseline + mean, abs=1e-12)
    np.testing.assert_allclose(parts.sum(axis=1) + paths.bias, raw, atol=1e-12)


def test_a_gbm_saved_before_the_imputer_step_is_still_explained(data):
    """Models saved before the gradient boosting's median imputer (a bare ``HistGradientBoostingClassifier``
    under the calibration, missing values routed by the trees) still score every day they are the model of
    (a re-run picks the model known on the day): probability and reasons, not an error."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.frozen import FrozenEstimator

    from cs_pipeline.health.tree_paths import PathAttributions

    result, features = fit(data, algorithm="gbm")
    model = result.model
    x = model.matrix(features).copy()
    x[::5, model.inputs.index("feat__forms__uses_30d")] = np.nan  # routed by the trees, not imputed
    _, _, labels, _ = data
    half = len(x) // 2
    bare = HistGradientBoostingClassifier(learning_rate=0.05, max_iter=60, max_leaf_nodes=15, min_samples_leaf=40,
                                          early_stopping=False, random_state=0).fit(x[:half], labels[:half])
    model.estimator = CalibratedClassifierCV(FrozenEstimator(bare), method="sigmoid").fit(x[half:], labels[half:])
    # where the trees send a missing value matters: as a 0 it would take other paths
    assert not np.array_equal(bare.decision_function(x[::5]), bare.decision_function(np.nan_to_num(x[::5])))
    frame = pd.DataFrame(x, columns=model.inputs)
    with one_thread():
        probability, reasons = explain_churn(model, frame)
        np.testing.assert_array_equal(probability, model.predict(frame))
        paths = PathAttributions.of(model.estimator, list(_groups(model.inputs).values()))
        raw, parts = paths.explain(x)
    np.testing.assert_allclose(parts.sum(axis=1) + paths.bias, raw, atol=1e-9)
    walked = walked_attributions(model, x[:100])
    np.testing.assert_allclose(parts[:100], np.column_stack([walked[:, idx].sum(axis=1)
                                                             for idx in _groups(model.inputs).values()]), atol=1e-12)
    assert sum(1 for r in reasons if "uses of forms" in r) > len(reasons) // 4


def test_a_quantity_as_for_similar_accounts_is_never_a_reason(data):
    """A value at the training median or within 5 % of it is no reason, however much the model credits it:
    the gradient boosting's path attributions credit such values (through the other splits on their paths),
    enough to be among a row's three largest, and without the rule the reasons would say "as for similar
    accounts: +N % churn risk"."""
    from cs_pipeline.health.tree_paths import PathAttributions

    result, features = fit(data, algorithm="gbm")
    model = result.model
    reasons = churn_reasons(model, features)
    assert not any("as for similar accounts" in r for r in reasons)
    # The rule is exercised: some row's quantity as for similar accounts is among its three largest reasons.
    x = model.matrix(features)
    groups = _groups(model.inputs)
    raw, parts = PathAttributions.of(model.estimator, list(groups.values())).explain(x)
    calibrators = [c.calibrators[0] for c in model.estimator.calibrated_classifiers_]
    base = np.mean([c.predict(raw) for c in calibrators], axis=0)
    delta = np.column_stack([base - np.mean([c.predict(raw - parts[:, k]) for c in calibrators], axis=0)
                             for k in range(len(groups))])
    third = -np.sort(-delta, axis=1)[:, 2]
    shown = (delta >= 0.005) & (delta >= third[:, None])
    rows, ks = np.nonzero(shown)
    names = list(groups)
    similar = [_words(model, names[k], *_value_of(model, groups[names[k]], x[i])).endswith(" as for similar accounts")
               for i, k in zip(rows, ks)]
    assert any(similar)
