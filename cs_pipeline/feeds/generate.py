"""Synthetic WedSync landing files: realistic, deterministic for a seed, vectorised per day.

What is in the data (so that every later stage has something true to find):

* vendor categories and tiers in plausible proportions; countries mostly GB;
* signup cohorts: an installed base that signed up before the window, and new signups during it,
  more of them in January-March (engagement season);
* wedding-season seasonality per vendor category (lower in winter, peak May-September);
* archetypes: healthy, low-but-steady, slowly declining (then most cancel), abrupt churners (activity
  stops, then cancellation), reactivating (a paused spell, then back), never-onboarded trials, and
  "ghosts" who complete setup and never log in again (the worked scenario of DOMAIN.md);
* support tickets (more, and worse CSAT, before churn) and failed invoices that precede churn;
* supplier ``sup_000001``: a photographer who signs up 14 days before the window ends, completes setup
  the next day and never logs in again.

The ground truth (archetype, churn day) of every supplier is written to ``_truth.csv`` beside the
landing files, for tests and the backtest's sanity checks; the pipeline never reads it.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from cs_pipeline.core.paths import FEATURE_CATALOGUE_CSV
from cs_pipeline.core.landing_contract import landing_file_name
from cs_pipeline.ingest.sources import TIERS, VENDOR_CATEGORIES

CATEGORY_WEIGHTS = np.array([0.22, 0.07, 0.14, 0.08, 0.10, 0.10, 0.07, 0.08, 0.05, 0.04, 0.05])
TIER_WEIGHTS = np.array([0.22, 0.32, 0.28, 0.13, 0.05])
TIER_MRR = np.array([0.0, 19.0, 49.0, 99.0, 299.0])
TIER_EVENTS = np.array([4.0, 7.0, 11.0, 16.0, 24.0])  # mean events per active day
TIER_TEAM = np.array([1, 1, 2, 4, 8])
COUNTRIES = np.array(["GB", "IE", "US", "AU", "CA", "NZ"])
COUNTRY_WEIGHTS = np.array([0.70, 0.06, 0.12, 0.05, 0.04, 0.03])

ARCHETYPES = ("healthy", "low_steady", "declining", "abrupt_churn", "reactivating", "ghost", "never_onboarded")
ARCHETYPE_WEIGHTS = np.array([0.50, 0.12, 0.13, 0.08, 0.07, 0.05, 0.05])

# Month (1..12) activity factor: most categories are quieter in winter and peak in summer.
_SUMMER_PEAK = np.array([0.70, 0.75, 0.90, 1.00, 1.15, 1.25, 1.30, 1.25, 1.15, 1.00, 0.80, 0.65])
_MILD = np.array([0.90, 0.95, 1.00, 1.00, 1.05, 1.05, 1.05, 1.05, 1.00, 1.00, 0.95, 0.90])
SEASONALITY = {c: _SUMMER_PEAK for c in VENDOR_CATEGORIES}
SEASONALITY["venue"] = _MILD
SEASONALITY["planner"] = _MILD
SEASONALITY["florist"] = np.array([0.55, 0.85, 0.95, 1.05, 1.20, 1.30, 1.30, 1.25, 1.15, 1.00, 0.75, 0.60])

# (feature, [(event_name, weight)], client-related, property key)
def _catalogue_core_features() -> list[str]:
    """The core features of the feature catalogue seed (DOMAIN.md: the ones adoption is measured on)."""
    with open(FEATURE_CATALOGUE_CSV, newline="", encoding="utf-8") as fh:
        return sorted({row["feature"] for row in csv.DictReader(fh) if row["is_core"].strip().lower() == "true"})


FEATURES = (
    ("client_management", (("client_added", 0.35), ("client_updated", 0.65)), True, None),
    ("forms", (("form_created", 0.10), ("form_sent", 0.50), ("form_completed", 0.40)), True, "form_id"),
    ("journeys", (("journey_created", 0.08), ("journey_started", 0.47), ("journey_completed", 0.37),
                  ("journey_failed", 0.08)), True, "journey_id"),
    ("messaging", (("message_sent", 1.0),), True, None),
    ("timeline", (("timeline_shared", 1.0),), True, None),
    ("payments", (("payment_link_sent", 0.55), ("payment_received", 0.45)), True, "amount"),
    ("documents", (("document_uploaded", 1.0),), True, None),
    ("reviews", (("review_requested", 1.0),), True, None),
    ("integrations", (("integration_connected", 1.0),), False, None),
    ("profile", (("profile_updated", 1.0),), False, None),
)
#: The core features come first in FEATURES. The catalogue's home is dbt_project/seeds/feature_catalogue.csv;
#: this table adds only how the generator behaves (event weights, client events, property keys), and
#: tests/feeds/test_generate.py fails when it stops matching the seed.
CORE = sum(1 for name in _catalogue_core_features())

_NAME_A = np.array(["Willow", "Oak", "Ivy", "Rose", "Silver", "Golden", "Meadow", "Harbour", "Juniper", "Maple",
                    "Bluebell", "Hazel", "Linden", "Amber", "Cedar", "Fern", "Laurel", "Orchid", "Sage", "Wren"])
_NAME_B = np.array(["Lane", "& Co", "House", "Studio", "Collective", "Atelier", "Hill", "Barn", "Garden", "Fields"])
_CATEGORY_NOUN = {
    "photographer": "Photography", "videographer": "Films", "venue": "Hall", "caterer": "Catering",
    "florist": "Flowers", "planner": "Weddings", "dj_band": "Sounds", "hair_makeup": "Beauty",
    "cake": "Cakes", "stationery": "Paper Co", "other": "Events",
}


@dataclass(frozen=True)
class GeneratorConfig:
    """Parameters of ``generate``.

    Attributes:
        suppliers: number of supplier accounts (>= 1).
        days: number of UTC days of landing files (>= 1).
        start: first day (UTC).
        seed: random seed; the same config gives byte-identical files.
        out: output directory (created).
        fmt: ``csv``, ``jsonl`` or ``parquet``.
        gzip: gzip csv/jsonl files.
    """

    suppliers: int
    days: int
    start: date
    seed: int = 7
    out: Path = Path(".cs_pipeline/landing")
    fmt: str = "csv"
    gzip: bool = False


@dataclass
class Population:
    """Per-supplier latent state (numpy arrays of length N) and the mutable daily state."""

    ids: np.ndarray
    category: np.ndarray  # index into VENDOR_CATEGORIES
    tier: np.ndarray  # index into TIERS (current)
    country: np.ndarray
    archetype: np.ndarray  # index into ARCHETYPES
    signup_day: np.ndarray  # day index relative to start (negative = before the window)
    signup_second: np.ndarray
    onboard_day: np.ndarray  # -10**6 = never
    change_day: np.ndarray
    change_len: np.ndarray
    cancel_day: np.ndarray  # 10**6 = never
    p_active: np.ndarray
    feature_cum: np.ndarray  # N x F cumulative preference
    completion: np.ndarray
    client_rate: np.ndarray
    names: np.ndarray
    emails: np.ndarray


NEVER = 10**6


def _population(cfg: GeneratorConfig, rng: np.random.Generator) -> Population:
    n, d = cfg.suppliers, cfg.days
    ids = np.array([f"sup_{i:06d}" for i in range(1, n + 1)])
    category = rng.choice(len(VENDOR_CATEGORIES), size=n, p=CATEGORY_WEIGHTS)
    tier = rng.choice(len(TIERS), size=n, p=TIER_WEIGHTS)
    country = rng.choice(COUNTRIES, size=n, p=COUNTRY_WEIGHTS)
    archetype = rng.choice(len(ARCHETYPES), size=n, p=ARCHETYPE_WEIGHTS)

    # Signup: 60 % installed base before the window, 40 % during it (more in Jan-Mar).
    existing = rng.random(n) < 0.6
    signup_day = np.where(existing, -rng.integers(30, 540, size=n), 0)
    window_days = np.arange(d)
    months = np.array([(cfg.start + timedelta(days=int(i))).month for i in window_days])
    weights = np.where(months <= 3, 1.8, 1.0)
    new_idx = np.flatnonzero(~existing)
    signup_day[new_idx] = rng.choice(window_days, size=len(new_idx), p=weights / weights.sum())
    ghost = ARCHETYPES.index("ghost")
    never = ARCHETYPES.index("never_onboarded")
    # Ghosts and never-onboarded trials are new signups by construction.
    late = np.isin(archetype, [ghost, never]) & existing
    signup_day[late] = rng.choice(window_days, size=int(late.sum()))
    signup_second = rng.integers(8 * 3600, 21 * 3600, size=n)
    onboard_day = signup_day + rng.integers(0, 8, size=n)
    onboard_day[archetype == never] = -NEVER

    change_day = rng.integers(0, max(d, 1), size=n)
    change_day = np.maximum(change_day, np.where(onboard_day > -NEVER, onboard_day, signup_day) + 7)
    change_len = rng.integers(45, 120, size=n)
    cancel_day = np.full(n, NEVER)
    declining = archetype == ARCHETYPES.index("declining")
    cancels = declining & (rng.random(n) < 0.75)
    cancel_day[cancels] = (change_day + change_len + rng.integers(0, 20, size=n))[cancels]
    abrupt = archetype == ARCHETYPES.index("abrupt_churn")
    change_len[abrupt] = 0
    cancel_day[abrupt] = (change_day + rng.integers(10, 40, size=n))[abrupt]
    reactivating = archetype == ARCHETYPES.index("reactivating")
    change_len[reactivating] = rng.integers(20, 60, size=n)[reactivating]
    ghosts = archetype == ghost
    change_day[ghosts] = onboard_day[ghosts] + 1
    ghost_cancel = ghosts & (rng.random(n) < 0.5)
    cancel_day[ghost_cancel] = (onboard_day + rng.integers(45, 90, size=n))[ghost_cancel]
    trial_fail = archetype == never
    cancel_day[trial_fail] = signup_day[trial_fail] + rng.integers(14, 30, size=n)[trial_fail]

    p_active = np.clip(rng.beta(6, 3, size=n), 0.25, 0.95)
    p_active[archetype == ARCHETYPES.index("low_steady")] *= 0.35

    # Feature preferences: each supplier adopts k of the six core features, plus the non-core ones.
    n_features = len(FEATURES)
    k_core = rng.integers(1, CORE + 1, size=n)
    k_core = np.where(archetype == 0, np.maximum(k_core, 3), k_core)
    ranks = rng.random((n, CORE)).argsort(axis=1)
    prefs = np.zeros((n, n_features))
    prefs[:, :CORE] = np.where(ranks < k_core[:, None], rng.gamma(2.0, 1.0, size=(n, CORE)), 0.0)
    prefs[:, CORE:] = rng.gamma(0.5, 0.2, size=(n, n_features - CORE))
    prefs[:, 0] += 0.5  # everybody manages clients a little
    prefs /= prefs.sum(axis=1, keepdims=True)
    feature_cum = np.cumsum(prefs, axis=1)
    feature_cum[:, -1] = 1.0

    completion = rng.uniform(0.45, 0.95, size=n)
    completion[np.isin(archetype, [ARCHETYPES.index("declining"), ARCHETYPES.index("abrupt_churn")])] *= 0.7
    client_rate = rng.uniform(0.05, 0.4, size=n) * (1 + tier)

    a = rng.integers(0, len(_NAME_A), size=n)
    b = rng.integers(0, len(_NAME_B), size=n)
    names = np.array([
        f"{_NAME_A[a[i]]} {_NAME_B[b[i]]} {_CATEGORY_NOUN[VENDOR_CATEGORIES[category[i]]]}" for i in range(n)
    ])
    emails = np.array([f"owner{i + 1}@{_NAME_A[a[i]].lower()}{_NAME_B[b[i]].lower().replace('& ', '')}.example"
                       for i in range(n)])

    # The worked scenario: sup_000001 is a photographer who sets up and never logs in again.
    scenario_signup = max(d - 14, 0)
    category[0] = VENDOR_CATEGORIES.index("photographer")
    tier[0] = TIERS.index("starter")
    archetype[0] = ghost
    signup_day[0] = scenario_signup
    onboard_day[0] = scenario_signup + 1
    change_day[0] = scenario_signup + 2
    cancel_day[0] = NEVER
    names[0] = "Juniper Lane Photography"

    return Population(ids, category, tier, country, archetype, signup_day, signup_second, onboard_day,
                      change_day, change_len, cancel_day, p_active, feature_cum, completion, client_rate,
                      names, emails)


def _activity_multiplier(pop: Population, day: int) -> np.ndarray:
    """Archetype effect on activity on ``day`` (0 = nothing, 1 = usual)."""
    mult = np.ones(len(pop.ids))
    since = day - pop.change_day
    a = pop.archetype
    declining = a == ARCHETYPES.index("declining")
    mult[declining] = np.clip(1 - since[declining] / np.maximum(pop.change_len[declining], 1), 0.03, 1.0)
    abrupt = a == ARCHETYPES.index("abrupt_churn")
    mult[abrupt & (since >= 0)] = 0.0
    react = a == ARCHETYPES.index("reactivating")
    quiet = react & (since >= 0) & (since < pop.change_len)
    mult[quiet] = 0.04
    ghosts = a == ARCHETYPES.index("ghost")
    mult[ghosts & (since >= 0)] = 0.0
    never = a == ARCHETYPES.index("never_onboarded")
    mult[never] = 0.15
    return mult


def _ts_strings(day: date, seconds: np.ndarray) -> pa.Array:
    base = datetime.combine(day, time(0), tzinfo=timezone.utc)
    stamps = pa.array(np.datetime64(base.replace(tzinfo=None), "s") + seconds.astype("timedelta64[s]"))
    return pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%SZ")


def _join(*parts) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _num(values: np.ndarray, width: int = 0) -> pa.Array:
    text = pa.array(values.astype(np.int64)).cast(pa.string())
    return pc.utf8_lpad(text, width, "0") if width else text


class _Writer:
    def __init__(self, cfg: GeneratorConfig):
        self.cfg = cfg
        cfg.out.mkdir(parents=True, exist_ok=True)

    def write(self, source: str, day: date, table: pa.Table) -> Path:
        cfg = self.cfg
        path = cfg.out / landing_file_name(source, day, cfg.fmt, cfg.gzip and cfg.fmt != "parquet")
        if cfg.fmt == "parquet":
            pq.write_table(table, path)
        elif cfg.fmt == "csv":
            stream = pa.output_stream(str(path), compression="gzip" if cfg.gzip else None)
            with stream:
                pacsv.write_csv(table, stream)
        else:
            frame = table.to_pandas()
            if "properties" in frame:
                frame["properties"] = [json.loads(p) if isinstance(p, str) else None for p in frame["properties"]]
            frame.to_json(path, orient="records", lines=True, compression="gzip" if cfg.gzip else None,
                          force_ascii=False)
        return path


def generate(cfg: GeneratorConfig, progress: bool = False) -> dict[str, int]:
    """Write ``cfg.days`` days of landing files for the four sources into ``cfg.out``.

    Returns counts of rows written per source (and ``files``). Deterministic for a config.

    Raises:
        ValueError: suppliers or days below 1, or an unknown format.
    """
    if cfg.suppliers < 1 or cfg.days < 1:
        raise ValueError("suppliers and days must be at least 1")
    if cfg.fmt not in ("csv", "jsonl", "parquet"):
        raise ValueError(f"unknown format {cfg.fmt!r}: expected csv, jsonl or parquet")
    rng = np.random.default_rng(cfg.seed)
    pop = _population(cfg, rng)
    writer = _Writer(cfg)
    counts = {"suppliers": 0, "activity_events": 0, "support_tickets": 0, "billing_events": 0, "files": 0}
    open_tickets: list[dict] = []
    ticket_seq = 0

    days = range(cfg.days)
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=False)
        bar.start()
        task = bar.add_task("generating landing files", total=cfg.days)
    try:
        for i in days:
            day = cfg.start + timedelta(days=i)
            day_rng = np.random.default_rng([cfg.seed, i])
            events, tickets, billing = _day(pop, i, day, day_rng, open_tickets, ticket_seq)
            ticket_seq += tickets.pop("_new", 0)
            suppliers = _snapshot(pop, i, day)
            for source, table in (("suppliers", suppliers), ("activity_events", events),
                                  ("support_tickets", pa.table(tickets)), ("billing_events", billing)):
                writer.write(source, day, table)
                counts[source] += table.num_rows
                counts["files"] += 1
            if bar is not None:
                bar.advance(task)
    finally:
        if bar is not None:
            bar.stop()
    truth = pd.DataFrame({
        "supplier_id": pop.ids,
        "archetype": [ARCHETYPES[a] for a in pop.archetype],
        "vendor_category": [VENDOR_CATEGORIES[c] for c in pop.category],
        "signup_date": [cfg.start + timedelta(days=int(s)) for s in pop.signup_day],
        "churn_date": [cfg.start + timedelta(days=int(c)) if c < cfg.days else None for c in pop.cancel_day],
    })
    truth.to_csv(cfg.out / "_truth.csv", index=False)
    return counts


def _status(pop: Population, day: int) -> np.ndarray:
    status = np.where(day - pop.signup_day < 14, "trialing", "active").astype(object)
    react = pop.archetype == ARCHETYPES.index("reactivating")
    since = day - pop.change_day
    status[react & (since >= 7) & (since < pop.change_len)] = "paused"
    status[day >= pop.cancel_day] = "cancelled"
    return status


def _snapshot(pop: Population, i: int, day: date) -> pa.Table:
    present = pop.signup_day <= i
    idx = np.flatnonzero(present)
    start = datetime.combine(day, time(0), tzinfo=timezone.utc) - timedelta(days=i)
    signed = _ts_strings(start.date(), pop.signup_day[idx] * 86400 + pop.signup_second[idx])
    onboarded_mask = (pop.onboard_day[idx] > -NEVER) & (pop.onboard_day[idx] <= i)
    onboard_secs = pop.onboard_day[idx] * 86400 + np.minimum(pop.signup_second[idx] + 3600, 86399)
    onboarded = pc.if_else(pa.array(onboarded_mask), _ts_strings(start.date(), onboard_secs),
                           pa.scalar(None, pa.string()))
    status = _status(pop, i)[idx]
    cancelled = status == "cancelled"
    cancel_secs = np.where(cancelled, pop.cancel_day[idx], 0) * 86400 + 11 * 3600
    cancelled_at = pc.if_else(pa.array(cancelled), _ts_strings(start.date(), cancel_secs),
                              pa.scalar(None, pa.string()))
    mrr = np.where(cancelled, 0.0, TIER_MRR[pop.tier[idx]])
    return pa.table({
        "supplier_id": pa.array(pop.ids[idx]),
        "business_name": pa.array(pop.names[idx]),
        "email": pa.array(pop.emails[idx]),
        "vendor_category": pa.array(np.array(VENDOR_CATEGORIES)[pop.category[idx]]),
        "tier": pa.array(np.array(TIERS)[pop.tier[idx]]),
        "country": pa.array(pop.country[idx]),
        "signed_up_at": signed,
        "onboarded_at": onboarded,
        "status": pa.array(status.astype(str)),
        "cancelled_at": cancelled_at,
        "mrr": pa.array(mrr),
        "currency": pa.array(np.full(len(idx), "GBP")),
    })


def _day(pop: Population, i: int, day: date, rng: np.random.Generator, open_tickets: list[dict], ticket_seq: int):
    n = len(pop.ids)
    alive = (pop.signup_day <= i) & (i < pop.cancel_day)
    month = day.month
    season = np.array([SEASONALITY[VENDOR_CATEGORIES[c]][month - 1] for c in range(len(VENDOR_CATEGORIES))])
    weekday = 0.6 if day.weekday() >= 5 else 1.0
    mult = _activity_multiplier(pop, i)
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
    client_ids = pc.if_else(pa.array(client_all), _join(ids, "_c", _num(client_k)), pa.scalar(None, pa.string()))
    ref = rng.integers(1, 50, size=m)
    props = np.full(m, None, dtype=object)
    for key in ("form_id", "journey_id"):
        sel = prop_all == key
        props[sel] = [f'{{"{key}": "{key[0]}{r}"}}' for r in ref[sel]]
    sel = prop_all == "amount"
    props[sel] = [f'{{"amount": {r * 25}}}' for r in ref[sel]]
    stamp = day.strftime("%Y%m%d")
    events = pa.table({
        "event_id": _join(pa.array(np.full(m, f"evt_{stamp}_")), _num(np.arange(1, m + 1), 7)),
        "supplier_id": ids,
        "user_id": _join(ids, "_u", _num(user_j)),
        "event_name": pa.array(names_all.astype(str)) if m else pa.array([], type=pa.string()),
        "occurred_at": _ts_strings(day, seconds),
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


def write_bulk_events(path: Path, day: date, rows: int, suppliers: int = 10_000, seed: int = 7,
                      chunk_rows: int = 1_000_000) -> int:
    """Write one large ``activity_events`` CSV of ``rows`` events on ``day`` (for benchmarks).

    Same columns and value shapes as ``generate`` (catalogue event names, client ids, JSON properties
    on form, journey and payment events), written in chunks so memory stays flat. Returns ``rows``.
    """
    rng = np.random.default_rng(seed)
    names = np.array([nm for _, pairs, _, _ in FEATURES for nm, _ in pairs] + ["login"])
    keyed = {"form_sent": "form_id", "form_completed": "form_id", "journey_started": "journey_id",
             "journey_completed": "journey_id"}
    stamp = day.strftime("%Y%m%d")
    written = 0
    with pa.output_stream(str(path)) as stream:
        first = True
        while written < rows:
            m = min(chunk_rows, rows - written)
            sup = rng.integers(1, suppliers + 1, size=m)
            ev = names[rng.integers(0, len(names), size=m)]
            ids = _join("sup_", _num(sup, 6))
            props = np.full(m, None, dtype=object)
            for name, key in keyed.items():
                sel = ev == name
                props[sel] = [f'{{"{key}": "{key[0]}{r}"}}' for r in rng.integers(1, 50, size=int(sel.sum()))]
            table = pa.table({
                "event_id": _join(pa.array(np.full(m, f"evt_{stamp}_")), _num(np.arange(written + 1, written + m + 1), 9)),
                "supplier_id": ids,
                "user_id": _join(ids, "_u", _num(rng.integers(0, 3, size=m))),
                "event_name": pa.array(ev),
                "occurred_at": _ts_strings(day, rng.integers(0, 86400, size=m)),
                "client_id": _join(ids, "_c", _num(rng.integers(0, 200, size=m))),
                "properties": pa.array(props, type=pa.string()),
            })
            pacsv.write_csv(table, stream, write_options=pacsv.WriteOptions(include_header=first))
            first = False
            written += m
    return written
