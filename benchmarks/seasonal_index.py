"""Benchmark: the cost of the point-in-time seasonal index (issue 28) without the database: one index
per scored day (``point_in_time_index``) for a daily run (1 day) and a full refresh (365 days), next to
the single index a run used before (``seasonal_index_from_sums`` of monthly sums). Synthetic daily
sums: ``--categories`` vendor categories over three years. Prints one JSON object last:
``{"single_index_s", "daily_1_day_s", "full_365_days_s"}`` (best of 5, 2 for the full refresh).

    python benchmarks/seasonal_index.py [--categories 12]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date, timedelta

import numpy as np
import pandas as pd

from cs_pipeline.health.scorecard import load_scorecard
from cs_pipeline.health.scoring import seasonal_index_from_sums
from cs_pipeline.health.seasonal import point_in_time_index


def best(f, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categories", type=int, default=12)
    args = parser.parse_args()
    card = load_scorecard("ws168")
    metrics = ["client_activity_rate"]
    rng = np.random.default_rng(0)
    start, n = date(2023, 1, 1), 365 * 3
    daily = pd.DataFrame([(f"c{c}", start + timedelta(days=d)) for d in range(n) for c in range(args.categories)],
                         columns=["vendor_category", "as_of_date"])
    daily["client_activity_rate__count"] = rng.integers(500, 1500, len(daily))
    daily["client_activity_rate__sum"] = daily["client_activity_rate__count"] * rng.uniform(0.4, 0.9, len(daily))
    monthly = daily.assign(month=pd.to_datetime(daily["as_of_date"]).dt.month).groupby(
        ["vendor_category", "month"], as_index=False)[["client_activity_rate__sum", "client_activity_rate__count"]].sum()
    last = start + timedelta(days=n - 1)
    year = [last - timedelta(days=i) for i in range(365)]
    print(json.dumps({
        "categories": args.categories,
        "single_index_s": round(best(lambda: seasonal_index_from_sums(monthly, metrics, card.seasonality), 5), 4),
        "daily_1_day_s": round(best(lambda: point_in_time_index(daily, [last], metrics, card.seasonality), 5), 4),
        "full_365_days_s": round(best(lambda: point_in_time_index(daily, year, metrics, card.seasonality), 2), 3),
    }))


if __name__ == "__main__":
    main()
