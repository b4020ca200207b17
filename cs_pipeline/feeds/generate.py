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

The population lives in ``population``, one day's events in ``daily``; this module writes the files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from cs_pipeline.core.landing_contract import landing_file_name
from cs_pipeline.feeds.daily import day_tables
from cs_pipeline.feeds.population import (
    ARCHETYPES,
    CORE,
    FEATURES,
    join_text,
    make_population,
    num_text,
    supplier_snapshot,
    ts_strings,
)
from cs_pipeline.ingest.sources import VENDOR_CATEGORIES

__all__ = ["CORE", "FEATURES", "GeneratorConfig", "generate", "write_bulk_events"]


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
    pop = make_population(cfg.suppliers, cfg.days, cfg.start, rng)
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
            events, tickets, billing = day_tables(pop, i, day, day_rng, open_tickets, ticket_seq)
            ticket_seq += tickets.pop("_new", 0)
            suppliers = supplier_snapshot(pop, i, day)
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
            ids = join_text("sup_", num_text(sup, 6))
            props = np.full(m, None, dtype=object)
            for name, key in keyed.items():
                sel = ev == name
                props[sel] = [f'{{"{key}": "{key[0]}{r}"}}' for r in rng.integers(1, 50, size=int(sel.sum()))]
            table = pa.table({
                "event_id": join_text(pa.array(np.full(m, f"evt_{stamp}_")), num_text(np.arange(written + 1, written + m + 1), 9)),
                "supplier_id": ids,
                "user_id": join_text(ids, "_u", num_text(rng.integers(0, 3, size=m))),
                "event_name": pa.array(ev),
                "occurred_at": ts_strings(day, rng.integers(0, 86400, size=m)),
                "client_id": join_text(ids, "_c", num_text(rng.integers(0, 200, size=m))),
                "properties": pa.array(props, type=pa.string()),
            })
            pacsv.write_csv(table, stream, write_options=pacsv.WriteOptions(include_header=first))
            first = False
            written += m
    return written
