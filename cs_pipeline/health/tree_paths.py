"""Path attributions of the churn model's gradient boosting (issue 26 item 5): per row, what each explained
quantity adds to the model's raw score (log-odds), so that the reasons of ``gbm`` are worded as the logistic
model's are, from additive contributions. Pure functions over scikit-learn's fitted estimator: no database,
no Dagster.

The method is Saabas's path attribution ("Interpreting random forests", 2014; the ``treeinterpreter``
package; the fast approximation of SHAP values that ``shap.TreeExplainer(...).shap_values(x,
approximate=True)`` computes): in each tree a row's path from the root to its leaf passes splits, and each
split moves the expected output (the training-count weighted mean of the leaves under a node) from the node
to the child the row takes; that move is credited to the split's input. Per row and tree the credits sum to
the leaf's value minus the root's expected value, so over all trees

    raw score = baseline + sum of the roots' expected values + sum over inputs of the attributions

exactly (the "bias" is the first two terms: the model's mean raw output over its training rows). These are
not exact SHAP values: Saabas's credits depend on the order of the splits on a path, so an input the trees
split on near the leaves tends to get more than its Shapley share (Lundberg, Erion and Lee, "Consistent
individualized feature attribution for tree ensembles", 2018). A leaf's credits depend on its path only, so
they are computed once per model (a sparse leaves x quantities matrix) and a frame's attributions are one
sparse product with its rows' leaves. Exact TreeSHAP (which also weighs the splits off the row's path) costs
O(leaves x depth^2) per row and tree against O(depth) here, within a daily scoring pass whose budget is 10 %
of customer_health (issue 26 item 7).

The leaves are found by scikit-learn's own compiled tree traversal (``TreePredictor.predict``) on copies of
the trees whose leaf values are the leaves' numbers, and the raw score is the sum of the leaf values in the
estimator's order (baseline, tree 1, tree 2, ...), so it equals ``decision_function`` to the bit.
"""

from __future__ import annotations

import weakref

import numpy as np
import scipy.sparse as sp


class PathAttributions:
    """A fitted binary ``HistGradientBoostingClassifier`` with numeric splits (``make_estimator("gbm")``'s,
    after its median imputer ``imputer``; None for a model saved before the imputer came, which sees the
    inputs as they are, NaN included), prepared for ``explain``: per tree a copy whose leaves output their
    node numbers, and the sparse matrix of each leaf's credits per explained quantity.

    Build with ``PathAttributions.of`` (cached per estimator)."""

    def __init__(self, boosting, imputer, groups: list[list[int]]) -> None:
        self.imputer = imputer
        self.baseline = np.asarray(boosting._baseline_prediction, dtype=np.float64).ravel()[0]
        self.bitsets, self.f_idx_map = boosting._bin_mapper.make_known_categories_bitsets()
        from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor

        to_quantity = np.full(sum(len(g) for g in groups), -1, dtype=np.int64)
        for q, positions in enumerate(groups):
            to_quantity[positions] = q
        if (to_quantity < 0).any():
            raise ValueError("every input of the churn model must be in exactly one explained quantity")
        self.trees, self.values, self.offsets = [], [], []
        rows, columns, credits, offset, self.bias = [], [], [], 0, float(self.baseline)
        for (tree,) in boosting._predictors:
            nodes = tree.nodes
            numbered = nodes.copy()
            numbered["value"] = np.arange(len(nodes), dtype=np.float64)
            self.trees.append(TreePredictor(numbered, tree.binned_left_cat_bitsets, tree.raw_left_cat_bitsets))
            self.values.append(np.ascontiguousarray(nodes["value"], dtype=np.float64))
            self.offsets.append(offset)
            expected, parent = _expected_values(nodes)
            self.bias += float(expected[0])
            for leaf in np.flatnonzero(nodes["is_leaf"]):
                child = int(leaf)
                while parent[child] >= 0:
                    up = parent[child]
                    rows.append(offset + int(leaf))
                    columns.append(to_quantity[nodes["feature_idx"][up]])
                    credits.append(expected[child] - expected[up])
                    child = up
            offset += len(nodes)
        # duplicates (a leaf whose path splits twice on one quantity) are summed by the conversion
        self.credits = sp.csr_matrix((credits, (rows, columns)), shape=(offset, len(groups)), dtype=np.float64)

    @classmethod
    def of(cls, estimator, groups: list[list[int]]) -> PathAttributions:
        """The prepared attributions of a churn model's estimator (``CalibratedClassifierCV`` around the
        pipeline) for the explained quantities ``groups`` (input positions per quantity, in input order;
        every input in exactly one group), built once per estimator and grouping.

        Raises:
            ValueError: the estimator is neither a binary gradient boosting with numeric splits nor a median
                imputer followed by one (no version of ``make_estimator`` made such a model): retrain it."""
        key = tuple(tuple(g) for g in groups)
        cached = _PREPARED.get(estimator, {})
        if key not in cached:
            inner = getattr(getattr(estimator, "estimator", None), "estimator", None)
            steps = getattr(inner, "named_steps", None)
            if steps is not None and list(steps) == ["impute", "model"]:
                boosting, imputer = steps["model"], steps["impute"]
            else:  # a gbm saved before the imputer step (its trees route missing values themselves)
                boosting, imputer = inner, None
            trees = getattr(boosting, "_predictors", None)
            if trees is None or any(len(i) != 1 for i in trees) \
                    or any(t.nodes["is_categorical"].any() for i in trees for t in i):
                raise ValueError("the churn model's gradient boosting is not one this version can explain: retrain "
                                 "it with `cs-pipeline model train`")
            cached[key] = cls(boosting, imputer, list(groups))
            _PREPARED[estimator] = cached
        return cached[key]

    def explain(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(raw score per row, attributions rows x quantities) of the model's input matrix ``x`` (rows x inputs,
        float, NaN: missing). The raw score is the log-odds ``decision_function`` gives, to the bit; per row the
        attributions sum to it minus ``bias`` (up to float rounding)."""
        raw, leaves = self.leaves(x)
        return raw, self.attributions(leaves)

    def leaves(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(raw score per row, as ``explain``; each row's leaf per tree, rows x trees, int64, numbered across
        the trees as ``attributions`` reads them) of the input matrix ``x``."""
        xi = np.ascontiguousarray(x if self.imputer is None else self.imputer.transform(x), dtype=np.float64)
        n = len(xi)
        raw = np.zeros(n, dtype=np.float64)
        raw += self.baseline
        leaves = np.empty((n, len(self.trees)), dtype=np.int64)
        for t, tree in enumerate(self.trees):
            leaf = tree.predict(xi, self.bitsets, self.f_idx_map, 1).astype(np.int64)
            raw += self.values[t][leaf]
            leaves[:, t] = leaf + self.offsets[t]
        return raw, leaves

    def attributions(self, leaves: np.ndarray) -> np.ndarray:
        """Attributions rows x quantities (log-odds) of rows whose leaves (``leaves``) are given."""
        n, trees = leaves.shape
        taken = sp.csr_matrix((np.ones(leaves.size), leaves.ravel(), np.arange(0, leaves.size + 1, trees)),
                              shape=(n, self.credits.shape[0]))
        return (taken @ self.credits).toarray()


_PREPARED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _expected_values(nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(expected output per node: the training-count weighted mean of the leaf values under it; parent per
    node, -1 for the root) of one ``TreePredictor``'s nodes (pre-order: a parent before its children)."""
    expected = np.where(nodes["is_leaf"] == 1, nodes["value"], 0.0).astype(np.float64)
    parent = np.full(len(nodes), -1, dtype=np.int64)
    count = nodes["count"].astype(np.float64)
    for i in range(len(nodes) - 1, -1, -1):
        if not nodes["is_leaf"][i]:
            left, right = int(nodes["left"][i]), int(nodes["right"][i])
            parent[left] = parent[right] = i
            expected[i] = (expected[left] * count[left] + expected[right] * count[right]) / (count[left] + count[right])
    return expected, parent
