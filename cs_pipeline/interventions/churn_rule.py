"""The playbook's use of the churn model (issue 26 item 6): the churn probability 7 days earlier under the
same model, and the rules left out of a day's plan when no churn model scored it. Pure functions over pandas
DataFrames (``planning.condition_mask`` applies the ``churn_probability`` condition).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cs_pipeline.interventions.playbook import Playbook


def add_churn_7d_ago(facts: pd.DataFrame, churn_history: pd.DataFrame) -> pd.DataFrame:
    """``facts`` with ``churn_probability_7d_ago``: the supplier's ``churn_probability`` 7 days before the
    row's ``as_of_date`` when that day was scored by the *same* ``churn_model_version``, else NaN (no score
    that day, no model then, or another model: a model change is not a rise). Rule source: issue 26 item 6.

    Args:
        facts: rows with ``supplier_id``, ``as_of_date`` (date or datetime), ``churn_probability`` (float
            0-1 or null) and ``churn_model_version`` (text or null).
        churn_history: ``marts.customer_health`` rows (same four columns) of the days 7 days earlier.

    Returns:
        A copy of ``facts`` with the float column added (same row order).
    """
    out = facts.copy()
    if out.empty or churn_history.empty:
        out["churn_probability_7d_ago"] = np.full(len(out), np.nan)
        return out
    keys = pd.MultiIndex.from_arrays([churn_history["supplier_id"].astype(str).to_numpy(),
                                      pd.to_datetime(churn_history["as_of_date"]).to_numpy(),
                                      churn_history["churn_model_version"].astype(object).to_numpy()])
    earlier = pd.Series(pd.to_numeric(churn_history["churn_probability"], errors="coerce").to_numpy(dtype=float),
                        index=keys)
    earlier = earlier[~earlier.index.duplicated(keep="last")]
    wanted = pd.MultiIndex.from_arrays([out["supplier_id"].astype(str).to_numpy(),
                                        (pd.to_datetime(out["as_of_date"]) - pd.Timedelta(days=7)).to_numpy(),
                                        out["churn_model_version"].astype(object).to_numpy()])
    values = np.array(earlier.reindex(wanted).to_numpy(dtype=float), dtype=float)  # a writable copy
    values[out["churn_model_version"].isna().to_numpy()] = np.nan  # no model today: nothing to compare
    out["churn_probability_7d_ago"] = values
    return out


def rules_disabled(playbook: Playbook, churn_model_version: str | None, why_not: str = "") -> dict[str, str]:
    """Rule name -> why it is left out of a day's plan: the rules with ``requires: churn_model`` when no
    churn model scored the day (``churn_model_version`` None; ``why_not`` says why, e.g. "no churn model
    trained"). Empty when every rule may run."""
    if churn_model_version is not None:
        return {}
    reason = f"requires a churn model: {why_not or 'none scored the day'}"
    return {r.name: reason for r in playbook.rules if r.requires == "churn_model"}
