"""One synthetic day of WedSync activity: logins and feature events of the active suppliers, support
tickets (opened, answered, resolved, with CSAT) and billing events, as Arrow tables of text columns in
the landing files' shapes. Mutates the population's daily state (tiers, open tickets).
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cs_pipeline.feeds.population import (
    ARCHETYPES,
    FEATURES,
    SEASONALITY,
    TIER_EVENTS,
    TIER_MRR,
    TIER_TEAM,
    Population,
    activity_multiplier,
    join_text,
    num_text,
    ts_strings,
)
from cs_pipeline.ingest.sources import TIERS, VENDOR_CATEGORIES


def day_tables(pop: Population, i: int, day: date, rng: np.random.Generator, open_tickets: list[dict], ticket_seq: int):
    """Day ``i`` (``day``, UTC) of the window: (activity events table, support tickets as a dict of
    columns plus ``_new``, the number of tickets opened, billing events table). ``open_tickets`` carries
    tickets still open into the next day; ``ticket_seq`` numbers new tickets."""
    n = len(pop.ids)
    alive = (pop.signup_day <= i) & (i < pop.cancel_day)
    month = day.month
    season = np.array([SEASONALITY[VENDOR_CATEGORIES[c]][month - 1] for c in range(len(VENDOR_CATEGORIES))])
    weekday = 0.6 if day.weekday() >= 5 else 1.0
    mult = activity_multiplier(pop, i)
    setup_phase = (i >= pop.signup_day) & (i <= np.maximum(pop.onboard_day, pop.signup_day) + 1)
    p = pop.p_active * season[pop.category] * weekday * mult
    p = np.where(setup_phase, 0.95, p)
    active = alive & (rng.random(n) < np.clip(p, 0, 1))
    act_idx = np.flatnonzero(active)
    lam = TIER_EVENTS[pop.tier[act_idx]] * season[pop.category[act_idx]] * np.maximum(mult[act_idx], 0.3)
    n_feature_events = rng.poisson(lam)
    setup = setup_phase[act_idx]
    n_feature_events[setup] = np.maximum(n_feature_events[setup], 3)
    # one login per active day, then feature events
    sup_of_login = act_idx
    sup_of_feat = np.repeat(act_idx, n_feature_events)
    u = rng.random(len(sup_of_feat))
    feature = (u[:, None] > pop.feature_cum[sup_of_feat]).sum(axis=1)
    # Setup days are about the profile and integrations.
    in_setup = setup_phase[sup_of_feat]
    feature = np.where(in_setup & (rng.random(len(feature)) < 0.6),
                       np.where(rng.random(len(feature)) < 0.7, len(FEATURES) - 1, len(FEATURES) - 2), feature)
    event_names = np.empty(len(feature), dtype=object)
    has_client = np.zeros(len(feature), dtype=bool)
    prop_key = np.full(len(feature), None, dtype=object)
    for f_idx, (_, names, client_related, key) in enumerate(FEATURES):
        sel = np.flatnonzero(feature == f_idx)
        if not len(sel):
            continue
        labels = [nm for nm, _ in names]
        weights = np.array([w for _, w in names])
        if f_idx == 1:  # forms: completion depends on the supplier
            q = pop.completion[sup_of_feat[sel]]
            r = rng.random(len(sel))
            choice = np.where(r < 0.1, 0, np.where(r < 0.1 + 0.9 / (1 + q), 1, 2))
        elif f_idx == 2:  # journeys
            q = pop.completion[sup_of_feat[sel]]
            r = rng.random(len(sel))
            choice = np.where(r < 0.08, 0, np.where(r < 0.08 + 0.92 / (1 + q), 1, np.where(rng.random(len(sel)) < 0.85, 2, 3)))
        else:
            choice = rng.choice(len(labels), size=len(sel), p=weights / weights.sum())
        event_names[sel] = np.array(labels, dtype=object)[choice]
        has_client[sel] = client_related
        prop_key[sel] = key
    sup_all = np.concatenate([sup_of_login, sup_of_feat])
    names_all = np.concatenate([np.full(len(sup_of_login), "login", dtype=object), event_names])
    seconds = np.concatenate([
        rng.integers(7 * 3600, 12 * 3600, size=len(sup_of_login)),
        rng.integers(12 * 3600, 86400, size=len(sup_of_feat)),
    ])
    client_all = np.concatenate([np.zeros(len(sup_of_login), dtype=bool), has_client])
    prop_all = np.concatenate([np.full(len(sup_of_login), None, dtype=object), prop_key])
    order = np.lexsort((seconds, sup_all))
    sup_all, names_all, seconds, client_all, prop_all = (
        sup_all[order], names_all[order], seconds[order], client_all[order], prop_all[order])
    m = len(sup_all)
    age = np.maximum(i - pop.signup_day[sup_all], 0)
    pool = np.maximum(1, np.minimum(2 + age * pop.client_rate[sup_all], 400)).astype(np.int64)
    client_k = (rng.random(m) * pool).astype(np.int64)
    client_k = np.where(names_all == "client_added", pool - 1, client_k)
    team = TIER_TEAM[pop.tier[sup_all]]
    user_j = (rng.random(m) * team).astype(np.int64)
    ids = pa.array(pop.ids[sup_all]) if m else pa.array([], type=pa.string())
    client_ids = pc.if_else(pa.array(client_all), join_text(ids, "_c", num_text(client_k)), pa.scalar(None, pa.string()))
    ref = rng.integers(1, 50, size=m)
    props = np.full(m, None, dtype=object)
    for key in ("form_id", "journey_id"):
        sel = prop_all == key
        props[sel] = [f'{{"{key}": "{key[0]}{r}"}}' for r in ref[sel]]
    sel = prop_all == "amount"
    props[sel] = [f'{{"amount": {r * 25}}}' for r in ref[sel]]
    stamp = day.strftime("%Y%m%d")
    events = pa.table({
        "event_id": join_text(pa.array(np.full(m, f"evt_{stamp}_")), num_text(np.arange(1, m + 1), 7)),
        "supplier_id": ids,
        "user_id": join_text(ids, "_u", num_text(user_j)),
        "event_name": pa.array(names_all.astype(str)) if m else pa.array([], type=pa.string()),
        "occurred_at": ts_strings(day, seconds),
        "client_id": client_ids,
        "properties": pa.array(props, type=pa.string()),
    })

    tickets = _tickets(pop, i, day, rng, alive, open_tickets, ticket_seq)
    billing = _billing(pop, i, day, rng, alive)
    return events, tickets, billing


def _tickets(pop, i, day, rng, alive, open_tickets, ticket_seq):
    n = len(pop.ids)
    a = pop.archetype
    until_cancel = pop.cancel_day - i
    troubled = ((a == ARCHETYPES.index("declining")) & (i >= pop.change_day)) | (
        (a == ARCHETYPES.index("abrupt_churn")) & (until_cancel <= 40))
    onboarding = (i - pop.signup_day) < 14
    p = np.where(troubled, 0.04, 0.004) + np.where(onboarding, 0.02, 0.0)
    opened = np.flatnonzero(alive & (rng.random(n) < p))
    rows: list[dict] = []
    still_open: list[dict] = []
    # updates: tickets opened earlier that resolve today
    for t in open_tickets:
        if t["resolve_day"] == i:
            t = dict(t)
            t["resolved_at"] = _iso(day, int(rng.integers(9 * 3600, 18 * 3600)))
            t["csat"] = t["_csat"]
            rows.append(t)
        else:
            still_open.append(t)
    open_tickets[:] = still_open
    categories = np.array(["onboarding", "technical", "billing", "feature_request", "other"])
    for k, s in enumerate(opened):
        seq = ticket_seq + k + 1
        bad = bool(troubled[s])
        category = "onboarding" if onboarding[s] else rng.choice(
            categories, p=[0.05, 0.45, 0.30, 0.1, 0.1] if bad else [0.1, 0.35, 0.15, 0.25, 0.15])
        priority = rng.choice(["low", "normal", "high", "urgent"], p=[0.1, 0.4, 0.3, 0.2] if bad else [0.3, 0.5, 0.15, 0.05])
        opened_sec = int(rng.integers(8 * 3600, 20 * 3600))
        csat = int(rng.integers(1, 4)) if bad else int(rng.integers(3, 6))
        responds = rng.random() < 0.7
        ticket = {
            "ticket_id": f"tkt_{seq:07d}",
            "supplier_id": pop.ids[s],
            "opened_at": _iso(day, opened_sec),
            "resolved_at": None,
            "channel": rng.choice(["email", "chat", "phone"], p=[0.5, 0.4, 0.1]),
            "category": str(category),
            "priority": str(priority),
            "csat": None,
            "first_response_minutes": str(int(rng.integers(2, 600 if bad else 240))),
            "_csat": str(csat) if responds else None,
            "resolve_day": i + int(rng.integers(0, 6 if bad else 3)),
        }
        if ticket["resolve_day"] == i:
            ticket["resolved_at"] = _iso(day, min(opened_sec + int(rng.integers(600, 4 * 3600)), 86399))
            ticket["csat"] = ticket["_csat"]
        else:
            open_tickets.append(ticket)
        rows.append(ticket)
    cols = ["ticket_id", "supplier_id", "opened_at", "resolved_at", "channel", "category", "priority", "csat",
            "first_response_minutes"]
    out = {c: pa.array([r[c] for r in rows], type=pa.string()) for c in cols}
    out["_new"] = len(opened)
    return out


def _iso(day: date, second: int) -> str:
    return (datetime.combine(day, time(0)) + timedelta(seconds=second)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _billing(pop, i, day, rng, alive) -> pa.Table:
    n = len(pop.ids)
    rows: list[tuple] = []
    since_signup = i - pop.signup_day
    new = np.flatnonzero(since_signup == 0)
    for s in new:
        rows.append((s, "trial_started", 0.0, None))
    converted = np.flatnonzero((since_signup == 14) & alive & (pop.tier > 0))
    for s in converted:
        rows.append((s, "trial_converted", TIER_MRR[pop.tier[s]], TIERS[pop.tier[s]]))
    paying = alive & (pop.tier > 0) & (since_signup >= 14) & ((since_signup - 14) % 30 == 0)
    until_cancel = pop.cancel_day - i
    at_risk = (until_cancel <= 45) & (until_cancel > 0)
    fail = rng.random(n) < np.where(at_risk, 0.55, 0.02)
    for s in np.flatnonzero(paying):
        rows.append((s, "invoice_failed" if fail[s] else "invoice_paid", TIER_MRR[pop.tier[s]], None))
    healthy = pop.archetype == 0
    upgrade = np.flatnonzero(alive & healthy & (pop.tier < len(TIERS) - 1) & (since_signup > 30)
                             & (rng.random(n) < 0.0015))
    for s in upgrade:
        pop.tier[s] += 1
        rows.append((s, "subscription_upgraded", TIER_MRR[pop.tier[s]], TIERS[pop.tier[s]]))
    for s in np.flatnonzero(pop.cancel_day == i):
        rows.append((s, "subscription_cancelled", 0.0, None))
    react = pop.archetype == ARCHETYPES.index("reactivating")
    for s in np.flatnonzero(react & (i - pop.change_day == pop.change_len) & alive):
        rows.append((s, "subscription_reactivated", TIER_MRR[pop.tier[s]], TIERS[pop.tier[s]]))
    seconds = rng.integers(0, 86400, size=len(rows))
    stamp = day.strftime("%Y%m%d")
    return pa.table({
        "billing_event_id": pa.array([f"bil_{stamp}_{k:05d}" for k in range(1, len(rows) + 1)], type=pa.string()),
        "supplier_id": pa.array([pop.ids[r[0]] for r in rows], type=pa.string()),
        "occurred_at": pa.array([_iso(day, int(sec)) for sec in seconds], type=pa.string()),
        "event_type": pa.array([r[1] for r in rows], type=pa.string()),
        "amount": pa.array([f"{r[2]:.2f}" for r in rows], type=pa.string()),
        "currency": pa.array(["GBP"] * len(rows), type=pa.string()),
        "tier": pa.array([r[3] for r in rows], type=pa.string()),
    })
