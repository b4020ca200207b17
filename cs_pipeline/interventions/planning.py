"""Which suppliers a rule newly matches, what to send them, and what the filters let through.

Pure functions over pandas DataFrames: no database, no Dagster, no SMTP.
"""

from __future__ import annotations

import hashlib
import re
from datetime import date, timedelta
from functools import lru_cache

import jinja2
import numpy as np
import pandas as pd

from cs_pipeline.interventions.playbook import MANUAL_RULE, TEMPLATE_DIR, Condition, Playbook, Rule

#: Columns of the per-supplier, per-day facts the conditions read (customer_health + engagement).
FACT_COLUMNS = ["supplier_id", "as_of_date", "risk_level", "previous_risk_level", "score_delta_7d",
                "score_delta_30d", "lifecycle_stage", "days_since_onboarded", "days_since_last_login",
                "days_since_signup", "status", "churn_probability", "churn_model_version",
                "churn_probability_7d_ago"]
#: Tolerance of the churn_probability comparisons (probabilities are stored with 4 decimals: 0.35 - 0.25
#: must count as a rise of 0.1, not 0.0999999...).
CHURN_EPSILON = 1e-9
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
    if condition.churn_probability is not None:
        # NaN compares False: a null probability (no model) or no comparable value 7 days earlier never matches.
        probability = num("churn_probability") if "churn_probability" in facts else np.full(n, np.nan)
        mask &= probability >= condition.churn_probability.at_least - CHURN_EPSILON
        if condition.churn_probability.rise_7d is not None:
            before = num("churn_probability_7d_ago") if "churn_probability_7d_ago" in facts else np.full(n, np.nan)
            mask &= probability - before >= condition.churn_probability.rise_7d - CHURN_EPSILON
    return mask


def previous_scored(history: pd.DataFrame, day: date, max_gap_days: int) -> pd.DataFrame:
    """Each supplier's last scored row strictly before ``day`` and at most ``max_gap_days`` days before it.

    Args:
        history: ``FACT_COLUMNS`` rows of any days (``as_of_date`` date or datetime).

    Returns:
        ``FACT_COLUMNS`` rows, at most one per supplier (suppliers without such a row are absent).
    """
    if history.empty:
        return history.iloc[0:0]
    days = pd.to_datetime(history["as_of_date"]).dt.date
    window = history.loc[(days < day) & (days >= day - timedelta(days=max_gap_days))].copy()
    window["_d"] = pd.to_datetime(window["as_of_date"])
    return window.sort_values(["supplier_id", "_d"]).drop_duplicates("supplier_id", keep="last") \
        .drop(columns="_d").reset_index(drop=True)


def newly_matching(rule: Rule, today: pd.DataFrame, previous: pd.DataFrame,
                   uncelebrated: pd.DataFrame | None = None) -> list[str]:
    """Supplier ids due for ``rule`` on the day (sorted).

    A transition rule (``every_day`` false) needs evidence: the supplier must have a previous scored row in
    ``previous`` (its last scored day within the playbook's gap, see ``previous_scored``); it is due when
    the condition holds today and did not on that previous day. ``risk_changed`` compares today's level with
    that previous row's level (not with a day that may be missing). Suppliers without a previous row are
    never "newly" matching, so a missing day cannot turn every standing case into a transition.
    An ``every_day`` rule is due whenever its condition holds (cooldowns limit repeats).
    A milestone rule is due for suppliers with uncelebrated milestones (and its other parts today).

    Args:
        today: ``FACT_COLUMNS`` rows of the day.
        previous: ``FACT_COLUMNS`` rows, one per supplier: its comparable previous scored day.
        uncelebrated: ``supplier_id`` of achieved, uncelebrated milestones (for milestone rules).
    """
    if rule.condition.milestone_achieved:
        if uncelebrated is None or uncelebrated.empty:
            return []
        ids = set(uncelebrated["supplier_id"])
        others = rule.condition.model_copy(update={"milestone_achieved": False})
        if any(v not in (None, False) for v in others.model_dump(exclude={"milestone_max_age_days",
                                                                          "every_day"}).values()):
            ids &= set(today.loc[condition_mask(today, others), "supplier_id"])
        return sorted(ids & set(today["supplier_id"]))
    if rule.condition.every_day:
        return sorted(set(today.loc[condition_mask(today, rule.condition), "supplier_id"]))
    if previous is None or previous.empty or today.empty:
        return []
    prev_level = previous.set_index("supplier_id")["risk_level"]
    # A hash lookup, not Series.isin: pandas 3's isin over arrow strings converts every value one by one.
    current = today.loc[pd.Index(prev_level.index).get_indexer(today["supplier_id"]) >= 0].copy()
    current["previous_risk_level"] = current["supplier_id"].map(prev_level)
    now = set(current.loc[condition_mask(current, rule.condition), "supplier_id"])
    before = set(previous.loc[condition_mask(previous, rule.condition), "supplier_id"])
    return sorted(now - before)


def in_control_group(supplier_ids: pd.Series | list[str], rule: str, share: float,
                     episode: date | None = None) -> np.ndarray:
    """Deterministic randomisation of cases: True for about ``share`` of them.

    A case is (supplier, rule, episode), the episode being the day the rule became due for the supplier
    (``as_of_date``): the arm is the SHA-256 of ``rule:supplier:episode`` compared with ``share``, so it is
    drawn once per case, the same on every re-run, and independently for each new episode of a supplier
    (a supplier is not control for a rule for ever). Without ``episode`` (older callers): by (rule, supplier).
    """
    suffix = f":{episode.isoformat()}" if episode is not None else ""
    out = np.zeros(len(supplier_ids), dtype=bool)
    for i, sid in enumerate(supplier_ids):
        digest = hashlib.sha256(f"{rule}:{sid}{suffix}".encode()).digest()
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


RISK_RANK = {"critical": 2, "at_risk": 1, "healthy": 0}
#: Statuses of ``ops.interventions`` rows that count for cooldowns and caps (reserved, being retried, or
#: delivered). ``expired`` (undelivered past the retry window) counts for nothing: a failed attempt never
#: starts a cooldown of its own. Control cases (``suppressed``, reason ``control``) count as well.
COUNTED_STATUSES = ("planned", "sending", "sent", "failed")


def is_alert(frame: pd.DataFrame) -> np.ndarray:
    """True for CS-team alert e-mails (``audience`` cs_team, ``channel`` email): not a supplier contact."""
    return ((frame["audience"] == "cs_team") & (frame["channel"] == "email")).to_numpy()


def _objects(frame: pd.DataFrame, column: str) -> np.ndarray:
    """``frame[column]`` as a NumPy object array: iterating pandas 3's arrow strings costs microseconds each."""
    return frame[column].to_numpy(dtype=object, na_value=None)


def apply_filters(planned: pd.DataFrame, sent: pd.DataFrame, suppliers: pd.DataFrame, playbook: Playbook,
                  as_of: date, opted_out: pd.DataFrame | None = None, force: bool = False,
                  reserved_today: int = 0) -> pd.DataFrame:
    """Decide, for each planned row, ``status`` (planned / suppressed) and ``reason``.

    Rows are first ordered by rule priority (high first), then risk (critical, at_risk, healthy; lower
    health score first), then supplier id: when a cap binds, the highest-priority, highest-risk cases keep
    their slot. Supplier contacts (every row but CS-team alert e-mails), in order:

    1. ``cancelled`` supplier; 2. ``opted_out`` (the channel, or every channel when channel is null);
    3. ``control_other_rule``: the supplier was held back as control for another rule on ``as_of``
       (``sent`` rows with status suppressed, reason control): contacting it now would treat a control case
       (not for manual interventions: a person chose to act; the contact is counted as contamination);
       ``one_rule_per_day``: only the supplier's highest-priority rule of the day contacts it (all of that
       rule's channels go); a supplier already contacted on ``as_of`` by another rule is not contacted again
       (not for manual interventions either: the cooldown and the caps still bound them);
    4. ``cooldown``: same supplier and channel reserved or sent within ``cooldown_days`` (any rule);
    5. ``weekly_cap``: supplier-facing messages (audience supplier) to the supplier in the 7 days up to
       ``as_of``, across rules, would exceed ``weekly_cap``;
    6. ``daily_cap``: ``reserved_today`` (supplier-facing messages already reserved to go out on the UTC
       calendar day of sending, whatever their ``as_of`` day, rule, run or batch, manual ones included)
       plus this supplier's rule would exceed ``daily_cap``; a supplier's rule is admitted or held back
       as a whole;
    7. ``control``: of the rows still planned, supplier-facing messages of cases in the control arm
       (``in_control_group`` of rule, supplier and episode ``as_of``), so control and treated cases pass the
       same filters. Never for manual interventions (rule ``manual``: a person chose to act).

    Identical bookkeeping of both arms: control rows in ``sent`` count for ``one_rule_per_day``, the
    cooldown, the weekly cap and (through ``reserved_today``) the daily cap exactly as contacted rows do,
    and today's control rows take their daily-cap slots, so a control case re-enters on the same schedule
    as a treated one (issue 27).

    CS-team alert e-mails are never held back except by ``cooldown`` (one alert per supplier within
    ``cooldown_days``). With ``force`` (manual interventions) only the supplier cooldown (step 4) is
    skipped; the other steps apply.

    Args:
        planned: output of ``plan`` (any rules), with ``risk_level`` and ``health_score`` when known.
        sent: rows of ``ops.interventions`` that count (status in ``COUNTED_STATUSES``): ``supplier_id``,
            ``rule``, ``channel``, ``audience``, ``as_of_date``; the keys being planned must not be in it.
            With ``status`` and ``reason`` columns it may also hold control rows (suppressed, control): they
            count like contacts (identical bookkeeping) and serve ``control_other_rule``.
        suppliers: ``supplier_id``, ``status`` (latest snapshot).
        opted_out: ``supplier_id``, ``channel`` (None = every channel).
        reserved_today: supplier-facing messages of ``ops.interventions`` already reserved for the UTC day
            the planned rows will be sent on (``service.reserved_on``), counted in PostgreSQL under the
            planning lock.
    """
    out = planned.copy()
    if out.empty:
        out["status"] = pd.Series(dtype=object)
        out["reason"] = pd.Series(dtype=object)
        return out
    risk = out["risk_level"].map(RISK_RANK).fillna(-1) if "risk_level" in out else pd.Series(-1, index=out.index)
    health = pd.to_numeric(out["health_score"], errors="coerce").fillna(101.0) if "health_score" in out \
        else pd.Series(101.0, index=out.index)
    out = out.assign(_risk=-risk, _health=health, _prio=-out["priority"].astype(int)) \
        .sort_values(["_prio", "_risk", "_health", "supplier_id", "rule"], kind="stable") \
        .drop(columns=["_risk", "_health", "_prio"]).reset_index(drop=True)
    out["status"] = "planned"
    out["reason"] = None
    sids, channels, rules = _objects(out, "supplier_id"), _objects(out, "channel"), _objects(out, "rule")
    alert = is_alert(out)
    facing = (out["audience"] == "supplier").to_numpy()
    status = suppliers.drop_duplicates("supplier_id", keep="last").set_index("supplier_id")["status"].reindex(out["supplier_id"]).to_numpy() \
        if len(suppliers) else np.full(len(out), None)

    def suppress(mask: np.ndarray, reason: str, alerts_too: bool = False) -> None:
        target = mask & (out["status"] == "planned").to_numpy() & (alerts_too | ~alert)
        out.loc[target, "status"] = "suppressed"
        out.loc[target, "reason"] = reason

    sent = sent.copy() if len(sent) else pd.DataFrame(columns=["supplier_id", "rule", "channel", "audience", "as_of_date"])
    if "rule" not in sent:
        sent["rule"] = None  # unknown rule: counts as another rule for one_rule_per_day
    control_rules: dict[str, set] = {}  # supplier -> rules it is held back as control for on as_of
    if len(sent) and {"status", "reason"} <= set(sent.columns):
        held = ((sent["status"] == "suppressed") & (sent["reason"] == "control")).to_numpy()
        for sid, rule, day in zip(_objects(sent.loc[held], "supplier_id"), _objects(sent.loc[held], "rule"),
                                  _objects(sent.loc[held], "as_of_date")):
            if pd.Timestamp(day).date() == as_of:
                control_rules.setdefault(sid, set()).add(rule)
    sent_day = pd.to_datetime(sent["as_of_date"]).dt.date if len(sent) else pd.Series(dtype=object)
    suppress(status == "cancelled", "cancelled")
    if opted_out is not None and len(opted_out):
        keys = set(zip(_objects(opted_out, "supplier_id"), opted_out["channel"].fillna("*").to_numpy(dtype=object)))
        suppress(np.array([(s, c) in keys or (s, "*") in keys for s, c in zip(sids, channels)]), "opted_out")
    # Cooldown of CS-team alerts: one per supplier within cooldown_days (any rule), even when forced.
    recent = sent.loc[(sent_day > as_of - timedelta(days=playbook.cooldown_days)).to_numpy()] if len(sent) else sent
    alerted = set(recent.loc[is_alert(recent), "supplier_id"]) if len(recent) else set()
    suppress(alert & out["supplier_id"].isin(alerted).to_numpy(), "cooldown", alerts_too=True)
    first_alert = ~out.loc[alert].duplicated("supplier_id")  # one alert per supplier in this plan
    suppress(alert & ~first_alert.reindex(out.index, fill_value=True).to_numpy(), "cooldown", alerts_too=True)
    manual = (out["rule"] == MANUAL_RULE).to_numpy()
    suppress(~manual & np.array([bool(control_rules.get(s, set()) - {r})
                                 for s, r in zip(sids, rules)]), "control_other_rule")
    contacts = sent.loc[~is_alert(sent)] if len(sent) else sent
    today_contacts = contacts.loc[(pd.to_datetime(contacts["as_of_date"]).dt.date == as_of).to_numpy()] \
        if len(contacts) else contacts
    contacted_by = today_contacts.groupby("supplier_id")["rule"].agg(set).to_dict() if len(today_contacts) else {}
    live = out.loc[~alert & (out["status"] == "planned").to_numpy()]
    top_rule = live.groupby("supplier_id")["rule"].first().to_dict()  # rows are in priority order
    suppress(~manual & np.array([top_rule.get(s, r) != r or bool(contacted_by.get(s, set()) - {r})
                                 for s, r in zip(sids, rules)]), "one_rule_per_day")
    recent_contacts = recent.loc[~is_alert(recent)] if len(recent) else recent
    cooled = set(zip(_objects(recent_contacts, "supplier_id"), _objects(recent_contacts, "channel"))) \
        if len(recent_contacts) else set()
    if not force:
        suppress(np.array([(s, c) in cooled for s, c in zip(sids, channels)]), "cooldown")

    messages = sent.loc[(sent["audience"] == "supplier").to_numpy()] if len(sent) else sent
    message_days = pd.to_datetime(messages["as_of_date"]).dt.date if len(messages) else pd.Series(dtype=object)
    week = messages.loc[(message_days > as_of - timedelta(days=7)).to_numpy()] if len(messages) else messages
    per_supplier = week.groupby("supplier_id").size().to_dict() if len(week) else {}
    today_total = int(reserved_today)  # per UTC sending day, not per as_of day (see reserved_today)
    # Weekly cap, in priority order: a supplier's n-th message of the plan goes while earlier ones + n <= cap.
    live_facing = (out["status"] == "planned").to_numpy() & facing
    earlier = out["supplier_id"].map(per_supplier).fillna(0).to_numpy() if per_supplier else np.zeros(len(out))
    nth = out.loc[live_facing].groupby("supplier_id").cumcount().reindex(out.index, fill_value=0).to_numpy()
    suppress(live_facing & (earlier + nth >= playbook.weekly_cap), "weekly_cap")
    # Daily cap: a supplier's rule (its remaining supplier-facing messages) is admitted or held back whole.
    pending = (out["status"] == "planned").to_numpy() & ~alert
    keys = list(zip(sids[pending], rules[pending]))
    needs: dict[tuple[str, str], int] = {}
    for key, is_facing in zip(keys, facing[pending]):  # insertion order = priority and risk order
        needs[key] = needs.get(key, 0) + int(is_facing)
    held_back = set()
    for key, need in needs.items():
        if need and today_total + need > playbook.daily_cap:
            held_back.add(key)
        else:
            today_total += need
    if held_back:
        suppress(np.array([k in held_back for k in zip(sids, rules)]) & pending, "daily_cap")
    control = np.zeros(len(out), dtype=bool)
    candidates = (out["status"] == "planned").to_numpy() & facing & ~manual
    for rule, rows in out.loc[candidates].groupby("rule").indices.items():
        index = out.index[candidates][rows]
        control[index] = in_control_group(out.loc[index, "supplier_id"].tolist(), rule, playbook.control_share,
                                          episode=as_of)
    suppress(control, "control")
    return out


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)), undefined=jinja2.StrictUndefined,
                              autoescape=False, keep_trailing_newline=True)


#: Characters that end a line somewhere (CR, LF, VT, FF, NEL, U+2028, U+2029) or are other C0/C1 controls.
_LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def single_line(value: str) -> str:
    """``value`` with every line or paragraph separator and control character (CR, LF, U+2028, U+2029,
    NEL, ...) replaced by one space and the ends stripped: safe in an e-mail header and on one template line."""
    return _LINE_BREAKS.sub(" ", value).strip()


def render(template: str, fields: dict) -> tuple[str, str]:
    """(subject, body) of ``template`` rendered with ``fields``.

    Every string field except ``message`` (a manual note, kept multi-line) is made ``single_line``
    first, and so is the subject: a business name with U+2028 or CR/LF cannot break the headers.

    Raises:
        jinja2.UndefinedError: the template uses a field that is not given.
    """
    values = {k: (single_line(v) if isinstance(v, str) and k != "message" else v) for k, v in fields.items()}
    if isinstance(values.get("message"), str):
        values["message"] = values["message"].replace("\r\n", "\n").replace("\r", "\n") \
            .replace("\u2028", "\n").replace("\u2029", "\n\n")
    values.setdefault("message", "")
    values.setdefault("least_adopted_feature_label",
                      FEATURE_LABELS.get(values.get("least_adopted_feature") or "", "forms and questionnaires"))
    drivers = values.get("drivers") or ""
    values.setdefault("drivers_sentence", f"What would raise it most: {drivers}." if drivers else "")
    text = _environment().get_template(f"{template}.txt").render(**values)
    first, _, rest = text.partition("\n")
    if first.startswith("Subject:"):
        return single_line(first[len("Subject:"):]), rest.lstrip("\n")
    return template.replace("_", " "), text
