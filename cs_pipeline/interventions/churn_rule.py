"""The playbook's use of the churn model (issue 26 item 6): the rules left out of a day's plan when no churn
model scored it. ``planning.condition_mask`` applies the ``churn_probability`` condition to the day's
``churn_probability`` and ``churn_probability_7d_ago`` (the same model's probability 7 days earlier, stored
by the health stage).
"""

from __future__ import annotations


from cs_pipeline.interventions.playbook import Playbook


def rules_disabled(playbook: Playbook, churn_model_version: str | None, why_not: str = "") -> dict[str, str]:
    """Rule name -> why it is left out of a day's plan: the rules with ``requires: churn_model`` when no
    churn model scored the day (``churn_model_version`` None; ``why_not`` says why, e.g. "no churn model
    trained"). Empty when every rule may run."""
    if churn_model_version is not None:
        return {}
    reason = f"requires a churn model: {why_not or 'none scored the day'}"
    return {r.name: reason for r in playbook.rules if r.requires == "churn_model"}
