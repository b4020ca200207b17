"""The synthetic WedSync population: who the suppliers are (category, tier, country, archetype, signup,
onboarding, churn) and what they look like on a day (the ``suppliers`` snapshot). Deterministic for a
random generator; vectorised over suppliers with numpy and pyarrow.compute.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cs_pipeline.core.paths import FEATURE_CATALOGUE_CSV
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



def make_population(suppliers: int, days: int, start: date, rng: np.random.Generator) -> Population:
    """``suppliers`` suppliers for a window of ``days`` UTC days from ``start``, drawn from ``rng``."""
    n, d = suppliers, days
    ids = np.array([f"sup_{i:06d}" for i in range(1, n + 1)])
    category = rng.choice(len(VENDOR_CATEGORIES), size=n, p=CATEGORY_WEIGHTS)
    tier = rng.choice(len(TIERS), size=n, p=TIER_WEIGHTS)
    country = rng.choice(COUNTRIES, size=n, p=COUNTRY_WEIGHTS)
    archetype = rng.choice(len(ARCHETYPES), size=n, p=ARCHETYPE_WEIGHTS)

    # Signup: 60 % installed base before the window, 40 % during it (more in Jan-Mar).
    existing = rng.random(n) < 0.6
    signup_day = np.where(existing, -rng.integers(30, 540, size=n), 0)
    window_days = np.arange(d)
    months = np.array([(start + timedelta(days=int(i))).month for i in window_days])
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


def activity_multiplier(pop: Population, day: int) -> np.ndarray:
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


def ts_strings(day: date, seconds: np.ndarray) -> pa.Array:
    """``YYYY-MM-DDTHH:MM:SSZ`` text of ``seconds`` (int array) after midnight UTC of ``day``."""
    base = datetime.combine(day, time(0), tzinfo=timezone.utc)
    stamps = pa.array(np.datetime64(base.replace(tzinfo=None), "s") + seconds.astype("timedelta64[s]"))
    return pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%SZ")


def join_text(*parts) -> pa.Array:
    """Element-wise concatenation of string arrays and scalars."""
    return pc.binary_join_element_wise(*parts, "")


def num_text(values: np.ndarray, width: int = 0) -> pa.Array:
    """Integers as text, left-padded with zeros to ``width`` digits when given."""
    text = pa.array(values.astype(np.int64)).cast(pa.string())
    return pc.utf8_lpad(text, width, "0") if width else text


def supplier_status(pop: Population, day: int) -> np.ndarray:
    """Status per supplier on day index ``day``: trialing (first 14 days), active, paused (a reactivating
    supplier's quiet spell) or cancelled (from the churn day)."""
    status = np.where(day - pop.signup_day < 14, "trialing", "active").astype(object)
    react = pop.archetype == ARCHETYPES.index("reactivating")
    since = day - pop.change_day
    status[react & (since >= 7) & (since < pop.change_len)] = "paused"
    status[day >= pop.cancel_day] = "cancelled"
    return status


def supplier_snapshot(pop: Population, i: int, day: date) -> pa.Table:
    """The ``suppliers`` landing table of day index ``i`` (``day``): every supplier signed up by then,
    with the columns of the ``suppliers`` source as text (``mrr`` as float)."""
    present = pop.signup_day <= i
    idx = np.flatnonzero(present)
    start = datetime.combine(day, time(0), tzinfo=timezone.utc) - timedelta(days=i)
    signed = ts_strings(start.date(), pop.signup_day[idx] * 86400 + pop.signup_second[idx])
    onboarded_mask = (pop.onboard_day[idx] > -NEVER) & (pop.onboard_day[idx] <= i)
    onboard_secs = pop.onboard_day[idx] * 86400 + np.minimum(pop.signup_second[idx] + 3600, 86399)
    onboarded = pc.if_else(pa.array(onboarded_mask), ts_strings(start.date(), onboard_secs),
                           pa.scalar(None, pa.string()))
    status = supplier_status(pop, i)[idx]
    cancelled = status == "cancelled"
    cancel_secs = np.where(cancelled, pop.cancel_day[idx], 0) * 86400 + 11 * 3600
    cancelled_at = pc.if_else(pa.array(cancelled), ts_strings(start.date(), cancel_secs),
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
