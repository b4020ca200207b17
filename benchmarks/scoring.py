"""Benchmark: score 1,000,000 supplier rows in process with the default (WS-168) scorecard.

Builds a realistic engagement frame (the columns of marts.supplier_engagement_daily the scorecard
reads, with nulls where metrics have no data), learns a seasonal index from it, then times
``score_suppliers``. Prints one JSON object last: ``{"rows", "seconds", "rows_per_s", "peak_rss_mb"}``.
Target: >= 500,000 rows/s and < 2 GB peak (the specification claims 50 ms per supplier).

    python benchmarks/scoring.py [--rows 1000000] [--scorecard ws168]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from datetime import date, timedelta

import numpy as np
import pandas as pd

from cs_pipeline.health.scorecard import load_scorecard
from cs_pipeline.health.scoring import score_suppliers, seasonal_index
from cs_pipeline.ingest.sources import TIERS, VENDOR_CATEGORIES


def engagement_frame(rows: int, seed: int = 1) -> pd.DataFrame:
    """``rows`` supplier-days spread over 100 days, with realistic ranges and missing metrics."""
    rng = np.random.default_rng(seed)
    days = np.array([date(2025, 1, 1) + timedelta(days=int(d)) for d in range(100)])
    frame = pd.DataFrame({
        "supplier_id": pd.array([f"sup_{i % 200_000:06d}" for i in range(rows)], dtype=object),
        "as_of_date": days[rng.integers(0, len(days), rows)],
        "vendor_category": np.array(VENDOR_CATEGORIES, dtype=object)[rng.integers(0, len(VENDOR_CATEGORIES), rows)],
        "tier": np.array(TIERS, dtype=object)[rng.integers(0, len(TIERS), rows)],
        "lifecycle_stage": np.array(["onboarding", "active", "paused"], dtype=object)[rng.choice(3, rows, p=[0.1, 0.85, 0.05])],
        "days_since_last_login": np.where(rng.random(rows) < 0.05, np.nan, rng.exponential(6, rows).round()),
        "days_since_signup": rng.integers(0, 900, rows).astype(float),
        "adoption_breadth": rng.integers(0, 7, rows) / 6,
        "client_activity_rate": np.where(rng.random(rows) < 0.1, np.nan, rng.beta(5, 2, rows)),
        "form_completion_rate": np.where(rng.random(rows) < 0.3, np.nan, rng.beta(4, 2, rows)),
        "journey_completion_rate": np.where(rng.random(rows) < 0.4, np.nan, rng.beta(4, 2, rows)),
        "active_days_30d": rng.integers(0, 31, rows),
        "stickiness": rng.beta(2, 5, rows),
        "tickets_opened_30d": rng.poisson(0.5, rows),
        "csat_30d": np.where(rng.random(rows) < 0.7, np.nan, rng.uniform(1, 5, rows)),
        "urgent_open_tickets": rng.poisson(0.05, rows),
        "failed_invoices_30d": rng.poisson(0.05, rows),
    })
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--scorecard", default="ws168")
    args = parser.parse_args()
    scorecard = load_scorecard(args.scorecard)
    frame = engagement_frame(args.rows)
    seasonal = seasonal_index(frame, ["client_activity_rate"], scorecard.seasonality)
    score_suppliers(frame.head(1000), scorecard, seasonal=seasonal)  # warm-up
    t = time.perf_counter()
    out = score_suppliers(frame, scorecard, seasonal=seasonal)
    seconds = time.perf_counter() - t
    assert len(out) == args.rows and out["health_score"].notna().mean() > 0.9
    print(json.dumps({
        "rows": args.rows,
        "scorecard": scorecard.version,
        "seconds": round(seconds, 3),
        "rows_per_s": round(args.rows / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
