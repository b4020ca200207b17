"""Did it work? Recovery of treated versus control cases per playbook rule (pure pandas + statsmodels).

A *case* is one supplier on one day for one rule. Treated: at least one supplier-facing message (e-mail
or in-app, audience ``supplier``) of the rule was sent. Control: the rule's supplier-facing messages were
held back with reason ``control`` (assigned after every other filter, so both groups passed the same
eligibility, cooldown and cap filters). CS-team alerts and call tasks are work for the CS team, not
supplier treatment: they are left out of the comparison, and rules that only have them report no uplift.
Manual interventions have no control group and are left out too.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from statsmodels.stats.proportion import confint_proportions_2indep

#: Columns ``outcomes`` reads.
OUTCOME_INPUT_COLUMNS = ["intervention_id", "supplier_id", "rule", "channel", "audience", "as_of_date", "status",
                         "reason", "is_control", "health_at_trigger", "risk_at_trigger", "health_30d", "risk_30d"]
#: Recovery: healthy 30 days later, or the health score up by at least this many points.
RECOVERY_POINTS = 10.0


def is_treatment_row(frame: pd.DataFrame) -> pd.Series:
    """True for rows that are supplier treatment or its control: audience supplier, not a call, not manual."""
    return (frame["audience"] == "supplier") & (frame["channel"] != "call") & (frame["rule"] != "manual") & (
        (frame["status"] == "sent") | ((frame["status"] == "suppressed") & (frame["reason"] == "control")))


def outcomes(frame: pd.DataFrame, alpha: float = 0.05) -> tuple[pd.DataFrame, dict]:
    """Add ``recovered`` and summarise uplift per rule.

    Args:
        frame: ``OUTCOME_INPUT_COLUMNS`` (health in points 0-100, ``health_30d`` / ``risk_30d`` the
            supplier's score 30 days after ``as_of_date``, null until then). Other rows (alerts, calls,
            manual, failed) are dropped.
        alpha: 1 - confidence level of the interval (0.05: 95 %).

    Returns:
        (the treatment and control rows with ``recovered``: True/False, None while the 30 days have not
        passed; ``{rule: summary}``) where a summary holds ``treated`` and ``control`` (observed cases),
        ``treated_recovered``, ``control_recovered``, ``treated_rate``, ``control_rate`` (shares 0-1),
        ``difference`` (treated minus control rate) and ``ci_low``, ``ci_high`` (its 95 % confidence interval,
        Newcombe's hybrid score interval from statsmodels ``confint_proportions_2indep``; None when a group
        is empty).
    """
    out = frame.loc[is_treatment_row(frame)].copy()
    observed = out["health_30d"].notna()
    recovered = (out["risk_30d"] == "healthy") | ((out["health_30d"] - out["health_at_trigger"]) >= RECOVERY_POINTS)
    out["recovered"] = np.where(observed, recovered, None)
    summary = {}
    for rule, group in out.loc[observed].groupby("rule"):
        cases = group.groupby(["supplier_id", "as_of_date"]).agg(
            control=("is_control", "all"), recovered=("recovered", "max")).reset_index()
        treated = cases.loc[~cases["control"], "recovered"].astype(bool)
        control = cases.loc[cases["control"], "recovered"].astype(bool)
        item = {"treated": int(len(treated)), "control": int(len(control)),
                "treated_recovered": int(treated.sum()), "control_recovered": int(control.sum()),
                "treated_rate": None, "control_rate": None, "difference": None, "ci_low": None, "ci_high": None,
                "ci_method": "newcomb", "confidence": 1 - alpha}
        if len(treated):
            item["treated_rate"] = round(float(treated.mean()), 4)
        if len(control):
            item["control_rate"] = round(float(control.mean()), 4)
        if len(treated) and len(control):
            item["difference"] = round(float(treated.mean() - control.mean()), 4)
            low, high = confint_proportions_2indep(int(treated.sum()), len(treated), int(control.sum()), len(control),
                                                   method="newcomb", compare="diff", alpha=alpha)
            item["ci_low"], item["ci_high"] = round(float(low), 4), round(float(high), 4)
        summary[rule] = item
    return out, summary
