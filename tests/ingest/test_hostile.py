"""Hostile landing files (issue 12): every bad record is quarantined on its own with a reason code and
the rest of the file loads, against the real embedded PostgreSQL. Each case failed the whole day before."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cs_pipeline.ingest.landing import landing_file_name, storable_text
from cs_pipeline.ingest.landing.csv_reader import interleave as _interleave
from cs_pipeline.ingest.loader import load_partition, mask_personal_data
from cs_pipeline.ingest.sources import sources
from tests.ingest.test_ingest import COLUMNS, DAY, EVENTS, good_events, loaded, rejected, write_csv


HEADER = ",".join(COLUMNS).encode() + b"\n"


def csv_line(event_id: str, **overrides: str) -> bytes:
    row = {"event_id": event_id, "supplier_id": "s1", "user_id": "u1", "event_name": "form_sent",
           "occurred_at": "2025-05-01T10:00:00Z", "client_id": "c1", "properties": ""}
    row.update(overrides)
    out = []
    for c in COLUMNS:
        value = row[c]
        if any(ch in value for ch in ',"\n'):
            value = '"' + value.replace('"', '""') + '"'
        out.append(value)
    return ",".join(out).encode() + b"\n"


def jsonl_line(event_id: str, **overrides) -> bytes:
    row = {"event_id": event_id, "supplier_id": "s1", "user_id": "u1", "event_name": "form_sent",
           "occurred_at": "2025-05-01T10:00:00Z", "client_id": "c1"}
    row.update(overrides)
    return json.dumps(row).encode() + b"\n"


def load_bytes(conn, tmp_path, fmt: str, data: bytes, source=EVENTS):
    path = tmp_path / landing_file_name(source.name, DAY, fmt)
    path.write_bytes(data)
    return load_partition(conn, source, path, DAY)


def assert_one_rejected(conn, report, number: int, reason: str, loaded_ids=("e1", "e3")):
    assert report.rejected_by_reason == {reason: 1}, report.rejected_by_reason
    assert (report.rows_loaded, report.rows_rejected) == (len(loaded_ids), 1) and report.conserved
    assert [r[0] for r in loaded(conn)] == list(loaded_ids)
    [(stored_number, stored_reason, raw)] = rejected(conn)
    assert (stored_number, stored_reason) == (number, reason)
    return raw


# --- JSON lines ----------------------------------------------------------------------------------


def test_jsonl_nested_100000_levels_is_rejected_as_depth(conn, clean_raw, tmp_path):
    deep = b'{"event_id": "e2", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    report = load_bytes(conn, tmp_path, "jsonl", jsonl_line("e1") + deep + jsonl_line("e3"))
    raw = assert_one_rejected(conn, report, 2, "invalid_json:depth")
    assert raw.startswith('{"event_id": "e2"')


def test_jsonl_lone_surrogate_in_text_is_rejected(conn, clean_raw, tmp_path):
    bad = b'{"event_id": "e2", "supplier_id": "s1", "user_id": "lone \\ud800", "event_name": "login", ' \
          b'"occurred_at": "2025-05-01T10:00:00Z"}\n'
    report = load_bytes(conn, tmp_path, "jsonl", jsonl_line("e1") + bad + jsonl_line("e3"))
    raw = assert_one_rejected(conn, report, 2, "invalid_json:surrogate")
    assert "\\ud800" in raw


def test_jsonl_lone_surrogate_in_properties_is_rejected(conn, clean_raw, tmp_path):
    bad = jsonl_line("e2").replace(b'"c1"}', b'"c1", "properties": {"note": "x\\udc00"}}')
    report = load_bytes(conn, tmp_path, "jsonl", jsonl_line("e1") + bad + jsonl_line("e3"))
    assert_one_rejected(conn, report, 2, "invalid_json:surrogate")


def test_jsonl_invalid_utf8_byte_is_rejected_and_stored_escaped(conn, clean_raw, tmp_path):
    bad = jsonl_line("e2", user_id="AAA").replace(b"AAA", b"A\xffA")
    report = load_bytes(conn, tmp_path, "jsonl", jsonl_line("e1") + bad + jsonl_line("e3"))
    raw = assert_one_rejected(conn, report, 2, "invalid_utf8")
    assert "A\\xffA" in raw


def test_jsonl_bom_keeps_the_first_record(conn, clean_raw, tmp_path):
    report = load_bytes(conn, tmp_path, "jsonl", b"\xef\xbb\xbf" + jsonl_line("e1") + jsonl_line("e2"))
    assert report.rows_loaded == 2 and report.rows_rejected == 0 and report.conserved
    assert [r[0] for r in loaded(conn)] == ["e1", "e2"]


def test_broken_first_jsonl_line_only_rejects_itself(conn, clean_raw, tmp_path):
    # A truncated first object (valid JSON, lacking required keys) and a line that is not JSON.
    for first, reason in ((b'{"event_id": "e2"}\n', "missing_required:supplier_id"),
                          (b'{"event_id": "e2", "supplier_id\n', "invalid_json:record")):
        report = load_bytes(conn, tmp_path, "jsonl", first + jsonl_line("e1") + jsonl_line("e3"))
        assert_one_rejected(conn, report, 1, reason)


def test_jsonl_number_too_large_in_properties_is_rejected(conn, clean_raw, tmp_path):
    bad = jsonl_line("e2").replace(b'"c1"}', b'"c1", "properties": {"a": 1e999999}}')
    report = load_bytes(conn, tmp_path, "jsonl", jsonl_line("e1") + bad + jsonl_line("e3"))
    assert_one_rejected(conn, report, 2, "out_of_range:properties")


# --- CSV -----------------------------------------------------------------------------------------


def test_csv_invalid_utf8_anywhere_rejects_only_that_record(conn, clean_raw, tmp_path):
    bad = csv_line("e2", user_id="AAA").replace(b"AAA", b"A\xed\xa0\x80A")  # an encoded lone surrogate
    report = load_bytes(conn, tmp_path, "csv", HEADER + csv_line("e1") + bad + csv_line("e3"))
    raw = assert_one_rejected(conn, report, 2, "invalid_utf8")
    assert "A\\xed\\xa0\\x80A" in raw


def test_csv_field_over_1_mib_loads_and_neighbours_keep_their_numbers(conn, clean_raw, tmp_path):
    big = "x" * (3 << 20)
    data = HEADER + csv_line("e1") + csv_line("e2", client_id=big) + b"e9,s1\n" + csv_line("e3")
    report = load_bytes(conn, tmp_path, "csv", data)
    assert report.rejected_by_reason == {"unparseable_record": 1} and report.conserved
    assert [r[0] for r in loaded(conn)] == ["e1", "e2", "e3"]
    assert loaded(conn)[1][5] == big
    assert [(n, reason) for n, reason, _ in rejected(conn)] == [(3, "unparseable_record")]


def test_nul_byte_in_an_unparseable_record_is_stored_escaped(conn, clean_raw, tmp_path):
    data = HEADER + csv_line("e1") + b"e2,s\x001\n" + csv_line("e3")
    report = load_bytes(conn, tmp_path, "csv", data)
    raw = assert_one_rejected(conn, report, 2, "unparseable_record")
    assert "s\\x001" in raw


def test_jsonl_nul_in_a_broken_line_is_stored_escaped(conn, clean_raw, tmp_path):
    data = jsonl_line("e1") + b'{"event_id": "e2\x00\n' + jsonl_line("e3")
    report = load_bytes(conn, tmp_path, "jsonl", data)
    raw = assert_one_rejected(conn, report, 2, "invalid_json:record")
    assert raw == '{"event_id": "e2\\x00'


def test_numeric_with_17000_decimal_places_is_out_of_range(conn, clean_raw, tmp_path):
    tickets = sources()["support_tickets"]
    header = b"ticket_id,supplier_id,opened_at,first_response_minutes\n"
    data = (header + b"t1,s1,2025-05-01T10:00:00Z,1.5\n" + b"t2,s1,2025-05-01T10:00:00Z,1." + b"5" * 17_000
            + b"\nt3,s1,2025-05-01T10:00:00Z,19.00\n")
    report = load_bytes(conn, tmp_path, "csv", data, source=tickets)
    assert report.rejected_by_reason == {"out_of_range:first_response_minutes": 1} and report.conserved
    rows = conn.execute("SELECT ticket_id, first_response_minutes FROM raw.support_tickets "
                        "WHERE _partition_date = %s ORDER BY ticket_id", (DAY,)).fetchall()
    assert rows == [("t1", Decimal("1.5")), ("t3", Decimal("19.00"))]


@pytest.mark.parametrize("properties, reason", [
    ('{"a": 1e999999}', "invalid_json:properties"), ('{"a": -1e-999999}', "invalid_json:properties"),
    ('{"a": 1e1001}', "invalid_json:properties"), ('{"a": 0.' + "1" * 17_000 + "}", "invalid_json:properties"),
    ('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}", "invalid_json:depth"),  # issue 31: deeper than 64
    ('{"k":' * 5_000 + "1" + "}" * 5_000, "invalid_json:depth"),
])
def test_json_in_csv_that_jsonb_refuses_is_rejected(conn, clean_raw, tmp_path, properties, reason):
    rows = good_events(3)
    rows[1]["properties"] = properties
    path = write_csv(tmp_path / landing_file_name("activity_events", DAY), rows)
    report = load_partition(conn, EVENTS, path, DAY)
    assert report.rejected_by_reason == {reason: 1} and report.conserved
    assert [r[0] for r in loaded(conn)] == ["e1", "e3"]


def test_json_numbers_jsonb_takes_still_load(conn, clean_raw, tmp_path):
    rows = good_events(2)
    rows[0]["properties"] = '{"a": 1e999, "b": 12345678901234567890123456789012345678901234567890, "c": 1.5}'
    path = write_csv(tmp_path / landing_file_name("activity_events", DAY), rows)
    report = load_partition(conn, EVENTS, path, DAY)
    assert report.rows_rejected == 0
    assert conn.execute("SELECT properties->>'c' FROM raw.activity_events WHERE event_id = 'e1'").fetchone() == ("1.5",)


# --- Parquet -------------------------------------------------------------------------------------


def test_parquet_struct_with_timestamp_and_decimal_loads(conn, clean_raw, tmp_path):
    props = pa.array([{"at": datetime(2025, 5, 1, 9, 30, tzinfo=timezone.utc), "amount": Decimal("19.50")}] * 2,
                     type=pa.struct([("at", pa.timestamp("us", tz="UTC")), ("amount", pa.decimal128(10, 2))]))
    table = pa.table({
        "event_id": ["e1", "e2"], "supplier_id": ["s1", "s1"], "event_name": ["login", "login"],
        "occurred_at": pa.array([datetime(2025, 5, 1, 10, tzinfo=timezone.utc)] * 2, pa.timestamp("us", tz="UTC")),
        "properties": props,
    })
    path = tmp_path / landing_file_name("activity_events", DAY, "parquet")
    pq.write_table(table, path)
    report = load_partition(conn, EVENTS, path, DAY)
    assert report.rows_loaded == 2 and report.conserved
    assert loaded(conn)[0][6] == {"at": "2025-05-01T09:30:00+00:00", "amount": "19.50"}


def test_parquet_duplicate_column_names(conn, clean_raw, tmp_path):
    ts = pa.array([datetime(2025, 5, 1, 10, tzinfo=timezone.utc)] * 3, pa.timestamp("us", tz="UTC"))
    table = pa.Table.from_arrays(
        [pa.array(["e1", "e2", "e3"]), pa.array(["s1", "s1", "s1"]), pa.array(["s1", "s9", "s1"]),
         pa.array(["login"] * 3), ts],
        names=["event_id", "supplier_id", "supplier_id", "event_name", "occurred_at"])
    path = tmp_path / landing_file_name("activity_events", DAY, "parquet")
    pq.write_table(table, path)
    report = load_partition(conn, EVENTS, path, DAY)
    raw = assert_one_rejected(conn, report, 2, "duplicate_column:supplier_id")
    assert json.loads(raw)[1:3] == [["supplier_id", "s1"], ["supplier_id", "s9"]]


# --- Timestamps, numbering, previews ---------------------------------------------------------------


def test_day_window_is_checked_after_rounding_to_microseconds(conn, clean_raw, tmp_path):
    rows = good_events(3)
    rows[1]["occurred_at"] = "2025-05-01T23:59:59.9999996Z"  # PostgreSQL stores 2025-05-02 00:00:00
    rows[2]["occurred_at"] = "2025-04-30T23:59:59.9999996Z"  # stored as 2025-05-01 00:00:00: inside
    path = write_csv(tmp_path / landing_file_name("activity_events", DAY), rows)
    report = load_partition(conn, EVENTS, path, DAY)
    assert report.rejected_by_reason == {"outside_partition_day:occurred_at": 1}
    stored = conn.execute("SELECT min(occurred_at), max(occurred_at) FROM raw.activity_events "
                          "WHERE _partition_date = %s", (DAY,)).fetchone()
    assert stored[0] == datetime(2025, 5, 1, tzinfo=timezone.utc)
    assert stored[1] < datetime(2025, 5, 2, tzinfo=timezone.utc)


def test_record_numbers_interleave_linearly():
    bad = np.array([2, 3, 7, 8, 20], dtype=np.int64)
    numbers = _interleave(0, 10, bad)
    expected = [n for n in range(1, 40) if n not in set(bad.tolist())][:10]
    assert numbers.tolist() == expected
    assert _interleave(5, 3, bad).tolist() == expected[5:8]


def test_many_unparseable_rows_keep_exact_numbers(conn, clean_raw, tmp_path):
    lines = [HEADER]
    for i in range(1, 3001):
        lines.append(b"x,y\n" if i % 3 == 0 else csv_line(f"e{i:05d}"))
    report = load_bytes(conn, tmp_path, "csv", b"".join(lines))
    assert report.rows_rejected == 1000 and report.rows_loaded == 2000 and report.conserved
    numbers = conn.execute("SELECT event_id, _record_number FROM raw.activity_events WHERE _partition_date = %s",
                           (DAY,)).fetchall()
    assert all(int(event_id[1:]) == n for event_id, n in numbers)


def test_supplier_preview_masks_personal_data(conn, clean_raw, tmp_path):
    suppliers = sources()["suppliers"]
    data = (b"supplier_id,business_name,email,signed_up_at\n"
            b"s1,Jane Doe Photography,jane.doe@example.com,2025-01-01T00:00:00Z\n")
    report = load_bytes(conn, tmp_path, "csv", data, source=suppliers)
    [row] = report.preview
    assert row["email"] == "***@example.com" and row["business_name"] == "***" and row["supplier_id"] == "s1"
    assert "jane" not in json.dumps(report.preview, default=str).lower()
    assert mask_personal_data([{"email": None}], suppliers) == [{"email": None}]


def test_storable_text_escapes_only_what_postgresql_cannot_hold():
    assert storable_text("plain ünï \\ text") == "plain ünï \\ text"
    assert storable_text("a\x00b") == "a\\x00b"
    assert storable_text(b"a\xffb") == "a\\xffb"
    assert storable_text("lone \ud800") == "lone \\ud800"
