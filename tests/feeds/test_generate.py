"""The synthetic generator: deterministic, valid against the ingest rules, and carrying its scenarios."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from cs_pipeline.feeds.generate import GeneratorConfig, generate
from cs_pipeline.ingest.landing import open_records
from cs_pipeline.ingest.sources import SOURCE_NAMES, sources
from cs_pipeline.ingest.validation import validate_batch

START = date(2025, 1, 1)


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = generate(GeneratorConfig(suppliers=60, days=10, start=START, seed=3, out=tmp_path / "a"))
    b = generate(GeneratorConfig(suppliers=60, days=10, start=START, seed=3, out=tmp_path / "b"))
    generate(GeneratorConfig(suppliers=60, days=10, start=START, seed=4, out=tmp_path / "c"))
    assert a == b and a["files"] == 40
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_every_generated_record_passes_ingest_validation(tmp_path):
    generate(GeneratorConfig(suppliers=150, days=20, start=START, seed=1, out=tmp_path))
    for name in SOURCE_NAMES:
        for i in range(20):
            day = START + timedelta(days=i)
            for batch in open_records(tmp_path / f"{name}_{day}.csv", sources()[name]):
                checked = validate_batch(batch.table, batch.record_numbers, sources()[name], day)
                assert checked.rejected_reasons == [], (name, day, checked.rejected_raw[:2])


def test_scenarios_are_present(tmp_path):
    days = 200
    generate(GeneratorConfig(suppliers=400, days=days, start=START, seed=5, out=tmp_path))
    truth = pd.read_csv(tmp_path / "_truth.csv")
    assert {"healthy", "declining", "abrupt_churn", "reactivating", "ghost"} <= set(truth["archetype"])
    # The worked scenario: sup_000001 signs up 14 days before the end, sets up, never logs in again.
    first = truth.set_index("supplier_id").loc["sup_000001"]
    assert first["archetype"] == "ghost" and first["vendor_category"] == "photographer"
    signup = date.fromisoformat(first["signup_date"])
    assert signup == START + timedelta(days=days - 14)
    logins = []
    for i in range(days):
        day = START + timedelta(days=i)
        events = pd.read_csv(tmp_path / f"activity_events_{day}.csv")
        logins += list(events.loc[(events.supplier_id == "sup_000001") & (events.event_name == "login"), "occurred_at"])
    assert logins and max(pd.to_datetime(logins)).date() <= signup + timedelta(days=2)
    # Churners cancel: the last snapshot shows cancelled suppliers with cancelled_at set.
    last = pd.read_csv(tmp_path / f"suppliers_{START + timedelta(days=days - 1)}.csv")
    cancelled = last[last.status == "cancelled"]
    assert len(cancelled) > 5 and cancelled["cancelled_at"].notna().all()
    # Winter is quieter than summer for photographers (seasonality).
    def volume(month_day: date) -> int:
        return sum(len(pd.read_csv(tmp_path / f"activity_events_{month_day + timedelta(days=k)}.csv")) for k in range(7))
    assert volume(date(2025, 6, 2)) > volume(date(2025, 1, 6))


def test_generator_features_follow_the_feature_catalogue_seed():
    """The feature catalogue's one home is the dbt seed: the generator's behavioural table (event weights)
    must name exactly the seed's events, under the seed's features, with the seed's core features first."""
    import csv

    from cs_pipeline.core.paths import FEATURE_CATALOGUE_CSV
    from cs_pipeline.feeds.generate import CORE, FEATURES

    with open(FEATURE_CATALOGUE_CSV, newline="", encoding="utf-8") as fh:
        seed = [row for row in csv.DictReader(fh) if row["feature"] != "session"]
    seed_map = {row["event_name"]: row["feature"] for row in seed}
    generated = {name: feature for feature, pairs, _, _ in FEATURES for name, _ in pairs}
    assert generated == seed_map
    core = {row["feature"] for row in seed if row["is_core"] == "true"}
    assert {feature for feature, *_ in FEATURES[:CORE]} == core
