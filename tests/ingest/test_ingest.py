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
    # JSON that Python's json reads but PostgreSQL's jsonb refuses: rejected, never a failed COPY.
    ({"properties": '{"score": NaN}'}, "invalid_json:properties"),
    ({"properties": '{"score": -Infinity}'}, "invalid_json:properties"),
    ({"properties": '{"note": "nul \\u0000 here"}'}, "invalid_json:properties"),
    ({"properties": '{"note": "lone \\ud800 surrogate"}'}, "invalid_json:properties"),
    ({"properties": '{"note": "lone \\udc00 low surrogate"}'}, "invalid_json:properties"),
    ({"properties": '{"a": 1}{"b": 2}'}, "invalid_json:properties"),
    ({"properties": '{"a": "}'}, "invalid_json:properties"),
    ({"properties": '{"a": "nul\x00byte"}'}, "invalid_character:properties"),
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
from cs_pipeline.core.resources import WarehouseResource
w = WarehouseResource(database_url=os.environ.get("CS_PIPELINE_DATABASE_URL"), home=os.environ["CS_PIPELINE_HOME"])
with w.connect() as conn:
    load_partition(conn, sources()["activity_events"], Path(sys.argv[1]), date(2025, 5, 1))
"""


JOIN_SCRIPT = """
import os
from cs_pipeline.core.resources import WarehouseResource
WarehouseResource(database_url=os.environ.get("CS_PIPELINE_DATABASE_URL"), home=os.environ["CS_PIPELINE_HOME"]).endpoints()
"""


def test_a_load_killed_mid_copy_leaves_the_previous_contents(conn, clean_raw, tmp_path, warehouse):
    from cs_pipeline.feeds.generate import write_bulk_events

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
    if not warehouse.database_url:
        # The killed process never left the embedded server's list of holders; the next process to exit
        # cleanly drops it, so the server still stops when the last live process exits.
        handles = Path(warehouse.home) / "pgdata" / ".handle_pids.json"
        assert proc.pid in json.loads(handles.read_text())
        subprocess.run([sys.executable, "-c", JOIN_SCRIPT], check=True, timeout=120)
        assert proc.pid not in json.loads(handles.read_text())


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


def test_json_values_that_look_like_objects_only_when_joined_are_rejected(conn, clean_raw, tmp_path):
    # Joined with commas these three read as three objects; alone, the first two are not JSON.
    rows = good_events(4)
    rows[0]["properties"], rows[1]["properties"], rows[2]["properties"] = '{"a":"}', '{"}', "{}, {}"
    path = write_file(tmp_path, "csv", False, rows)
    report = load_partition(conn, EVENTS, path, DAY)
    assert report.rejected_by_reason == {"invalid_json:properties": 3}
    assert [r[0] for r in loaded(conn)] == ["e4"]


def test_valid_json_the_fast_parser_refuses_is_still_loaded(conn, clean_raw, tmp_path):
    rows = good_events(3)
    rows[0]["properties"] = '{"huge": 1e999, "pair": "\\ud83d\\ude00", "text": "NaN"}'
    rows[1]["properties"] = ' {"lead": "space",\n "newline": true} '
    path = write_file(tmp_path, "csv", False, rows)
    report = load_partition(conn, EVENTS, path, DAY)
    assert report.rows_rejected == 0
    got = {r[0]: r[6] for r in loaded(conn)}
    assert got["e1"]["pair"] == "\U0001F600" and got["e1"]["text"] == "NaN"
    assert got["e2"] == {"lead": "space", "newline": True}


def test_timestamps_are_parsed_once_and_kept_to_the_microsecond(conn, clean_raw, tmp_path):
    stamps = {
        "2025-05-01T10Z": "2025-05-01T10:00:00+00:00",  # hour only: ISO 8601 reduced precision
        "2025-05-01 10:15": "2025-05-01T10:15:00+00:00",  # no offset: UTC
        "2025-05-01T12:00:00.1234567Z": "2025-05-01T12:00:00.123457+00:00",  # rounded as PostgreSQL does
        "2025-05-01T14:00:00+0200": "2025-05-01T12:00:00+00:00",
        "2025-05-01": "2025-05-01T00:00:00+00:00",
        "2025-05-01T16:30:00.000001-01:00": "2025-05-01T17:30:00.000001+00:00",
    }
    rows = good_events(len(stamps))
    for row, stamp in zip(rows, stamps, strict=True):
        row["occurred_at"] = stamp
    path = write_file(tmp_path, "csv", False, rows)
    report = load_partition(conn, EVENTS, path, DAY)
    assert report.rows_rejected == 0
    assert [r[4].isoformat() for r in loaded(conn)] == list(stamps.values())


def test_support_tickets_and_billing_types_round_trip(conn, clean_raw, tmp_path):
    tickets = tmp_path / landing_file_name("support_tickets", DAY)
    write_csv(tickets, [
        {"ticket_id": "t1", "supplier_id": "s1", "opened_at": "2025-04-30T09:00:00Z", "resolved_at": "",
         "channel": "chat", "category": "billing", "priority": "high", "csat": " 4 ",
         "first_response_minutes": "12.50"},
        {"ticket_id": "t2", "supplier_id": "s1", "opened_at": "2025-05-01T09:00:00Z",
         "resolved_at": "2025-05-01T10:00:00Z", "channel": "email", "category": "other", "priority": "low",
         "csat": "", "first_response_minutes": "1.5e2"},
        {"ticket_id": "t3", "supplier_id": "s2", "opened_at": "2025-05-01T09:00:00Z", "csat": "99999999999",
         "first_response_minutes": "0"},
    ], columns=["ticket_id", "supplier_id", "opened_at", "resolved_at", "channel", "category", "priority", "csat",
                "first_response_minutes"])
    report = load_partition(conn, sources()["support_tickets"], tickets, DAY)
    assert report.rejected_by_reason == {"invalid_number:csat": 1}
    got = conn.execute("SELECT ticket_id, csat, first_response_minutes::text, resolved_at, _record_number "
                       "FROM raw.support_tickets ORDER BY 1").fetchall()
    assert [(g[0], g[1], g[2], g[4]) for g in got] == [("t1", 4, "12.50", 1), ("t2", None, "150", 2)]
    assert got[0][3] is None and got[1][3].isoformat() == "2025-05-01T10:00:00+00:00"


def test_arrow_parses_only_iso_shaped_timestamps():
    # parse_timestamps trusts Arrow's parser on its fast path, without the ISO_TIMESTAMP regex.
    import pyarrow as pa
    import pyarrow.compute as pc

    from cs_pipeline.ingest.validation import ISO_TIMESTAMP, parse_timestamps

    samples = ["2025-06-14T13:43:27Z", "2025-06-14 13:43:27Z", "2025-06-14T13:43:27+01:00", "2025-06-14T13:43+0100",
               "2025-06-14T13-05", "2025-06-14T13:43:27.123456789Z", "2025-06-14T13:43:27.1234567891Z",
               "20250614T134327Z", "2025-06-14T13:43:27 Z", " 2025-06-14T13:43:27Z", "2025-6-14T13:43:27Z",
               "2025-06-14T24:00:00Z", "+2025-06-14T13:43:27Z", "2025-06-14T13:43:27,5Z", "2025-06-14Z",
               "2025-06-14T13:43:27.Z", "2025-W24-6T13:00Z", "2025-165T13:00Z", "1677-09-21T00:12:43.145224192Z"]
    for text in samples:
        try:
            pc.cast(pa.array([text]), pa.timestamp("ns", tz="UTC"))
        except pa.ArrowInvalid:
            continue
        assert pc.match_substring_regex(pa.array([text]), ISO_TIMESTAMP)[0].as_py(), text
    parsed = parse_timestamps(pa.array(["2025-06-14T13", "2025-02-30T10:00Z", None, "2025-06-14T08:00z", "2025-06-14z"]))
    assert [p and p.isoformat() for p in parsed.to_pylist()] == [
        "2025-06-14T13:00:00+00:00", None, None, "2025-06-14T08:00:00+00:00", None]
