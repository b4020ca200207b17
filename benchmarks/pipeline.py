"""Benchmark: does a daily run of the dbt assets cost the same with 30 and with 180 days of history?

On generated data of ``--suppliers`` (default 2,000) suppliers: ingest 30 days, build the marts, then
time one daily partition's run of the dbt assets (through Dagster); continue to 180 days and time the
next day's run the same way; then time a re-run of the day 30 days before the newest (it rebuilds those
30 later days too: issue 15); finally time a full refresh build of all 180+ days. Prints one JSON object
last: ``{"daily_30d_s", "daily_180d_s", "ratio", "rerun_30_days_back_s", "full_build_s", ...}``.
Target: ratio <= 1.5.

    python benchmarks/pipeline.py [--suppliers 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suppliers", type=int, default=2000)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cs_bench_pipeline_"))
    os.environ["CS_PIPELINE_HOME"] = str(work / "home")
    os.environ["CS_PIPELINE_LANDING_DIR"] = str(work / "landing")

    import dagster as dg

    from cs_pipeline.definitions import build_definitions
    from cs_pipeline.feeds.generate import GeneratorConfig, generate
    from cs_pipeline.core.paths import DBT_PROJECT_DIR
    from cs_pipeline.core.settings import Settings
    from cs_pipeline.runtime.runner import run_job_over_range
    from cs_pipeline.transform.dbt import dbt_executable
    from cs_pipeline.core.window import DayWindow
    from cs_pipeline.transform.dbt import dbt_env
    from cs_pipeline.core.warehouse import resolve_endpoints

    start = date(2025, 1, 1)
    total_days = 182
    settings = Settings.from_env()
    t0 = time.perf_counter()
    generate(GeneratorConfig(suppliers=args.suppliers, days=total_days, start=start, seed=1,
                             out=settings.landing_dir))
    print(f"generated {total_days} days in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    graph = defs.resolve_asset_graph()
    dbt_keys = [k for k in graph.get_all_asset_keys() if "dbt" in graph.get(k).kinds]
    job = defs.resolve_implicit_global_asset_job_def()

    def ingest(first: date, last: date) -> None:
        run_job_over_range(defs, "daily_customer_success", first, last, instance, days_per_run=62)

    def timed_daily(day: date) -> float:
        ingest_job = defs.resolve_implicit_global_asset_job_def()
        ingest_job.execute_in_process(partition_key=day.isoformat(), instance=instance,
                                      asset_selection=[k for k in graph.get_all_asset_keys() if k.path[0] == "raw"])
        t = time.perf_counter()
        result = job.execute_in_process(partition_key=day.isoformat(), instance=instance, asset_selection=dbt_keys)
        elapsed = time.perf_counter() - t
        assert result.success
        return elapsed

    day30 = start + timedelta(days=29)
    ingest(start, day30)
    daily_30 = timed_daily(day30 + timedelta(days=1))
    day180 = start + timedelta(days=180)
    ingest(day30 + timedelta(days=2), day180)
    daily_180 = timed_daily(day180 + timedelta(days=1))
    rerun_30_back = timed_daily(day180 + timedelta(days=1) - timedelta(days=30))

    endpoints = resolve_endpoints(settings)
    env = {**os.environ, **dbt_env(endpoints.warehouse)}
    t = time.perf_counter()
    subprocess.run([dbt_executable(), "build", "--full-refresh", *DayWindow(start, day180 + timedelta(days=1)).dbt_vars_arg(),
                    "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)],
                   env=env, check=True, capture_output=True)
    full_build = time.perf_counter() - t
    print(json.dumps({
        "suppliers": args.suppliers,
        "daily_30d_s": round(daily_30, 2),
        "daily_180d_s": round(daily_180, 2),
        "ratio": round(daily_180 / daily_30, 3),
        "rerun_30_days_back_s": round(rerun_30_back, 2),
        "full_build_s": round(full_build, 2),
    }))


if __name__ == "__main__":
    main()
