"""Benchmark: what the point-in-time health stage (issue 28) costs: customer_health and
success_milestones of one day with 30 and with 180 days of history, and of the whole range at once
(a full refresh of the health stage), through Dagster.

On generated data of ``--suppliers`` (default 300) suppliers: ingest and build 30 days, time the next
day's health assets; continue to 180 days and time the next day's the same way; then time both assets
over every day in one run. Prints one JSON object last:
``{"daily_30d_s", "daily_180d_s", "ratio", "full_health_s", ...}``. Target: ratio <= 1.5.

    python benchmarks/point_in_time.py [--suppliers 300]

Measured (issue 28, --suppliers 100, shared machine at load ~12 on 2 cores, so +-20 %): before (1c48702)
daily 0.67 s at 30 days, 1.36 s at 180 (ratio 2.04: the single index read the whole history), full 6.85 s;
after: 1.17 s and 1.27 s (ratio 1.09), full 7.73 s.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suppliers", type=int, default=300)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cs_bench_pit_"))
    os.environ["CS_PIPELINE_HOME"] = str(work / "home")
    os.environ["CS_PIPELINE_LANDING_DIR"] = str(work / "landing")

    import dagster as dg

    from cs_pipeline.runtime.runner import run_job_over_range
    from cs_pipeline.definitions import build_definitions
    from cs_pipeline.feeds.generate import GeneratorConfig, generate
    from cs_pipeline.core.settings import Settings

    start = date(2025, 1, 1)
    total_days = 182
    settings = Settings.from_env()
    generate(GeneratorConfig(suppliers=args.suppliers, days=total_days, start=start, seed=1, out=settings.landing_dir))
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    health = [dg.AssetKey(["marts", "customer_health"]), dg.AssetKey(["marts", "success_milestones"])]

    def build(first: date, last: date) -> None:
        run_job_over_range(defs, "daily_customer_success", first, last, instance, days_per_run=62)

    def timed(first: date, last: date) -> float:
        t = time.perf_counter()
        run_job_over_range(defs, "daily_customer_success", first, last, instance, days_per_run=total_days,
                           asset_selection=health)
        return time.perf_counter() - t

    day30 = start + timedelta(days=29)
    build(start, day30 + timedelta(days=1))
    daily_30 = min(timed(day30 + timedelta(days=1), day30 + timedelta(days=1)) for _ in range(3))
    day180 = start + timedelta(days=180)
    build(day30 + timedelta(days=2), day180 + timedelta(days=1))
    daily_180 = min(timed(day180 + timedelta(days=1), day180 + timedelta(days=1)) for _ in range(3))
    full = min(timed(start, day180 + timedelta(days=1)) for _ in range(2))
    print(json.dumps({
        "suppliers": args.suppliers,
        "daily_30d_s": round(daily_30, 2),
        "daily_180d_s": round(daily_180, 2),
        "ratio": round(daily_180 / daily_30, 3),
        "full_health_s": round(full, 2),
    }))


if __name__ == "__main__":
    main()
