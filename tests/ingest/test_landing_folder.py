"""The landing folder cannot be turned against the pipeline (issue 31, items 3 and 4), against the real
embedded PostgreSQL and real Dagster runs: links, FIFOs and stray files are refused or ignored without
reading them, no file content reaches an error or Dagster metadata, and nesting is limited iteratively.
Each test failed on the code before the fix."""

from __future__ import annotations

import os
import signal
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from cs_pipeline.core.landing_contract import (
    LANDING_SOURCES,
    earliest_landing_day,
    landing_file_name,
    parse_landing_name,
    scan_landing_dir,
)
from cs_pipeline.definitions import build_definitions
from cs_pipeline.feeds.generate import GeneratorConfig, generate
from cs_pipeline.ingest.defs import ignored_for
from cs_pipeline.ingest.jsonb import MAX_JSON_DEPTH, json_deeper_than
from cs_pipeline.ingest.landing import LandingFileError, find_landing_file, open_records
from cs_pipeline.ingest.loader import load_partition
from cs_pipeline.ingest.validation import validate_batch
from tests.ingest.test_hostile import HEADER, assert_one_rejected, csv_line, jsonl_line, load_bytes
from tests.ingest.test_ingest import DAY, EVENTS, loaded, rejected

SECRET = "pw-Zq8!superuser-secret-4711"
PASSWD = "".join(f"user{i}:x:{1000 + i}:{1000 + i}:User {i}:/home/user{i}:/bin/bash\n" for i in range(26))
STRAY = "old export (copy)_1970-01-01.bak"


@pytest.fixture()
def outside(tmp_path: Path) -> Path:
    """Files outside the landing folder that a hostile user links to: a password file and a passwd copy."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret").write_text(SECRET + "\n")
    (folder / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n" + PASSWD)
    return folder


def run_raw(settings, landing: Path, source: str, day: str):
    defs = build_definitions(settings.model_copy(update={"landing_dir": landing}))
    job = defs.resolve_implicit_global_asset_job_def()
    return job.execute_in_process(partition_key=day, asset_selection=[dg.AssetKey(["raw", source])],
                                  instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)


def all_text(result) -> str:
    """Everything the run recorded: event messages, failure descriptions and metadata."""
    return "\n".join(repr(event) for event in result.all_events)


def test_symlink_to_a_secret_file_is_refused_and_the_secret_never_shown(settings, clean_raw, conn, tmp_path, outside):
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "suppliers_2025-03-01.csv").symlink_to(outside / "secret")
    result = run_raw(settings, landing, "suppliers", "2025-03-01")
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.user_failure_data
    problems = failure.metadata["problems"].value
    assert "suppliers_2025-03-01.csv" in problems and "symbolic link" in problems
    assert SECRET not in all_text(result) and "Zq8" not in all_text(result)
    assert conn.execute("SELECT count(*) FROM raw.rejected_rows").fetchone()[0] == 0


def test_jsonl_link_to_a_passwd_file_stores_nothing(clean_raw, conn, tmp_path, outside):
    link = tmp_path / landing_file_name("activity_events", DAY, "jsonl")
    link.symlink_to(outside / "passwd")
    with pytest.raises(LandingFileError, match="symbolic link") as err:
        load_partition(conn, EVENTS, link, DAY)
    assert link.name in str(err.value) and "root:x" not in str(err.value)
    assert rejected(conn) == [] and loaded(conn) == []


def test_csv_link_to_a_passwd_file_does_not_echo_it(clean_raw, conn, tmp_path, outside):
    link = tmp_path / landing_file_name("activity_events", DAY)
    link.symlink_to(outside / "passwd")
    with pytest.raises(LandingFileError, match="symbolic link") as err:
        find_landing_file(tmp_path, "activity_events", DAY)
    assert link.name in str(err.value) and "root:x" not in str(err.value)
    with pytest.raises(LandingFileError, match="symbolic link") as err:
        load_partition(conn, EVENTS, link, DAY)
    assert "root:x" not in str(err.value) and rejected(conn) == [] and loaded(conn) == []


def test_a_regular_file_s_content_is_not_quoted_in_the_error(clean_raw, conn, tmp_path):
    path = tmp_path / landing_file_name("activity_events", DAY)
    path.write_text(SECRET + "\n" + "root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(LandingFileError, match=r"required column\(s\) missing: event_id") as err:
        load_partition(conn, EVENTS, path, DAY)
    assert SECRET not in str(err.value) and "Zq8" not in str(err.value)


def test_a_fifo_is_refused_without_waiting_or_reading(clean_raw, conn, tmp_path):
    fifo = tmp_path / landing_file_name("activity_events", DAY)
    os.mkfifo(fifo)
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("blocked opening a FIFO"))
    signal.alarm(20)
    try:
        with pytest.raises(LandingFileError, match="FIFO") as err:
            find_landing_file(tmp_path, "activity_events", DAY)
        assert fifo.name in str(err.value)
        with pytest.raises(LandingFileError, match="FIFO"):
            load_partition(conn, EVENTS, fifo, DAY)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert rejected(conn) == [] and loaded(conn) == []


def nested(depth: int) -> str:
    """A JSON object whose value ``x`` nests ``depth - 1`` more levels (``depth`` in all)."""
    return '{"x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_properties_value_332_deep_rejects_only_its_record(clean_raw, conn, tmp_path, fmt):
    deep = nested(332)
    if fmt == "csv":
        data = HEADER + csv_line("e1") + csv_line("e2", properties=deep) + csv_line("e3")
    else:
        data = jsonl_line("e1") + jsonl_line("e2", properties={"x": [[]]}) + jsonl_line("e3")
        data = data.replace(b'{"x": [[]]}', deep.encode())
    report = load_bytes(conn, tmp_path, fmt, data)
    assert_one_rejected(conn, report, 2, "invalid_json:depth")


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_value_100000_deep_never_hits_the_recursion_limit(clean_raw, conn, tmp_path, fmt):
    deep = nested(100_000)
    if fmt == "csv":
        data = HEADER + csv_line("e1") + csv_line("e2", properties=deep) + csv_line("e3")
    else:
        data = jsonl_line("e1") + jsonl_line("e2", properties={"x": [[]]}) + jsonl_line("e3")
        data = data.replace(b'{"x": [[]]}', deep.encode())
    limit, depth, frame = sys.getrecursionlimit(), 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    sys.setrecursionlimit(depth + 150)  # far below the nesting: only an iterative check gets through
    try:
        path = tmp_path / landing_file_name("activity_events", DAY, fmt)
        path.write_bytes(data)
        reasons = []
        for batch in open_records(path, EVENTS):
            reasons += [r.reason for r in batch.parse_rejects]
            reasons += validate_batch(batch.table, batch.record_numbers, EVENTS, DAY).rejected_reasons
    finally:
        sys.setrecursionlimit(limit)
    assert reasons == ["invalid_json:depth"]
    report = load_partition(conn, EVENTS, path, DAY)
    assert_one_rejected(conn, report, 2, "invalid_json:depth")


def test_json_depth_is_counted_outside_strings_and_up_to_the_limit():
    assert not json_deeper_than(nested(MAX_JSON_DEPTH))
    assert json_deeper_than(nested(MAX_JSON_DEPTH + 1))
    assert json_deeper_than(nested(MAX_JSON_DEPTH + 1).encode())
    quoted = '{"x": "' + "[" * 500 + '\\"' + "{" * 500 + '"}'  # brackets inside a string do not nest
    assert not json_deeper_than(quoted)
    assert not json_deeper_than("[" * 10 + "]" * 10 + "[" * 60 + "]" * 60)  # siblings, not depth


def test_a_stray_file_never_moves_the_partition_start_and_is_listed_once(settings, clean_raw, conn, tmp_path):
    landing = tmp_path / "landing"
    generate(GeneratorConfig(suppliers=20, days=2, start=date(2025, 3, 1), seed=5, out=landing))
    (landing / STRAY).write_text(SECRET + "\n")
    (landing / "notes_1970-01-01.csv").write_text("x\n")  # not a source
    (landing / "suppliers_2025-02-30.csv").write_text("x\n")  # not a day
    (landing / "suppliers_1970-01-02.csv").symlink_to(landing / STRAY)  # not a regular file
    assert parse_landing_name(STRAY) is None
    assert earliest_landing_day(landing) == date(2025, 3, 1)
    scan = scan_landing_dir(landing)
    assert [path.name for path, _ in scan.refused] == ["suppliers_1970-01-02.csv"]
    assert STRAY in scan.ignored and "suppliers_2025-02-30.csv" in scan.ignored
    listed = [name for source in LANDING_SOURCES for name in ignored_for(scan.ignored, source)]
    assert sorted(listed) == sorted(scan.ignored)  # each ignored name listed by exactly one asset

    result = run_raw(settings, landing, "suppliers", "2025-03-01")
    assert result.success
    [mat] = result.asset_materializations_for_node("raw__suppliers")
    assert STRAY in mat.metadata["ignored_files"].value["names"]
    assert SECRET not in all_text(result)
    other = run_raw(settings, landing, "activity_events", "2025-03-01")
    [mat] = other.asset_materializations_for_node("raw__activity_events")
    assert "ignored_files" not in mat.metadata
