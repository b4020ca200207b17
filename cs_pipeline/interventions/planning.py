"""Which suppliers a rule newly matches, what to send them, and what the filters let through.

Pure functions over pandas DataFrames: no database, no Dagster, no SMTP.
"""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from functools import lru_cache

import jinja2
import numpy as np
import pandas as pd

from cs_pipeline.interventions.playbook import TEMPLATE_DIR, Condition, Playbook, Rule

#: Columns of the per-supplier, per-day facts the conditions read (customer_health + engagement).
FACT_COLUMNS = ["supplier_id", "as_of_date", "risk_level", "previous_risk_level", "score_delta_7d",
                "score_delta_30d", "lifecycle_stage", "days_since_onboarded", "days_since_last_login",
                "days_since_signup", "status"]
FEATURE_LABELS = {
    "client_management": "client management", "forms": "forms and questionnaires", "journeys": "automated journeys",
    "messaging": "client messaging", "timeline": "shared wedding timelines", "payments": "payment links",
}


def condition_mask(facts: pd.DataFrame, condition: Condition) -> np.ndarray:
    """True where every part of ``condition`` holds for the row (milestones are handled apart).

    ``days_since_last_login`` null (never logged in) counts from signup.
    """
    n = len(facts)
    mask = np.ones(n, dtype=bool)

    def num(column: str) -> np.ndarray:
        return pd.to_numeric(facts[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)

    if condition.risk_changed is not None:
        mask &= facts["previous_risk_level"].isin(condition.risk_changed.from_).to_numpy()
        mask &= facts["risk_level"].isin(condition.risk_changed.to).to_numpy()
    if condition.score_drop is not None:
        delta = num(f"score_delta_{condition.score_drop.days}d")
        mask &= np.nan_to_num(delta, nan=0.0) <= -condition.score_drop.points
    if condition.lifecycle_stage is not None:
        mask &= facts["lifecycle_stage"].isin(condition.lifecycle_stage).to_numpy()
    if condition.risk_level is not None:
        mask &= facts["risk_level"].isin(condition.risk_level).to_numpy()
    if condition.days_since_onboarded_at_least is not None:
        mask &= np.nan_to_num(num("days_since_onboarded"), nan=-1) >= condition.days_since_onboarded_at_least
    if condition.days_since_last_login_at_least is not None:
        since = num("days_since_last_login")
        since = np.where(np.isnan(since), num("days_since_signup"), since)
        mask &= np.nan_to_num(since, nan=-1) >= condition.days_since_last_login_at_least
    return mask


def newly_matching(rule: Rule, today: pd.DataFrame, yesterday: pd.DataFrame,
                   uncelebrated: pd.DataFrame | None = None) -> list[str]:
    """Supplier ids that match ``rule`` today and did not the day before (sorted).

    Args:
        today, yesterday: ``FACT_COLUMNS`` rows for the day and the day before.
        uncelebrated: ``supplier_id`` of achieved, uncelebrated milestones (for milestone rules).
    """
    if rule.condition.milestone_achieved:
        if uncelebrated is None or uncelebrated.empty:
            return []
        ids = set(uncelebrated["supplier_id"])
        others = rule.condition.model_copy(update={"milestone_achieved": False})
        if any(v not in (None, False) for v in others.model_dump(exclude={"milestone_max_age_days"}).values()):
            ids &= set(today.loc[condition_mask(today, others), "supplier_id"])
        return sorted(ids & set(today["supplier_id"]))
    now = set(today.loc[condition_mask(today, rule.condition), "supplier_id"])
    before = set(yesterday.loc[condition_mask(yesterday, rule.condition), "supplier_id"]) if len(yesterday) else set()
    return sorted(now - before)


def in_control_group(supplier_ids: pd.Series | list[str], rule: str, share: float) -> np.ndarray:
    """Deterministic holdout: True for about ``share`` of suppliers, by SHA-256 of (rule, supplier)."""
    out = np.zeros(len(supplier_ids), dtype=bool)
    for i, sid in enumerate(supplier_ids):
        digest = hashlib.sha256(f"{rule}:{sid}".encode()).digest()
        out[i] = int.from_bytes(digest[:8], "big") / 2**64 < share
    return out


def next_business_day(day: date) -> date:
    """The first Monday-Friday strictly after ``day``."""
    day += timedelta(days=1)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def plan(rule: Rule, context: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """One planned intervention per supplier in ``context`` and action of ``rule``.

    Args:
        context: one row per supplier with ``supplier_id`` and the template fields (business_name,
            health_score, risk_level, drivers, least_adopted_feature, ...).

    Returns:
        DataFrame ``supplier_id, rule, channel, as_of_date, template, audience, call_type, priority,
        scheduled_for`` (date: emails and in-app the day after as_of plus the delay; call tasks the next
        business day after that) plus the context columns.
    """
    rows = []
    for action in rule.actions:
        base = as_of + timedelta(days=action.delay_days)
        scheduled = next_business_day(base) if action.channel == "call" else as_of + timedelta(days=1 + action.delay_days)
        for record in context.to_dict("records"):
            rows.append({**record, "rule": rule.name, "channel": action.channel, "as_of_date": as_of,
                         "template": action.template, "audience": action.audience, "call_type": action.call_type,
                         "priority": rule.priority, "scheduled_for": scheduled})
    return pd.DataFrame(rows)


def apply_filters(planned: pd.DataFrame, sent: pd.DataFrame, suppliers: pd.DataFrame, playbook: Playbook,
                  as_of: date, opted_out: pd.DataFrame | None = None) -> pd.DataFrame:
    """Decide, for each planned row, ``status`` (planned / suppressed) and ``reason``.

    In order: cancelled supplier, opted out (channel or all), holdout ``control`` group, ``cooldown``
    (same supplier and channel sent within ``cooldown_days``), ``weekly_cap`` (supplier-facing sends in
    the last 7 days), ``daily_cap`` (supplier-facing sends on the day, all suppliers). Alerts to the CS
    team are never held back (a critical supplier always produces its alert).

    Args:
        planned: output of ``plan`` (rows in priority order are kept first).
        sent: interventions already sent: ``supplier_id``, ``channel``, ``audience``, ``as_of_date``.
        suppliers: ``supplier_id``, ``status`` (latest snapshot).
        opted_out: ``supplier_id``, ``channel`` (None = every channel).
    """
    out = planned.sort_values(["priority", "supplier_id"], ascending=[False, True], kind="stable").reset_index(drop=True)
    out["status"] = "planned"
    out["reason"] = None
    if out.empty:
        return out
    alert = (out["audience"] == "cs_team") & (out["channel"] == "email")
    status = suppliers.set_index("supplier_id")["status"].reindex(out["supplier_id"]).to_numpy()

    def suppress(mask: np.ndarray, reason: str) -> None:
        target = mask & (out["status"] == "planned").to_numpy() & ~alert.to_numpy()
        out.loc[target, "status"] = "suppressed"
        out.loc[target, "reason"] = reason

    suppress(status == "cancelled", "cancelled")
    if opted_out is not None and len(opted_out):
        keys = set(zip(opted_out["supplier_id"], opted_out["channel"].fillna("*")))
        hit = np.array([(s, c) in keys or (s, "*") in keys for s, c in zip(out["supplier_id"], out["channel"])])
        suppress(hit, "opted_out")
    control = np.zeros(len(out), dtype=bool)
    for rule, rows in out.groupby("rule").indices.items():
        control[rows] = in_control_group(out["supplier_id"].iloc[rows].tolist(), rule, playbook.control_share)
    suppress(control, "control")
    recent = sent.loc[pd.to_datetime(sent["as_of_date"]).dt.date > as_of - timedelta(days=playbook.cooldown_days)] \
        if len(sent) else sent
    cooled = set(zip(recent["supplier_id"], recent["channel"])) if len(recent) else set()
    suppress(np.array([(s, c) in cooled for s, c in zip(out["supplier_id"], out["channel"])]), "cooldown")
    facing = sent.loc[sent["audience"] != "cs_team"] if len(sent) else sent
    week = facing.loc[pd.to_datetime(facing["as_of_date"]).dt.date > as_of - timedelta(days=7)] if len(facing) else facing
    per_supplier = week.groupby("supplier_id").size().to_dict() if len(week) else {}
    today_total = int((pd.to_datetime(facing["as_of_date"]).dt.date == as_of).sum()) if len(facing) else 0
    for i in out.index[(out["status"] == "planned") & ~alert]:
        sid = out.at[i, "supplier_id"]
        if per_supplier.get(sid, 0) >= playbook.weekly_cap:
            out.at[i, "status"], out.at[i, "reason"] = "suppressed", "weekly_cap"
            continue
        if today_total >= playbook.daily_cap:
            out.at[i, "status"], out.at[i, "reason"] = "suppressed", "daily_cap"
            continue
        per_supplier[sid] = per_supplier.get(sid, 0) + 1
        today_total += 1
    return out


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), undefined=jinja2.StrictUndefined,
                              autoescape=False, keep_trailing_newline=True)


def render(template: str, fields: dict) -> tuple[str, str]:
    """(subject, body) of ``template`` rendered with ``fields``.

    Raises:
        jinja2.UndefinedError: the template uses a field that is not given.
    """
    values = dict(fields)
    values.setdefault("least_adopted_feature_label",
                      FEATURE_LABELS.get(values.get("least_adopted_feature") or "", "forms and questionnaires"))
    drivers = values.get("drivers") or ""
    values.setdefault("drivers_sentence", f"What would raise it most: {drivers}." if drivers else "")
    text = _environment().get_template(f"{template}.txt").render(**values)
    first, _, rest = text.partition("\n")
    if first.startswith("Subject:"):
        return first[len("Subject:"):].strip(), rest.lstrip("\n")
    return template.replace("_", " "), text
