"""Benchmark: what the point-in-time health stage (issue 28) costs: customer_health and
success_milestones of one day with 30 and with 180 days of history, and of the whole range at once
(a full refresh of the health stage), through Dagster.

On generated data of ``--suppliers`` (default 300) suppliers: ingest and build 30 days, time the next
day's health assets; continue to 180 days and time the next day's the same way; then time both assets
over every day in one run. Prints one JSON object last:
``{"daily_30d_s", "daily_180d_s", "ratio", "full_health_s", ...}``. Target: ratio <= 1.5.

    python benchmarks/point_in_time.py [--suppliers 300] [--repeat 3] [--workdir DIR]
    python benchmarks/point_in_time.py --workdir DIR --only-full   # the full refresh again on DIR's warehouse

Each figure is the median of ``--repeat`` timings. To compare with the code before issue 28 the same way:
``git worktree add /tmp/pit-old 1c48702`` and run this file with ``PYTHONPATH=/tmp/pit-old`` (it imports
that commit's module layout too).

Measured (issue 28, --suppliers 100, shared machine at load ~12 on 2 cores, so +-20 %): before (1c48702)
daily 0.67 s at 30 days, 1.36 s at 180 (ratio 2.04: the single index read the whole history), full 6.85 s;
after: 1.17 s and 1.27 s (ratio 1.09), full 7.73 s (+13 %, best of 2).

Then the full refresh cut (evaluate_milestones on integer day arrays, 0.88 -> 0.09 s of it; the seasonal
index grouped on integer codes, 0.33 -> 0.19 s; both profiled on this benchmark's warehouse), measured with
``--only-full --repeat 3`` alternating the old and the new code on their own warehouses, three rounds, at
load 8-11 on the 2 shared cores (single runs 19-50 s, so only the medians say anything): before issue 28
(1c48702) median 31.5 s of 9 runs, now 29.1 s of 9 runs (-7 %: within the noise, and inside the 10 %
bound). Unpaired runs do not compare at this load: the first full runs gave 27.0 s before issue 28 and
16.3 s after it (before the cut) minutes apart, and one round of the code before the cut (6ed78c5) 23.6 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suppliers", type=int, default=300)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--only-full", action="store_true",
                        help="reuse --workdir's built warehouse (a previous run's) and time only the full refresh")
    parser.add_argument("--repeat", type=int, default=3, help="timings of each figure; the median is reported")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cs_bench_pit_"))
    os.environ["CS_PIPELINE_HOME"] = str(work / "home")
    os.environ["CS_PIPELINE_LANDING_DIR"] = str(work / "landing")

    import dagster as dg

    from cs_pipeline.definitions import build_definitions
    from cs_pipeline.feeds.generate import GeneratorConfig, generate
    try:
        from cs_pipeline.core.settings import Settings
        from cs_pipeline.runtime.runner import run_job_over_range
    except ImportError:  # the layout before issue 28 (1c48702), to measure the "before" figure the same way
        from cs_pipeline.app.runner import run_job_over_range
        from cs_pipeline.settings import Settings

    start = date(2025, 1, 1)
    total_days = 182
    settings = Settings.from_env()
    if args.only_full:
        defs = build_definitions(settings)
        instance = dg.DagsterInstance.ephemeral()
        health = [dg.AssetKey(["marts", "customer_health"]), dg.AssetKey(["marts", "success_milestones"])]
        full = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            run_job_over_range(defs, "daily_customer_success", start, start + timedelta(days=181), instance,
                               days_per_run=total_days, asset_selection=health)
            full.append(time.perf_counter() - t)
        print(json.dumps({"suppliers": args.suppliers, "full_health_s": round(statistics.median(full), 2),
                          "full_health_runs_s": [round(t, 2) for t in full]}))
        return
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
    daily_30 = [timed(day30 + timedelta(days=1), day30 + timedelta(days=1)) for _ in range(args.repeat)]
    day180 = start + timedelta(days=180)
    build(day30 + timedelta(days=2), day180 + timedelta(days=1))
    daily_180 = [timed(day180 + timedelta(days=1), day180 + timedelta(days=1)) for _ in range(args.repeat)]
    full = [timed(start, day180 + timedelta(days=1)) for _ in range(args.repeat)]
    print(json.dumps({
        "suppliers": args.suppliers,
        "daily_30d_s": round(statistics.median(daily_30), 2),
        "daily_180d_s": round(statistics.median(daily_180), 2),
        "ratio": round(statistics.median(daily_180) / statistics.median(daily_30), 3),
        "full_health_s": round(statistics.median(full), 2),
        "full_health_runs_s": [round(t, 2) for t in full],
    }))


if __name__ == "__main__":
    main()
