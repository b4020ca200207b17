"""Why a scorecard misleads (issue 13; split from ``backtest``): ``problems`` of a backtest result,
``inverted_overrides`` (an override that scores its accounts higher yet they churn more), and ``diagnose``
naming the override(s) or component(s) that drive it, for the ``scorecards_rank_churners`` check. Pure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from cs_pipeline.health.backtest import BacktestResult
from cs_pipeline.health.scorecard import Scorecard


def problems(result: BacktestResult) -> list[str]:
    """Why a backtest result says the scorecard misleads: ROC-AUC below 0.5, or the healthy level
    churning more than the at-risk level. Empty when neither."""
    out = []
    if result.auc is not None and result.auc < 0.5:
        out.append(f"ranks churners below chance (ROC-AUC {result.auc:.3f})")
    healthy, at_risk = result.churn_rate_by_level.get("healthy"), result.churn_rate_by_level.get("at_risk")
    if healthy is not None and at_risk is not None and healthy > at_risk:
        out.append(f"its healthy level churns more than its at_risk level ({healthy:.1%} against {at_risk:.1%})")
    return out


INVERTED_OVERRIDE_P = 0.01
"""Significance (one-sided Fisher exact test) for "an override's accounts churn more than the others"."""


def inverted_overrides(engagement: pd.DataFrame, scorecard: Scorecard, labels: np.ndarray,
                       health: np.ndarray, p_value: float = INVERTED_OVERRIDE_P) -> list[str]:
    """Overrides whose accounts score higher on average than the others yet churn significantly more:
    the profile rewards exactly the accounts most at risk (an onboarding profile, as WS-168 carried
    before issue 13, on data where new accounts churn most), even when the overall ROC-AUC stays above
    0.5.

    Args:
        engagement: the scored rows (``score_suppliers`` input), in the order of ``labels``.
        scorecard: the scorecard whose overrides are checked.
        labels: churn label per row (bool).
        health: health score per row (0-100, NaN = unscored, left out).
        p_value: the one-sided Fisher exact test (scipy) on churners / non-churners inside against
            outside the override must be below this. Rows (account-days) are counted as independent,
            which overstates the evidence a little; hence the strict default 0.01.

    Returns:
        One sentence per such override, e.g. "override 'onboarding' scores its accounts higher (86.1
        against 84.4) yet they churn more (3.3 % against 1.2 %, Fisher p=1e-09)". Empty when none.
    """
    from scipy.stats import fisher_exact

    from cs_pipeline.health.scoring import (
        _segments,  # the same segment matching as the scorer
    )

    labels = np.asarray(labels, dtype=bool)
    health = np.asarray(health, dtype=float)
    ok = ~np.isnan(health)
    segments = _segments(engagement.reset_index(drop=True), scorecard)
    out = []
    for i, override in enumerate(scorecard.overrides):
        inside, outside = (segments == i) & ok, (segments != i) & ok
        if not inside.any() or not outside.any():
            continue
        s_in, s_out = health[inside].mean(), health[outside].mean()
        c_in, c_out = labels[inside], labels[outside]
        if s_in <= s_out or c_in.mean() <= c_out.mean():
            continue
        table = [[int(c_in.sum()), int((~c_in).sum())], [int(c_out.sum()), int((~c_out).sum())]]
        p = float(fisher_exact(table, alternative="greater").pvalue)
        if p < p_value:
            out.append(f"override {override.name!r} scores its accounts higher ({s_in:.1f} against {s_out:.1f}) "
                       f"yet they churn more ({c_in.mean():.1%} against {c_out.mean():.1%}, Fisher p={p:.1g})")
    return out


def misleading_warning(result: BacktestResult, engagement: pd.DataFrame, scorecard: Scorecard, labels: np.ndarray,
                       score) -> str | None:
    """The ``scorecards_rank_churners`` warning for one backtest: what is wrong (``problems``, and
    ``inverted_overrides``) and the override(s) or component(s) that drive it (``diagnose``, at most
    3), or None when nothing is wrong.

    Arguments as ``diagnose``; ``result`` is the backtest of those rows.
    """
    why = problems(result)
    if scorecard.overrides:
        why += inverted_overrides(engagement, scorecard, labels, np.asarray(score(engagement, scorecard), dtype=float))
    if not why:
        return None
    drivers = diagnose(engagement, scorecard, labels, score)
    return f"{scorecard.version} {' and '.join(why)}; driven by: " + \
        ("; ".join(drivers[:3]) if drivers else "no single component or override")


def diagnose(engagement: pd.DataFrame, scorecard: Scorecard, labels: np.ndarray, score) -> list[str]:
    """Name the override(s) and component(s) that drive a scorecard's poor ranking of churners.

    Each override is removed in turn (its accounts scored by the default profile), and each component
    is removed in turn (weight 0); what raises the ROC-AUC the most drives the problem. An override is
    also named when its accounts score higher on average yet churn more than the others (as the WS-168
    onboarding profile does when new accounts churn most).

    Args:
        engagement: the rows that were scored (``score_suppliers`` input), in the order of ``labels``.
        scorecard: the scorecard backtested.
        labels: churn label per row (bool).
        score: ``f(engagement, scorecard) -> health scores`` (NaN = unscored), e.g. a wrapper of
            ``score_suppliers`` with the seasonal index.

    Returns:
        Sentences, most harmful first, e.g. "override 'onboarding' (lifecycle_stage in [onboarding]):
        its accounts score 80.0 on average against 64.9 yet churn 21.0 % against 4.0 %; without it
        ROC-AUC 0.48 -> 0.60". Empty when nothing helps.
    """
    labels = np.asarray(labels, dtype=bool)

    def auc_of(health: np.ndarray) -> float | None:
        ok = ~np.isnan(health)
        if labels[ok].all() or not labels[ok].any():
            return None
        return float(roc_auc_score(labels[ok], -health[ok]))

    base = np.asarray(score(engagement, scorecard), dtype=float)
    base_auc = auc_of(base)
    if base_auc is None:
        return []
    found: list[tuple[float, str]] = []
    data = scorecard.model_dump()
    for i, override in enumerate(scorecard.overrides):
        without = Scorecard.model_validate(data | {"overrides": [o for j, o in enumerate(data["overrides"]) if j != i]})
        auc = auc_of(np.asarray(score(engagement, without), dtype=float))
        from cs_pipeline.health.scoring import (
            _segments,  # the same segment matching as the scorer
        )
        inside = _segments(engagement.reset_index(drop=True), scorecard) == i
        ok = ~np.isnan(base)
        detail = ""
        if (inside & ok).any() and (~inside & ok).any():
            s_in, s_out = base[inside & ok].mean(), base[~inside & ok].mean()
            c_in, c_out = labels[inside & ok].mean(), labels[~inside & ok].mean()
            detail = (f"its accounts score {s_in:.1f} on average against {s_out:.1f} and churn {c_in:.1%} "
                      f"against {c_out:.1%}; ")
            inverted = s_in > s_out and c_in > c_out
        else:
            inverted = False
        gain = (auc - base_auc) if auc is not None else 0.0
        if gain > 0.005 or inverted:
            when = ", ".join(f"{k} in [{', '.join(v)}]" for k, v in override.when.items())
            found.append((gain + (1.0 if inverted else 0.0),
                          f"override {override.name!r} ({override.name} profile: {when}): {detail}"
                          f"without it ROC-AUC {base_auc:.3f} -> {auc if auc is None else round(auc, 3)}"))
    for j, component in enumerate(scorecard.components):
        if len(scorecard.components) < 2 or component.weight == 0:
            continue
        # Weight 0 (a weight-0 component is not scored, so its rule only has to validate).
        zero = {"weight": 0.0, "rule": {"type": "linear", "lower": 0, "upper": 1}}
        changed = [dict(c, **zero) if k == j else c for k, c in enumerate(data["components"])]
        changed_overrides = [dict(o, components={n: c for n, c in o["components"].items() if n != component.name})
                             for o in data["overrides"]]
        without = Scorecard.model_validate(data | {"components": changed, "overrides": changed_overrides})
        auc = auc_of(np.asarray(score(engagement, without), dtype=float))
        if auc is not None and auc - base_auc > 0.005:
            found.append((auc - base_auc, f"component {component.name!r} ({component.metric}): without it "
                                          f"ROC-AUC {base_auc:.3f} -> {auc:.3f}"))
    return [text for _, text in sorted(found, key=lambda f: -f[0])]
