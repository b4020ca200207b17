"""Benchmark: the ingest asset's load against a bare COPY of the same file.

Generates one activity_events CSV of ``--rows`` rows (default 5,000,000), loads it with the same
function the ``raw/activity_events`` asset runs (validation, quarantine, binary COPY into the day's
partition, audit), then COPYs the same file as CSV into an empty table with the same column types.

Measurement protocol (this machine shares its 2 cores with noisy neighbours, so one pair of timings
is not enough): one untimed warm-up load, then ``--rounds`` rounds (default 3), each timing one load
and one bare COPY. Before every timed step the database is settled, untimed: ``VACUUM ANALYZE`` of
both tables (so autovacuum does not wake during the next step), ``CHECKPOINT`` and an OS ``sync``.
The figures are the medians over the rounds.

Then the same file with 10 % of its records broken (every tenth record: alternately cut short, so the
reader rejects it as ``unparseable_record``, and given an unknown event name, so validation rejects it)
is loaded once per round right after a load of the clean file, both settled the same way:
``broken_10pct_ratio`` is the median over the rounds of broken-file time / clean-file time of the same
round (paired, so a noisy neighbour skews one pair, not the ratio; target <= 2: rejections cost linear time).

Prints one JSON object last: ``{"rows", "rounds", "ingest_s", "copy_s", "ingest_rows_per_s",
"copy_rows_per_s", "ratio", "peak_rss_mb", "ingest_s_all", "copy_s_all", "broken_s",
"broken_10pct_ratio", "broken_s_all", "broken_ratio_all"}``. Targets: ratio >= 0.8, broken_10pct_ratio <= 2, and peak
memory flat in the file size.

    python benchmarks/ingest.py [--rows 5000000] [--rounds 3]

On the shared 2-core machine it was measured with ``--rows 1000000`` (see the README).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path



def write_broken_copy(clean: Path, target: Path) -> int:
    """Copy the CSV ``clean`` to ``target`` with every tenth record broken: alternately cut after its
    fourth field (``unparseable_record``) and given the event name ``not_an_event`` (``invalid_enum``).
    Returns the number of broken records."""
    broken = 0
    with open(clean, "rb") as src, open(target, "wb") as dst:
        dst.write(src.readline())
        for number, line in enumerate(src, start=1):
            if number % 10 == 0:
                fields = line.split(b",", 4)
                if (number // 10) % 2:
                    line = b",".join(fields[:4]) + b"\n"
                else:
                    line = b",".join([*fields[:3], b"not_an_event", fields[4]])
                broken += 1
            dst.write(line)
    return broken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="timed load + bare COPY pairs (medians are reported)")
    parser.add_argument("--workdir", default=None, help="where to write the file and the embedded database")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="cs_bench_ingest_"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("CS_PIPELINE_HOME", str(work / "home"))

    from cs_pipeline.ingest.loader import load_partition
    from cs_pipeline.ingest.sources import sources
    from cs_pipeline.core.resources import WarehouseResource
    from cs_pipeline.core.settings import Settings

    day = date(2025, 6, 14)
    path = work / f"activity_events_{day.isoformat()}.csv"
    t0 = time.perf_counter()
    if not path.exists():  # generated in a child process so that peak RSS below is the load's own
        import subprocess

        subprocess.run([sys.executable, "-c", "import sys; from datetime import date; from pathlib import Path; "
                        "from cs_pipeline.feeds.generate import write_bulk_events; "
                        "write_bulk_events(Path(sys.argv[1]), date.fromisoformat(sys.argv[2]), int(sys.argv[3]))",
                        str(path), day.isoformat(), str(args.rows)], check=True)
    print(f"generated {args.rows:,} rows ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f}s",
          file=sys.stderr)

    settings = Settings.from_env()
    warehouse = WarehouseResource(database_url=settings.database_url, home=str(settings.home))
    source = sources()["activity_events"]
    ingest_times: list[float] = []
    copy_times: list[float] = []
    broken_times: list[float] = []
    broken_ratios: list[float] = []
    with warehouse.connect() as conn:
        report = load_partition(conn, source, path, day)  # warm-up: imports, partition creation
        assert report.conserved and report.rows_loaded == args.rows, report
        conn.execute("DROP TABLE IF EXISTS public.bench_bare_copy")
        conn.execute(
            "CREATE TABLE public.bench_bare_copy (event_id text, supplier_id text, user_id text, event_name text,"
            " occurred_at timestamptz, client_id text, properties jsonb)"
        )
        conn.commit()

        def settle() -> None:
            conn.autocommit = True
            conn.execute("VACUUM ANALYZE raw.activity_events")
            conn.execute("VACUUM ANALYZE public.bench_bare_copy")
            conn.execute("CHECKPOINT")
            conn.autocommit = False
            os.sync()

        for round_no in range(1, args.rounds + 1):
            settle()
            t0 = time.perf_counter()
            report = load_partition(conn, source, path, day)
            ingest_times.append(time.perf_counter() - t0)
            assert report.conserved and report.rows_loaded == args.rows, report

            conn.execute("TRUNCATE public.bench_bare_copy")
            conn.commit()
            settle()
            t0 = time.perf_counter()
            with conn.transaction(), conn.cursor() as cur:
                with cur.copy("COPY public.bench_bare_copy FROM STDIN (FORMAT csv, HEADER true)") as copy:
                    with open(path, "rb") as fh:
                        while chunk := fh.read(1 << 20):
                            copy.write(chunk)
            copy_times.append(time.perf_counter() - t0)
            copied = conn.execute("SELECT count(*) FROM public.bench_bare_copy").fetchone()[0]
            assert copied == args.rows, copied
            conn.commit()
            print(f"round {round_no}: ingest {ingest_times[-1]:.2f}s, bare COPY {copy_times[-1]:.2f}s",
                  file=sys.stderr)
        broken_path = work / f"broken_activity_events_{day.isoformat()}.csv"
        broken = write_broken_copy(path, broken_path)
        for round_no in range(1, args.rounds + 1):  # paired: clean then broken, back to back
            settle()
            t0 = time.perf_counter()
            load_partition(conn, source, path, day)
            paired_clean = time.perf_counter() - t0
            settle()
            t0 = time.perf_counter()
            report = load_partition(conn, source, broken_path, day)
            broken_times.append(time.perf_counter() - t0)
            broken_ratios.append(broken_times[-1] / paired_clean)
            assert report.conserved and report.rows_rejected == broken, report
            print(f"round {round_no}: clean ingest {paired_clean:.2f}s, broken 10% ingest {broken_times[-1]:.2f}s",
                  file=sys.stderr)
        conn.execute("DROP TABLE public.bench_bare_copy")
        conn.commit()
    ingest_s, copy_s = statistics.median(ingest_times), statistics.median(copy_times)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result = {
        "rows": args.rows,
        "rounds": args.rounds,
        "ingest_s": round(ingest_s, 3),
        "copy_s": round(copy_s, 3),
        "ingest_rows_per_s": round(args.rows / ingest_s),
        "copy_rows_per_s": round(args.rows / copy_s),
        "ratio": round(copy_s / ingest_s, 3),
        "peak_rss_mb": round(peak_mb, 1),
        "ingest_s_all": [round(t, 3) for t in ingest_times],
        "copy_s_all": [round(t, 3) for t in copy_times],
        "broken_s": round(statistics.median(broken_times), 3),
        "broken_10pct_ratio": round(statistics.median(broken_ratios), 3),
        "broken_s_all": [round(t, 3) for t in broken_times],
        "broken_ratio_all": [round(r, 3) for r in broken_ratios],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
