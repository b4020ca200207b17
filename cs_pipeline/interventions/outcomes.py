"""Did our help work? Uplift per playbook rule by intention to treat (pure pandas + scipy + statsmodels).

A *case* is one supplier, one rule and one episode (the day the rule became due, ``as_of_date``). Its arm is
drawn once, by hash of the case key (``planning.in_control_group``), after the eligibility filters, and both
arms go through identical bookkeeping (a control case consumes the cooldown and the caps as if contacted),
so the arms stay comparable however often suppliers re-enter. Only supplier treatment is compared:
supplier-facing e-mails and in-app messages; CS-team alerts and call tasks are work for the CS team, and
manual interventions (a person chose to act) are never held out, so all three are left out.

Intention to treat: a case counts in the arm it was assigned to, whatever happened next. A treated case
whose message failed, expired or is still waiting counts as treated; a control case that another rule (or
a person) contacted within the outcome window counts as control and is reported as *contaminated*.
Per-protocol figures (delivered treated cases against uncontaminated control cases) are secondary only:
they compare groups that are no longer randomised.

Outcomes: the health score change ``outcome_days`` after the trigger (points 0-100; cases without a
score then, e.g. churned suppliers, are left out of it) and churn within the same horizon (share).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.power import TTestIndPower
from statsmodels.stats.proportion import confint_proportions_2indep

#: Columns ``case_outcomes`` reads (one row per ``ops.interventions`` row).
OUTCOME_INPUT_COLUMNS = ["intervention_id", "supplier_id", "rule", "channel", "audience", "as_of_date", "status",
                         "reason", "health_at_trigger", "health_outcome", "churned", "contaminated"]
#: Statuses of a case row that was assigned to treatment (intention to treat: delivered or not).
TREATED_STATUSES = ("planned", "sending", "sent", "failed", "expired")
#: The smallest effect the report should be able to see, points, and the power to see it.
MIN_DETECTABLE_POINTS = 5.0
POWER = 0.80
#: Recovery (kept for the table's ``recovered`` column): healthy at the outcome day, or up by this many points.
RECOVERY_POINTS = 10.0


def is_case_row(frame: pd.DataFrame) -> pd.Series:
    """True for rows of a randomised case: supplier-facing e-mail or in-app message of a playbook rule (not
    manual), assigned to treatment (any status but suppressed) or to control (suppressed, reason control)."""
    facing = (frame["audience"] == "supplier") & (frame["channel"] != "call") & (frame["rule"] != "manual")
    return facing & (frame["status"].isin(TREATED_STATUSES)
                     | ((frame["status"] == "suppressed") & (frame["reason"] == "control")))


def case_outcomes(frame: pd.DataFrame, per_channel: bool = False) -> pd.DataFrame:
    """One row per case (per case and channel with ``per_channel``).

    Args:
        frame: ``OUTCOME_INPUT_COLUMNS``: ``health_at_trigger`` and ``health_outcome`` in points 0-100
            (``health_outcome`` null until ``outcome_days`` have passed or when the supplier has no score
            then); ``churned`` True/False (null while the horizon has not passed); ``contaminated`` True when
            another rule's (or a manual) supplier-facing message was sent to the supplier within the outcome
            window. Rows that are not case rows (``is_case_row``) are dropped.

    Returns:
        DataFrame ``supplier_id, rule, as_of_date`` (+ ``channel``), ``channels`` (e.g. ``email+in_app``),
        ``arm`` (treated / control), ``delivered`` (bool: a message of the case was sent),
        ``health_at_trigger``, ``health_outcome``, ``health_change`` (float points, NaN when unobserved),
        ``churned`` (object: True / False / None), ``contaminated`` (bool).
    """
    rows = frame.loc[is_case_row(frame)].copy()
    keys = ["supplier_id", "rule", "as_of_date"] + (["channel"] if per_channel else [])
    if rows.empty:
        return pd.DataFrame(columns=keys + ["channels", "arm", "delivered", "health_at_trigger", "health_outcome",
                                            "health_change", "churned", "contaminated"])
    rows["_control"] = (rows["status"] == "suppressed") & (rows["reason"] == "control")
    rows["_sent"] = rows["status"] == "sent"
    rows["_churned"] = rows["churned"].map(lambda v: np.nan if v is None or pd.isna(v) else float(bool(v)))
    cases = rows.groupby(keys, sort=True, dropna=False).agg(
        channels=("channel", lambda c: "+".join(sorted(set(c)))), control=("_control", "any"),
        delivered=("_sent", "any"), health_at_trigger=("health_at_trigger", "first"),
        health_outcome=("health_outcome", "first"), churned=("_churned", "first"),
        contaminated=("contaminated", "any")).reset_index()
    cases["arm"] = np.where(cases.pop("control"), "control", "treated")
    cases["health_at_trigger"] = pd.to_numeric(cases["health_at_trigger"], errors="coerce").astype(float)
    cases["health_outcome"] = pd.to_numeric(cases["health_outcome"], errors="coerce").astype(float)
    cases["health_change"] = cases["health_outcome"] - cases["health_at_trigger"]
    cases["churned"] = cases["churned"].map(lambda v: None if pd.isna(v) else bool(v)).astype(object)
    cases["contaminated"] = cases["contaminated"].fillna(False).astype(bool) & (cases["arm"] == "control")
    return cases


def required_per_arm(sd: float, share_control: float, alpha: float = 0.05, power: float = POWER,
                     points: float = MIN_DETECTABLE_POINTS) -> tuple[int, int]:
    """(treated, control) cases needed to detect ``points`` with ``power`` (two-sided t-test at ``alpha``,
    statsmodels ``TTestIndPower``) when outcomes have standard deviation ``sd`` (points) and a share
    ``share_control`` of cases is control."""
    if not sd or not np.isfinite(sd) or not 0 < share_control < 1:
        return 0, 0
    ratio = share_control / (1 - share_control)
    treated = TTestIndPower().solve_power(effect_size=points / sd, alpha=alpha, power=power, ratio=ratio)
    return int(np.ceil(treated)), int(np.ceil(treated * ratio))


def _welch(treated: pd.Series, control: pd.Series, alpha: float) -> tuple[float, float, float]:
    result = stats.ttest_ind(treated, control, equal_var=False)
    low, high = result.confidence_interval(1 - alpha)
    return float(treated.mean() - control.mean()), float(low), float(high)


def _cuped(cases: pd.DataFrame, alpha: float) -> tuple[float, float, float]:
    """Difference adjusted for the pre-period score (CUPED, Deng et al. 2013, as a regression on the
    centred covariate; heteroskedasticity-robust HC1 errors, statsmodels OLS)."""
    data = pd.DataFrame({"y": cases["health_change"], "treated": (cases["arm"] == "treated").astype(float),
                         "pre": cases["health_at_trigger"] - cases["health_at_trigger"].mean()})
    fit = smf.ols("y ~ treated + pre", data=data).fit(cov_type="HC1")
    low, high = fit.conf_int(alpha).loc["treated"]
    return float(fit.params["treated"]), float(low), float(high)


def uplift(cases: pd.DataFrame, alpha: float = 0.05) -> dict:
    """Intention-to-treat uplift of a group of cases (output of ``case_outcomes``).

    Returns:
        dict: ``treated``, ``control`` (cases with an observed health change), ``treated_mean``,
        ``control_mean`` (mean change, points), ``difference`` (treated minus control, points), ``ci_low``,
        ``ci_high`` (its ``1 - alpha`` interval, Welch's t, scipy); ``cuped_difference``, ``cuped_ci_low``,
        ``cuped_ci_high`` (adjusted for the score at trigger); churn: ``treated_churn``, ``control_churn``
        (shares), ``churn_difference``, ``churn_ci_low``, ``churn_ci_high`` (Newcombe, statsmodels);
        ``contamination`` (share of control cases contacted by another rule in the outcome window),
        ``per_protocol_difference`` (secondary); ``required_treated``, ``required_control`` (cases needed for
        5 points at 80 % power), ``too_few`` (bool) and ``verdict`` ("too few cases", "uplift",
        "harm" or "no detectable effect"). Figures are None when an arm is empty.
    """
    observed = cases.loc[cases["health_change"].notna()]
    treated = observed.loc[observed["arm"] == "treated", "health_change"].astype(float)
    control = observed.loc[observed["arm"] == "control", "health_change"].astype(float)
    item: dict = {"treated": int(len(treated)), "control": int(len(control)), "treated_mean": None,
                  "control_mean": None, "difference": None, "ci_low": None, "ci_high": None,
                  "cuped_difference": None, "cuped_ci_low": None, "cuped_ci_high": None, "treated_churn": None,
                  "control_churn": None, "churn_difference": None, "churn_ci_low": None, "churn_ci_high": None,
                  "contamination": None, "per_protocol_difference": None, "confidence": 1 - alpha}
    all_control = cases.loc[cases["arm"] == "control"]
    if len(all_control):
        item["contamination"] = round(float(all_control["contaminated"].mean()), 4)
    if len(treated):
        item["treated_mean"] = round(float(treated.mean()), 2)
    if len(control):
        item["control_mean"] = round(float(control.mean()), 2)
    if len(treated) >= 2 and len(control) >= 2:
        diff, low, high = _welch(treated, control, alpha)
        item.update(difference=round(diff, 2), ci_low=round(low, 2), ci_high=round(high, 2))
        diff, low, high = _cuped(observed, alpha)
        item.update(cuped_difference=round(diff, 2), cuped_ci_low=round(low, 2), cuped_ci_high=round(high, 2))
        delivered = observed.loc[(observed["arm"] == "treated") & observed["delivered"], "health_change"]
        clean = observed.loc[(observed["arm"] == "control") & ~observed["contaminated"], "health_change"]
        if len(delivered) and len(clean):
            item["per_protocol_difference"] = round(float(delivered.mean() - clean.mean()), 2)
    churn = cases.loc[cases["churned"].notna()]
    t_churn = churn.loc[churn["arm"] == "treated", "churned"].astype(bool)
    c_churn = churn.loc[churn["arm"] == "control", "churned"].astype(bool)
    if len(t_churn) and len(c_churn):
        item.update(treated_churn=round(float(t_churn.mean()), 4), control_churn=round(float(c_churn.mean()), 4),
                    churn_difference=round(float(t_churn.mean() - c_churn.mean()), 4))
        low, high = confint_proportions_2indep(int(t_churn.sum()), len(t_churn), int(c_churn.sum()), len(c_churn),
                                               method="newcomb", compare="diff", alpha=alpha)
        item.update(churn_ci_low=round(float(low), 4), churn_ci_high=round(float(high), 4))
    sd = float(observed["health_change"].std()) if len(observed) >= 2 else float("nan")
    share = len(control) / len(observed) if len(observed) else 0.0
    need_t, need_c = required_per_arm(sd, share, alpha) if len(treated) and len(control) else (0, 0)
    item.update(required_treated=need_t, required_control=need_c,
                too_few=bool(item["difference"] is None or len(treated) < need_t or len(control) < need_c))
    if item["too_few"]:
        item["verdict"] = "too few cases"
    elif item["ci_low"] > 0:
        item["verdict"] = "uplift"
    elif item["ci_high"] < 0:
        item["verdict"] = "harm"
    else:
        item["verdict"] = "no detectable effect"
    return item


def uplift_table(frame: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """The report: one row per rule (``channel`` = ``all``) and per rule and channel, with ``uplift``'s
    fields as columns. ``frame``: ``OUTCOME_INPUT_COLUMNS`` rows (as in ``marts.intervention_outcomes``)."""
    rows = []
    cases = case_outcomes(frame)
    for rule, group in cases.groupby("rule"):
        rows.append({"rule": rule, "channel": "all", **uplift(group, alpha)})
    by_channel = case_outcomes(frame, per_channel=True)
    for (rule, channel), group in by_channel.groupby(["rule", "channel"]):
        rows.append({"rule": rule, "channel": channel, **uplift(group, alpha)})
    return pd.DataFrame(rows)


def recovered(frame: pd.DataFrame) -> pd.Series:
    """Per row: healthy at the outcome day or the score up by ``RECOVERY_POINTS`` (None while unobserved).
    ``frame`` needs ``health_at_trigger``, ``health_outcome`` and ``risk_outcome``."""
    observed = frame["health_outcome"].notna()
    up = (frame["risk_outcome"] == "healthy") | ((frame["health_outcome"] - frame["health_at_trigger"])
                                                 >= RECOVERY_POINTS)
    return pd.Series(np.where(observed, up, None), index=frame.index, dtype=object)
