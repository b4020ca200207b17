"""Benchmark: the ingest asset's load against a bare COPY of the same file.

Generates one activity_events CSV of ``--rows`` rows (default 5,000,000), loads it with the same
function the ``raw/activity_events`` asset runs (validation, quarantine, partition swap, audit), then
COPYs the same file into an empty table with the same column types. Prints one JSON object last:
``{"rows": ..., "ingest_rows_per_s": ..., "copy_rows_per_s": ..., "ratio": ..., "peak_rss_mb": ...}``.
Target: ratio >= 0.8, and peak memory flat in the file size.

    python benchmarks/ingest.py [--rows 5000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--workdir", default=None, help="where to write the file and the embedded database")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cs_bench_ingest_"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CS_PIPELINE_HOME", str(work / "home"))

    from cs_pipeline.ingest.loader import load_partition
    from cs_pipeline.ingest.sources import sources
    from cs_pipeline.resources import WarehouseResource
    from cs_pipeline.settings import Settings

    day = date(2025, 6, 14)
    path = work / f"activity_events_{day.isoformat()}.csv"
    t0 = time.perf_counter()
    if not path.exists():  # generated in a child process so that peak RSS below is the load's own
        import subprocess

        subprocess.run([sys.executable, "-c", "import sys; from datetime import date; from pathlib import Path; "
                        "from cs_pipeline.generate import write_bulk_events; "
                        "write_bulk_events(Path(sys.argv[1]), date.fromisoformat(sys.argv[2]), int(sys.argv[3]))",
                        str(path), day.isoformat(), str(args.rows)], check=True)
    print(f"generated {args.rows:,} rows ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f}s",
          file=sys.stderr)

    settings = Settings.from_env()
    warehouse = WarehouseResource(database_url=settings.database_url, home=str(settings.home))
    source = sources()["activity_events"]
    with warehouse.connect() as conn:
        load_partition(conn, source, path, day)  # warm-up (imports, first partition creation)
        t0 = time.perf_counter()
        report = load_partition(conn, source, path, day)
        ingest_s = time.perf_counter() - t0
        assert report.conserved and report.rows_loaded == args.rows, report

        conn.execute("DROP TABLE IF EXISTS public.bench_bare_copy")
        conn.execute(
            "CREATE TABLE public.bench_bare_copy (event_id text, supplier_id text, user_id text, event_name text,"
            " occurred_at timestamptz, client_id text, properties jsonb)"
        )
        conn.commit()
        t0 = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            with cur.copy("COPY public.bench_bare_copy FROM STDIN (FORMAT csv, HEADER true)") as copy:
                with open(path, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        copy.write(chunk)
        copy_s = time.perf_counter() - t0
        copied = conn.execute("SELECT count(*) FROM public.bench_bare_copy").fetchone()[0]
        conn.execute("DROP TABLE public.bench_bare_copy")
        conn.commit()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "rows": args.rows,
        "ingest_s": round(ingest_s, 3),
        "copy_s": round(copy_s, 3),
        "ingest_rows_per_s": round(args.rows / ingest_s),
        "copy_rows_per_s": round(copied / copy_s),
        "ratio": round((args.rows / ingest_s) / (copied / copy_s), 3),
        "peak_rss_mb": round(peak_mb, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
