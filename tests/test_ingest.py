"""Raw ingestion against the real (embedded) PostgreSQL: formats, idempotency, atomicity, quarantine."""

from __future__ import annotations

import csv
import gzip
import io
import json
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from cs_pipeline.ingest.landing import LandingFileError, landing_file_name
from cs_pipeline.ingest.loader import load_partition
from cs_pipeline.ingest.sources import sources

DAY = date(2025, 5, 1)
EVENTS = sources()["activity_events"]
COLUMNS = ["event_id", "supplier_id", "user_id", "event_name", "occurred_at", "client_id", "properties"]


def good_events(n: int = 5) -> list[dict]:
    return [
        {"event_id": f"e{i}", "supplier_id": f"s{i % 2}", "user_id": "u1", "event_name": "form_sent",
         "occurred_at": f"2025-05-01T1{i % 10}:00:00Z", "client_id": f"c{i}",
         "properties": json.dumps({"form_id": f"f{i}"})}
        for i in range(1, n + 1)
    ]


def write_csv(path: Path, rows: list[dict], columns: list[str] = COLUMNS, gz: bool = False) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_file(directory: Path, fmt: str, gz: bool, rows: list[dict], source: str = "activity_events",
               day: date = DAY) -> Path:
    path = directory / landing_file_name(source, day, fmt, gz)
    if fmt == "csv":
        return write_csv(path, rows, gz=gz)
    if fmt == "jsonl":
        lines = []
        for row in rows:
            obj = dict(row)
            if obj.get("properties"):
                obj["properties"] = json.loads(obj["properties"])
            lines.append(json.dumps(obj))
        data = ("\n".join(lines) + "\n").encode()
        path.write_bytes(gzip.compress(data) if gz else data)
        return path
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["occurred_at"] = pd.to_datetime(frame["occurred_at"], utc=True)
    frame.to_parquet(path)
    return path


def loaded(conn: psycopg.Connection, day: date = DAY) -> list[tuple]:
    return conn.execute(
        "SELECT event_id, supplier_id, user_id, event_name, occurred_at, client_id, properties, _source_file "
        "FROM raw.activity_events WHERE _partition_date = %s ORDER BY event_id", (day,)
    ).fetchall()


def rejected(conn: psycopg.Connection, day: date = DAY) -> list[tuple]:
    return conn.execute(
        "SELECT record_number, reason, raw_record FROM raw.rejected_rows "
        "WHERE source = 'activity_events' AND partition_date = %s ORDER BY record_number", (day,)
    ).fetchall()


@pytest.mark.parametrize("fmt, gz", [("csv", False), ("csv", True), ("jsonl", False), ("jsonl", True),
                                     ("parquet", False)])
def test_each_format_loads_the_same_rows(conn, clean_raw, tmp_path, fmt, gz):
    path = write_file(tmp_path, fmt, gz, good_events(5))
    report = load_partition(conn, EVENTS, path, DAY)
    rows = loaded(conn)
    assert report.rows_loaded == 5 and report.rows_rejected == 0 and report.conserved
    assert [r[0] for r in rows] == ["e1", "e2", "e3", "e4", "e5"]
    assert rows[0][4].isoformat() == "2025-05-01T11:00:00+00:00"
    assert rows[0][6] == {"form_id": "f1"}
    assert rows[0][7] == path.name
    assert report.distinct_suppliers == 2


def test_rerun_replaces_the_partition_without_duplicates(conn, clean_raw, tmp_path):
    path = write_file(tmp_path, "csv", False, good_events(4))
    load_partition(conn, EVENTS, path, DAY)
    first = loaded(conn)
    load_partition(conn, EVENTS, path, DAY)
    assert loaded(conn) == first
    # A corrected file for the same day replaces exactly that day, and leaves other days alone.
    other = write_file(tmp_path, "csv", False, [dict(good_events(1)[0], occurred_at="2025-05-02T09:00:00Z")],
                       day=date(2025, 5, 2))
    load_partition(conn, EVENTS, other, date(2025, 5, 2))
    write_csv(path, good_events(2))
    load_partition(conn, EVENTS, path, DAY)
    assert [r[0] for r in loaded(conn)] == ["e1", "e2"]
    assert [r[0] for r in loaded(conn, date(2025, 5, 2))] == ["e1"]
    audit = conn.execute("SELECT rows_loaded FROM ops.load_audit WHERE source = 'activity_events' "
                         "AND partition_date = %s", (DAY,)).fetchall()
    assert audit == [(2,)]


@pytest.mark.parametrize("row, reason", [
    ({"event_name": "teleported"}, "invalid_enum:event_name"),
    ({"supplier_id": ""}, "missing_required:supplier_id"),
    ({"supplier_id": "   "}, "missing_required:supplier_id"),
    ({"event_id": ""}, "missing_required:event_id"),
    ({"occurred_at": "yesterday"}, "invalid_timestamp:occurred_at"),
    ({"occurred_at": "2025-02-30T10:00:00Z"}, "invalid_timestamp:occurred_at"),
    ({"occurred_at": "2025-05-02T00:00:00Z"}, "outside_partition_day:occurred_at"),
    ({"occurred_at": "2025-04-30T23:59:59Z"}, "outside_partition_day:occurred_at"),
    ({"occurred_at": "2025-05-01T00:30:00+01:00"}, "outside_partition_day:occurred_at"),
    ({"properties": "{not json"}, "invalid_json:properties"),
    ({"properties": "[1, 2]"}, "invalid_json:properties"),
    ({"user_id": "bad\x00byte"}, "invalid_character:user_id"),
])
def test_each_rejection_reason(conn, clean_raw, tmp_path, row, reason):
    rows = good_events(3)
    rows[1].update(row)
    path = write_file(tmp_path, "csv", False, rows)
    report = load_partition(conn, EVENTS, path, DAY)
    assert report.rows_loaded == 2 and report.rows_rejected == 1 and report.conserved
    assert report.rejected_by_reason == {reason: 1}
    [(number, stored_reason, raw)] = rejected(conn)
    assert (number, stored_reason) == (2, reason)
    assert json.loads(raw)["event_id"] == (rows[1]["event_id"] or None)


def test_duplicates_and_unparseable_rows_are_quarantined_with_record_numbers(conn, clean_raw, tmp_path):
    text = (
        "event_id,supplier_id,user_id,event_name,occurred_at,client_id,properties\n"
        "e1,s1,u1,login,2025-05-01T10:00:00Z,,\n"
        "e2,s1,u1,login\n"                                   # too few fields
        'e3,s1,u1,message_sent,2025-05-01T10:00:00Z,"c1\nwith newline",\n'  # a quoted newline is data
        "e1,s2,u2,login,2025-05-01T11:00:00Z,,\n"            # duplicate of record 1
        "e4,s1,u1,login,2025-05-01T12:00:00Z,,,extra\n"      # too many fields
        "e5,s1,u1,login,2025-05-01T13:00:00Z,,\n"
    )
    path = tmp_path / landing_file_name("activity_events", DAY)
    path.write_text(text)
    report = load_partition(conn, EVENTS, path, DAY)
    assert report.records_in_file == 6 and report.rows_loaded == 3 and report.rows_rejected == 3
    assert [r[0] for r in loaded(conn)] == ["e1", "e3", "e5"]
    assert loaded(conn)[0][1] == "s1"  # the first occurrence of e1 wins
    assert [(n, reason) for n, reason, _ in rejected(conn)] == [
        (2, "unparseable_record"), (4, "duplicate_key:event_id"), (5, "unparseable_record")]


def test_conservation_on_a_messy_file(conn, clean_raw, tmp_path):
    rows = good_events(40)
    for i in range(0, 40, 3):
        rows[i]["event_name"] = "nope"
    for i in range(1, 40, 7):
        rows[i]["occurred_at"] = "2025-05-03T00:00:00Z"
    rows[5]["event_id"] = rows[4]["event_id"]
    path = write_file(tmp_path, "csv", False, rows)
    report = load_partition(conn, EVENTS, path, DAY)
    in_db = conn.execute("SELECT count(*) FROM raw.activity_events WHERE _partition_date = %s", (DAY,)).fetchone()[0]
    quarantined = len(rejected(conn))
    assert report.records_in_file == 40 == in_db + quarantined
    assert (report.rows_loaded, report.rows_rejected) == (in_db, quarantined)
    assert sum(report.rejected_by_reason.values()) == quarantined


def test_sql_and_odd_unicode_are_stored_verbatim(conn, clean_raw, tmp_path):
    nasty = "Robert'); DROP TABLE raw.suppliers;-- \u202e\U0001F492 ünïcødé \\N \"quoted\", comma"
    rows = good_events(2)
    rows[0]["user_id"] = nasty
    rows[0]["properties"] = json.dumps({"note": nasty})
    path = write_file(tmp_path, "csv", False, rows)
    load_partition(conn, EVENTS, path, DAY)
    row = loaded(conn)[0]
    assert row[2] == nasty and row[6] == {"note": nasty}
    assert conn.execute("SELECT to_regclass('raw.suppliers') IS NOT NULL").fetchone()[0]


def test_header_only_file_loads_zero_rows(conn, clean_raw, tmp_path):
    path = write_file(tmp_path, "csv", False, [])
    report = load_partition(conn, EVENTS, path, DAY)
    assert (report.records_in_file, report.rows_loaded, report.rows_rejected) == (0, 0, 0)
    assert loaded(conn) == []


@pytest.mark.parametrize("content, message", [
    (None, "file not found"),
    (b"", "no header row"),
    (b"event_id,supplier_id,event_name\ne1,s1,login\n", r"required column\(s\) missing: occurred_at"),
])
def test_bad_files_fail_and_change_nothing(conn, clean_raw, tmp_path, content, message):
    good = write_file(tmp_path, "csv", False, good_events(3))
    load_partition(conn, EVENTS, good, DAY)
    before = loaded(conn)
    bad = tmp_path / "bad" / landing_file_name("activity_events", DAY)
    bad.parent.mkdir()
    if content is not None:
        bad.write_bytes(content)
    with pytest.raises(LandingFileError, match=message) as err:
        load_partition(conn, EVENTS, bad, DAY)
    assert str(bad) in str(err.value)
    assert loaded(conn) == before


def test_truncated_gzip_fails_and_changes_nothing(conn, clean_raw, tmp_path):
    good = write_file(tmp_path, "csv", False, good_events(3))
    load_partition(conn, EVENTS, good, DAY)
    before = loaded(conn)
    broken = tmp_path / "broken" / landing_file_name("activity_events", DAY, gz=True)
    broken.parent.mkdir()
    data = gzip.compress(("\n".join(["event_id,supplier_id,user_id,event_name,occurred_at,client_id,properties"]
                                    + [f"x{i},s1,u1,login,2025-05-01T10:00:00Z,," for i in range(20000)])).encode())
    broken.write_bytes(data[: len(data) // 2])
    with pytest.raises(LandingFileError, match="unreadable"):
        load_partition(conn, EVENTS, broken, DAY)
    assert loaded(conn) == before


KILL_SCRIPT = """
import os, sys
from datetime import date
from pathlib import Path
from cs_pipeline.ingest.loader import load_partition
from cs_pipeline.ingest.sources import sources
from cs_pipeline.resources import WarehouseResource
w = WarehouseResource(database_url=os.environ.get("CS_PIPELINE_DATABASE_URL"), home=os.environ["CS_PIPELINE_HOME"])
with w.connect() as conn:
    load_partition(conn, sources()["activity_events"], Path(sys.argv[1]), date(2025, 5, 1))
"""


def test_a_load_killed_mid_copy_leaves_the_previous_contents(conn, clean_raw, tmp_path, warehouse):
    from cs_pipeline.generate import write_bulk_events

    small = write_file(tmp_path, "csv", False, good_events(3))
    load_partition(conn, EVENTS, small, DAY)
    before = loaded(conn)
    conn.rollback()  # end our read transaction: the load's TRUNCATE waits for readers
    big = tmp_path / "big" / landing_file_name("activity_events", DAY)
    big.parent.mkdir()
    write_bulk_events(big, DAY, 1_500_000)
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(big)])
    try:
        deadline = time.monotonic() + 60
        copying = False
        with warehouse.connect(autocommit=True) as watcher:
            while time.monotonic() < deadline and proc.poll() is None:
                n = watcher.execute("SELECT coalesce(max(tuples_processed), 0) FROM pg_stat_progress_copy").fetchone()[0]
                if n > 50_000:
                    copying = True
                    break
                time.sleep(0.05)
        assert copying, "the load never reached the COPY"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # The killed backend's transaction is rolled back: readers see exactly the previous load.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if conn.execute("SELECT count(*) FROM pg_stat_progress_copy").fetchone()[0] == 0:
            break
        conn.rollback()
        time.sleep(0.2)
    conn.rollback()
    assert loaded(conn) == before
    assert conn.execute("SELECT rows_loaded FROM ops.load_audit WHERE source = 'activity_events' "
                        "AND partition_date = %s", (DAY,)).fetchone() == (3,)


def test_suppliers_source_rules(conn, clean_raw, tmp_path):
    header = ["supplier_id", "business_name", "email", "vendor_category", "tier", "country", "signed_up_at",
              "onboarded_at", "status", "cancelled_at", "mrr", "currency"]
    base = {"supplier_id": "s1", "business_name": "Juniper Lane Photography", "email": "a@b.example",
            "vendor_category": "photographer", "tier": "starter", "country": "GB",
            "signed_up_at": "2025-04-01T10:00:00Z", "onboarded_at": "", "status": "active", "cancelled_at": "",
            "mrr": "19.00", "currency": "GBP"}
    rows = [base,
            dict(base, supplier_id="s2", vendor_category="astronaut"),
            dict(base, supplier_id="s3", mrr="-5"),
            dict(base, supplier_id="s4", mrr="NaN"),
            dict(base, supplier_id="s5", country="Britain"),
            dict(base, supplier_id="s6", signed_up_at="2025-05-09T10:00:00Z"),
            dict(base, supplier_id="s1", business_name="duplicate"),
            dict(base, supplier_id="s7", mrr=" 49.5 ", onboarded_at="2025-04-02")]
    path = tmp_path / landing_file_name("suppliers", DAY)
    write_csv(path, rows, columns=header)
    report = load_partition(conn, sources()["suppliers"], path, DAY)
    assert report.rejected_by_reason == {
        "invalid_enum:vendor_category": 1, "out_of_range:mrr": 1, "invalid_number:mrr": 1,
        "invalid_format:country": 1, "outside_partition_day:signed_up_at": 1, "duplicate_key:supplier_id": 1}
    got = conn.execute("SELECT supplier_id, mrr::text, onboarded_at FROM raw.suppliers ORDER BY 1").fetchall()
    assert [(g[0], g[1]) for g in got] == [("s1", "19.00"), ("s7", "49.5")]
    assert got[1][2].isoformat() == "2025-04-02T00:00:00+00:00"
