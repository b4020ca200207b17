"""Issue 26 item 7: the churn model's reasons in words built over the whole frame (``drivers.churn_reasons``,
what customer_health writes into ``drivers``) say exactly what ``churn_model.explain`` says, row by row,
for both algorithms, on every row of a planted-signal history (missing values, values at the median and
near-zero probabilities included)."""

from __future__ import annotations

import numpy as np
import pytest

from cs_pipeline.health.churn_model import explain
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
def test_reasons_over_the_frame_equal_explain(data, algorithm):
    result, features = fit(data, algorithm=algorithm)
    expected = explain(result.model, features)
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
