"""Benchmark: peak memory and time of ``cs-pipeline import`` on a large purchase log.

Writes a whitespace-separated, header-less purchase log of ``--rows`` rows (default 5,000,000; about
23,500 customers over 540 days, like the CDNOW log at scale) in a temporary directory, then imports it
in a child process with ``mappings/purchase_log.yaml`` (row ids, a derived customer table, one login per
active day); the child reports its own peak resident memory (``VmHWM`` of ``/proc/self/status``: the
high-water mark of its own address space, not inherited). Target: under 1 GB for 5,000,000 rows.

Target (issue 30): 5,000,000 rows in at most 15 s (at least 330,000 rows/s) and at most 1 GB peak RSS.

Prints one JSON object last: ``{"rows", "file_mb", "import_s", "rows_per_s", "peak_rss_mb", "cpu_s",
"landing_files", "load_avg_1m", "children_ru_maxrss_mb", "parent_ru_maxrss_mb"}``. ``cpu_s`` is the
import's user+system CPU time (all its threads) and ``load_avg_1m`` the machine's 1-minute load average
before and after the import: on a shared machine wall time follows the load, CPU time much less.
(``ru_maxrss`` of the children was the figure before; it also counts what the parent held when it started
them, which is why the log is written by a child too.)

    python benchmarks/imports.py [--rows 5000000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import sys
from pathlib import Path
from cs_pipeline.feeds.imports import load_mapping, run_import
mapping = load_mapping(Path(sys.argv[1]))
report = run_import(mapping, Path(sys.argv[2]), Path(sys.argv[3]))
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
import resource
usage = resource.getrusage(resource.RUSAGE_SELF)
print(report.files, int(hwm.split()[1]), usage.ru_utime + usage.ru_stime)
"""
#: Writes the log in its own process, so this one stays small (see ``main``).
WRITER = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from imports import write_log
write_log(Path(sys.argv[1]), int(sys.argv[2]))
"""


def write_log(path: Path, rows: int, seed: int = 1) -> None:
    """A purchase log: customer (5 digits), day YYYYMMDD, quantity, amount; sorted by day."""
    rng = np.random.default_rng(seed)
    customers = rng.integers(1, 23571, rows)
    days = pd.to_datetime("1997-01-01") + pd.to_timedelta(rng.integers(0, 540, rows), unit="D")
    quantity = rng.integers(1, 6, rows)
    frame = pd.DataFrame({"c": [f"{c:05d}" for c in customers], "d": days.strftime("%Y%m%d"), "q": quantity,
                          "a": np.round(rng.uniform(5, 80, rows) * quantity, 2)}).sort_values("d", kind="stable")
    frame.to_csv(path, sep=" ", header=False, index=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "in", Path(tmp) / "out"
        source.mkdir()
        # In a child: building 5,000,000 rows takes about 1 GB, and Linux carries a parent's peak resident
        # memory into the ru_maxrss of the children it starts afterwards (the import would seem to peak there).
        subprocess.run([sys.executable, "-c", WRITER, str(source / "purchase_log.txt"), str(args.rows),
                        str(Path(__file__).parent)], check=True)
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "mappings" / "purchase_log.yaml"), str(source),
                               str(out)], capture_output=True, text=True, check=True, cwd=ROOT)
        seconds = time.perf_counter() - started
        files, peak_kb, cpu = done.stdout.split()[-3:]
        print(json.dumps({"rows": args.rows, "file_mb": round((source / "purchase_log.txt").stat().st_size / 2**20, 1),
                          "import_s": round(seconds, 1), "rows_per_s": round(args.rows / seconds),
                          "peak_rss_mb": round(int(peak_kb) / 1024, 1), "cpu_s": round(float(cpu), 1),
                          "landing_files": int(files), "load_avg_1m": [round(load_before, 1), round(os.getloadavg()[0], 1)],
                          "children_ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
                          "parent_ru_maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


if __name__ == "__main__":
    main()
