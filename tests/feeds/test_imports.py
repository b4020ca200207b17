"""Import mappings on a team's own files (issue 17): any table layout, derived tables, row ids, earliest /
latest joins; the DuckDB engine (issue 30) row for row against the pandas engine's outputs. Pure: files in a
temporary directory, no database."""

from __future__ import annotations

import gzip
import shutil
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from cs_pipeline.core.paths import PROJECT_ROOT
from cs_pipeline.feeds.imports import MappingError, TableSpec, load_mapping, read_table, run_import
from tests.feeds.landing_digest import digest

DATA = PROJECT_ROOT / "tests" / "data"
PURCHASES = PROJECT_ROOT / "mappings" / "purchase_log.yaml"
EXPECTED = Path(__file__).parent / "expected"


def _read(spec: TableSpec, directory: Path) -> pd.DataFrame:
    return pd.concat(list(read_table(spec, directory, chunk_rows=2)), ignore_index=True)


def test_reads_whitespace_headerless_gzip_semicolon_jsonl_and_parquet(tmp_path):
    (tmp_path / "log.txt").write_text("00001 19970101  1   11.77\n00002  19970102\t2 17.00\n00001 19970103 1 5\n")
    spec = TableSpec(file="log.txt", delimiter="whitespace", header=False, columns=["c", "d", "q", "a"])
    frame = _read(spec, tmp_path)
    assert frame.to_dict("records")[1] == {"c": "00002", "d": "19970102", "q": "2", "a": "17.00"}  # ids keep zeros
    with open(tmp_path / "log.txt", "rb") as src, gzip.open(tmp_path / "log.txt.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert _read(spec.model_copy(update={"file": "log.txt.gz"}), tmp_path).equals(frame)
    (tmp_path / "semi.csv").write_text("exported by tool\nid;name\n1;Ann\n2;\n")
    semi = _read(TableSpec(file="semi.csv", delimiter=";", skip_rows=1), tmp_path)
    assert semi["name"].tolist()[0] == "Ann" and pd.isna(semi["name"].tolist()[1])
    (tmp_path / "t.jsonl").write_text('{"id": 1, "v": 2.5}\n{"id": 2, "v": null}\n{"id": 3, "v": 4}\n')
    lines = _read(TableSpec(file="t.jsonl"), tmp_path)
    assert lines["id"].tolist() == ["1", "2", "3"] and pd.isna(lines["v"][1])
    pd.DataFrame({"id": [1, 2, 3], "when": ["a", "b", None]}).to_parquet(tmp_path / "t.parquet")
    parquet = _read(TableSpec(file="t.parquet"), tmp_path)
    assert parquet["id"].tolist() == ["1", "2", "3"] and pd.isna(parquet["when"][2])
    with pytest.raises(ValueError, match="header: false needs columns"):
        TableSpec(file="x.txt", header=False)


def test_purchase_log_derives_customers_gives_stable_row_ids_and_logins_with_users(tmp_path):
    mapping = load_mapping(PURCHASES)
    assert mapping.start is None  # the days come from the data
    report = run_import(mapping, DATA, tmp_path / "a", chunk_rows=25)  # several chunks
    assert (report.first_day, report.last_day) == (date(1997, 1, 1), date(1997, 1, 21))
    assert report.files == 21 * 4 and not report.dropped and not report.unmapped
    log = pd.read_csv(DATA / "purchase_log.txt", sep=r"\s+", header=None, names=["c", "d", "q", "a"], dtype=str)
    assert log.duplicated().any()  # the example has repeated lines
    billing = pd.concat(pd.read_csv(p, dtype=str) for p in sorted((tmp_path / "a").glob("billing_events_*.csv")))
    assert len(billing) == len(log) and billing["billing_event_id"].is_unique  # repeated lines: distinct ids
    again = run_import(mapping, DATA, tmp_path / "b", chunk_rows=1000)  # one chunk: same ids, same files
    assert again.rows == report.rows
    for path in (tmp_path / "a").iterdir():
        assert path.read_text() == (tmp_path / "b" / path.name).read_text(), path.name
    # Customers derived from purchases: one row each, signed up at the first purchase, present from then.
    last = pd.read_csv(tmp_path / "a" / "suppliers_1997-01-21.csv", dtype=str)
    assert sorted(last["supplier_id"]) == sorted(log["c"].unique())
    first_purchase = log.groupby("c")["d"].min()
    for row in last.itertuples():
        assert row.signed_up_at == f"{first_purchase[row.supplier_id][:4]}-{first_purchase[row.supplier_id][4:6]}-" \
                                   f"{first_purchase[row.supplier_id][6:]}T09:00:00Z"
    day1 = pd.read_csv(tmp_path / "a" / "suppliers_1997-01-01.csv", dtype=str)
    assert set(day1["supplier_id"]) == set(log.loc[log["d"] == "19970101", "c"])
    # One login per customer and active day, carrying a user id.
    events = pd.concat(pd.read_csv(p, dtype=str) for p in sorted((tmp_path / "a").glob("activity_events_*.csv")))
    logins = events.loc[events["event_name"] == "login"]
    assert len(logins) == len(log[["c", "d"]].drop_duplicates()) and logins["user_id"].notna().all()


def _write_mapping(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(body)
    return path


def _orders(tmp_path: Path) -> Path:
    """Orders and plans tables with a mapping that groups orders per account and joins the earliest plan."""
    (tmp_path / "orders.csv").write_text(
        "order_id,account,day,amount,plan\n"
        "o1,A,2024-03-02,10,Pro\n" "o2,A,2024-03-01,5,Basic\n" "o3,B,2024-03-02,7,Basic\n" "o4,A,2024-03-02,2.5,Pro\n")
    (tmp_path / "plans.csv").write_text("account,plan_tier,since\nA,Pro,2024-02-01\nA,Basic,2024-01-01\nB,Pro,2024-01-05\n")
    return _write_mapping(tmp_path, """
name: t
tables: {orders: {file: orders.csv}, plans: {file: plans.csv}}
sources:
  suppliers:
    - from: orders
      group_by: [account]
      present_from: day
      joins: [{table: plans, key: account, columns: [plan_tier], earliest_by: since}]
      columns:
        supplier_id: {column: account}
        business_name: {column: order_id, aggregate: last}
        signed_up_at: {column: day, format: "%Y-%m-%d", aggregate: min}
        onboarded_at: {column: day, format: "%Y-%m-%d", aggregate: max}
        mrr: {column: amount, aggregate: sum}
        email: {column: order_id, aggregate: count}
        tier: {column: plan_tier, value_map: {Pro: professional, Basic: starter}}
  billing_events:
    - from: orders
      day_from: day
      group_by: [account, day]
      columns:
        billing_event_id: {column: order_id, aggregate: first}
        supplier_id: {column: account}
        occurred_at: {column: day, format: "%Y-%m-%d"}
        event_type: {constant: invoice_paid}
        amount: {column: amount, aggregate: max}
""")


def test_group_by_aggregates_and_earliest_by_join(tmp_path):
    path = _orders(tmp_path)
    report = run_import(load_mapping(path), tmp_path, tmp_path / "out", chunk_rows=1)  # partial aggregates combine
    assert (report.first_day, report.last_day) == (date(2024, 3, 1), date(2024, 3, 2))
    suppliers = pd.read_csv(tmp_path / "out" / "suppliers_2024-03-02.csv", dtype=str).set_index("supplier_id")
    assert suppliers.loc["A", "business_name"] == "o4" and suppliers.loc["A", "email"] == "3"
    assert suppliers.loc["A", "signed_up_at"] == "2024-03-01T00:00:00Z"
    assert suppliers.loc["A", "onboarded_at"] == "2024-03-02T00:00:00Z"
    assert float(suppliers.loc["A", "mrr"]) == 17.5
    assert suppliers.loc["A", "tier"] == "starter"  # earliest_by: the plan since 2024-01-01
    assert list(pd.read_csv(tmp_path / "out" / "suppliers_2024-03-01.csv", dtype=str)["supplier_id"]) == ["A"]
    billing = pd.read_csv(tmp_path / "out" / "billing_events_2024-03-02.csv", dtype=str).set_index("supplier_id")
    assert billing.loc["A", "billing_event_id"] == "o1" and billing.loc["A", "amount"] == "10"
    latest = path.read_text().replace("earliest_by", "latest_by")
    run_import(load_mapping(_write_mapping(tmp_path, latest)), tmp_path, tmp_path / "out2")
    assert pd.read_csv(tmp_path / "out2" / "suppliers_2024-03-02.csv", dtype=str).set_index(
        "supplier_id").loc["A", "tier"] == "professional"


def test_days_outside_the_mapping_are_dropped_while_reading_and_bad_mappings_are_named(tmp_path):
    mapping = load_mapping(PURCHASES).model_copy(update={"start": date(1997, 1, 10), "end": date(1997, 1, 12)})
    report = run_import(mapping, DATA, tmp_path, chunk_rows=10)
    log = pd.read_csv(DATA / "purchase_log.txt", sep=r"\s+", header=None, names=["c", "d", "q", "a"], dtype=str)
    inside = log["d"].between("19970110", "19970112")
    assert report.rows["billing_events"] == int(inside.sum())
    assert report.dropped["billing_events: outside 1997-01-10..1997-01-12"] == int((~inside).sum())
    assert sorted(p.name for p in tmp_path.glob("suppliers_*")) == [f"suppliers_1997-01-{d}.csv" for d in (10, 11, 12)]
    bad = _write_mapping(tmp_path, "name: x\ntables: {t: {file: a.csv}}\nsources:\n  suppliers:\n"
                                   "    - from: t\n      columns: {supplier_id: {column: a, aggregate: min}}\n")
    with pytest.raises(MappingError, match="aggregate needs group_by"):
        load_mapping(bad)
    # An empty json_of is refused when the mapping loads, not later as invalid SQL in the transform.
    empty = _write_mapping(tmp_path, "name: x\ntables: {t: {file: a.csv}}\nsources:\n  activity_events:\n"
                                     "    - from: t\n      columns: {event_id: {row_id: true}, supplier_id: {column: a}, "
                                     "properties: {json_of: []}}\n")
    with pytest.raises(MappingError, match=r"json_of lists no column: name the columns .*constant: '\{\}'"):
        load_mapping(empty)


@pytest.mark.parametrize("case", ["purchase_log", "own_product", "orders_earliest", "orders_latest"])
def test_outputs_equal_the_previous_engine_row_for_row(tmp_path, case):
    """The DuckDB engine writes the same landing files, with the same rows, as the pandas engine it
    replaced: ``expected/`` holds that engine's output on each fixture (``landing_digest``: row ids reduced
    to their occurrence number, the one part that changed with the hash function)."""
    if case == "purchase_log":
        mapping, source = load_mapping(PURCHASES), DATA
    elif case == "own_product":
        mapping, source = load_mapping(DATA / "own_product" / "mapping.yaml"), DATA / "own_product"
    else:
        path = _orders(tmp_path)
        if case == "orders_latest":
            path.write_text(path.read_text().replace("earliest_by", "latest_by"))
        mapping, source = load_mapping(path), tmp_path
    run_import(mapping, source, tmp_path / "out")
    expected = gzip.decompress((EXPECTED / f"{case}.jsonl.gz").read_bytes()).decode().splitlines()
    assert digest(tmp_path / "out") == expected


def test_row_ids_are_stable_distinct_for_repeated_lines_and_follow_the_line(tmp_path):
    """A re-import must give the same ids (ingestion keys on them), so the hash is pinned here: a DuckDB
    upgrade that changed its ``hash`` fails this test instead of silently re-keying every imported event."""
    run_import(load_mapping(PURCHASES), DATA, tmp_path)
    billing = pd.read_csv(tmp_path / "billing_events_1997-01-02.csv", dtype=str)
    ids = billing.loc[billing["supplier_id"] == "00024", "billing_event_id"].tolist()
    assert ids == ["cee0c12ef7531523-1", "cee0c12ef7531523-2"]  # the line "00024 19970102 1 25.01", twice
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "purchase_log.txt").write_text("00024 19970102  1   25.01\n00024 19970102 1 25.02\n")
    run_import(load_mapping(PURCHASES), tmp_path / "other", tmp_path / "other")
    again = pd.read_csv(tmp_path / "other" / "billing_events_1997-01-02.csv", dtype=str)["billing_event_id"].tolist()
    assert again[0] == ids[0] and again[1].endswith("-1") and again[1] != ids[1].replace("-2", "-1")


def test_a_value_with_a_line_break_is_written_whole(tmp_path):
    """Quoted multi-line values cannot be split into days by lines: the per-day write takes over."""
    (tmp_path / "tickets.csv").write_text('id,account,day,body\nt1,A,2024-03-01,"line one\nline two"\n'
                                          "t2,A,2024-03-02,plain\n")
    path = _write_mapping(tmp_path, """
name: t
tables: {tickets: {file: tickets.csv}}
sources:
  activity_events:
    - from: tickets
      day_from: day
      columns:
        event_id: {column: id}
        supplier_id: {column: account}
        event_name: {constant: message_sent}
        occurred_at: {column: day, format: "%Y-%m-%d"}
        properties: {json_of: [body]}
""")
    report = run_import(load_mapping(path), tmp_path, tmp_path / "out")
    assert report.rows["activity_events"] == 2
    first = pd.read_csv(tmp_path / "out" / "activity_events_2024-03-01.csv", dtype=str)
    assert first["properties"].tolist() == ['{"body": "line one\\nline two"}']
    assert pd.read_csv(tmp_path / "out" / "activity_events_2024-03-02.csv", dtype=str)["event_id"].tolist() == ["t2"]


@pytest.mark.parametrize(("typo", "fix", "hint"), [
    ("latest_by: start_date", "lates_by: start_date", "sources.suppliers.0.joins.0.lates_by: did you mean 'latest_by'?"),
    ("present_from:", "present_form:", "sources.suppliers.0.present_form: did you mean 'present_from'?"),
    ("value_map: {Basic", "valuemap: {Basic", "columns.tier.valuemap: did you mean 'value_map'?"),
    ("  billing_events:\n", "  billing_event:\n", "sources.billing_event: did you mean 'billing_events'?"),
    ("business_name:", "busines_name:", "'busines_name' (did you mean 'business_name'?)"),
])
def test_a_mapping_key_typo_names_the_closest_key(tmp_path, typo, fix, hint):
    text = (PROJECT_ROOT / "mappings" / "ravenstack.yaml").read_text()
    assert typo in text
    path = _write_mapping(tmp_path, text.replace(typo, fix, 1))
    with pytest.raises(MappingError) as caught:
        load_mapping(path)
    assert "m.yaml" in str(caught.value) and hint in str(caught.value)


def test_churn_on_last_subscription_end(tmp_path):
    """``churn_on: last_subscription_end``: cancelled once every started subscription has ended, from the
    last end; a new subscription makes the supplier active again; a running one keeps it active."""
    (tmp_path / "accounts.csv").write_text("account_id,name,signup\nA,Ann,2024-01-01\nB,Bob,2024-01-01\nC,Cy,2024-01-01\n")
    (tmp_path / "subs.csv").write_text(
        "sub_id,account_id,start_date,end_date\n"
        "s1,A,2024-01-01,2024-03-05\n" "s2,A,2024-02-01,2024-03-10\n"    # A: ends when s2 ends, not at s1's end
        "s3,B,2024-01-01,2024-03-03\n" "s4,B,2024-03-07,\n"              # B: a gap, then a running subscription
        "s5,C,2024-01-01,\n")
    path = _write_mapping(tmp_path, """
name: t
start: 2024-03-01
end: 2024-03-12
tables: {accounts: {file: accounts.csv}, subs: {file: subs.csv}}
sources:
  suppliers:
    - from: accounts
      present_from: signup
      status: {churn_table: subs, key: account_id, churn_date: end_date, churn_on: last_subscription_end,
               start_date: start_date}
      columns:
        supplier_id: {column: account_id}
        business_name: {column: name}
        signed_up_at: {column: signup, format: "%Y-%m-%d"}
""")
    run_import(load_mapping(path), tmp_path, tmp_path / "out")

    def status(day: str) -> dict[str, tuple[str, str]]:
        frame = pd.read_csv(tmp_path / "out" / f"suppliers_{day}.csv", dtype=str, keep_default_na=False)
        return {r.supplier_id: (r.status, r.cancelled_at) for r in frame.itertuples()}

    assert status("2024-03-05")["A"] == ("active", "")  # s2 still runs
    assert status("2024-03-10")["A"] == ("cancelled", "2024-03-10T00:00:00Z")
    assert status("2024-03-03")["B"] == ("cancelled", "2024-03-03T00:00:00Z")
    assert status("2024-03-06")["B"] == ("cancelled", "2024-03-03T00:00:00Z")
    assert status("2024-03-07")["B"] == ("active", "")  # s4 started
    assert {day: status(day)["C"][0] for day in ("2024-03-01", "2024-03-12")} == {"2024-03-01": "active", "2024-03-12": "active"}
    bad = path.read_text().replace("start_date: start_date}", "start_date: start_date, reactivation_column: x}")
    with pytest.raises(MappingError, match="reactivation_column goes with churn_on: churn_event"):
        load_mapping(_write_mapping(tmp_path, bad))


@pytest.mark.parametrize("case", ["purchase_log", "own_product"])
def test_formats_once_per_value_write_the_same_files_as_row_by_row(tmp_path, monkeypatch, case):
    """A formatted column with few values is formatted once per value and joined (``_distinct_values``);
    forced row by row (no column counts as few-valued), every file is byte for byte the same."""
    import cs_pipeline.feeds.imports.write as write

    mapping, source = (load_mapping(PURCHASES), DATA) if case == "purchase_log" else \
        (load_mapping(DATA / "own_product" / "mapping.yaml"), DATA / "own_product")
    run_import(mapping, source, tmp_path / "once")
    monkeypatch.setattr(write, "DISTINCT_MIN", 0)
    monkeypatch.setattr(write, "DISTINCT_SHARE", 0.0)
    run_import(mapping, source, tmp_path / "rows")
    names = sorted(p.name for p in (tmp_path / "once").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "rows").iterdir()) and len(names) > 4
    for name in names:
        assert (tmp_path / "once" / name).read_bytes() == (tmp_path / "rows" / name).read_bytes(), name


def test_whitespace_lines_split_alike_with_single_spaces_runs_tabs_and_edges(tmp_path):
    """Single-spaced lines take a split without a regular expression; lines with runs of blanks, tabs,
    leading or trailing blanks the general one: both give the same fields."""
    (tmp_path / "log.txt").write_text("00001 19970101 1 11.77\n00001  19970101\t1 11.77\n 00001 19970101 1 11.77 \n"
                                      "00001 19970101 1 11.77 extra\n\t00001 19970101 1 11.77\t\n00002 19970102\n   \n")
    frame = _read(TableSpec(file="log.txt", delimiter="whitespace", header=False, columns=["c", "d", "q", "a"]), tmp_path)
    assert frame.iloc[:5].drop_duplicates().to_dict("records") == [{"c": "00001", "d": "19970101", "q": "1", "a": "11.77"}]
    assert frame.iloc[5]["c"] == "00002" and pd.isna(frame.iloc[5]["q"]) and len(frame) == 6



def test_day_ranges_written_side_by_side_write_the_same_files_as_one_piece(tmp_path, monkeypatch):
    """Event rows are sorted and written per range of days (``RANGE_ROWS``), two ranges at a time on
    connections of their own, the logins grouped per range: with ranges of a few rows every file is byte for
    byte the one written from a single range."""
    import cs_pipeline.feeds.imports.days as days

    mapping = load_mapping(PURCHASES)
    run_import(mapping, DATA, tmp_path / "one")
    monkeypatch.setattr(days, "RANGE_ROWS", 7)
    report = run_import(mapping, DATA, tmp_path / "ranges")
    assert report.rows["billing_events"] == len((DATA / "purchase_log.txt").read_text().splitlines())
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "ranges").iterdir()) and len(names) == 84
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "ranges" / name).read_bytes(), name


def test_timestamps_with_offsets_are_utc_in_every_range_whatever_the_local_zone(tmp_path, monkeypatch):
    """The ranges are written by connections of their own: they too convert offsets to UTC, not to the
    machine's zone (here New York)."""
    import time

    import cs_pipeline.feeds.imports.days as days

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    monkeypatch.setattr(days, "RANGE_ROWS", 1)
    try:
        (tmp_path / "events.csv").write_text("id,account,day,at\n" + "".join(
            f"e{d},A,2024-03-0{d},2024-03-0{d} 23:30:00+0200\n" for d in (1, 2, 3)))
        path = _write_mapping(tmp_path, """
name: t
tables: {events: {file: events.csv}}
sources:
  billing_events:
    - from: events
      day_from: day
      columns:
        billing_event_id: {column: id}
        supplier_id: {column: account}
        occurred_at: {column: at, format: "%Y-%m-%d %H:%M:%S%z"}
        event_type: {constant: invoice_paid}
""")
        run_import(load_mapping(path), tmp_path, tmp_path / "out")
    finally:
        monkeypatch.undo()
        time.tzset()
    stamps = [pd.read_csv(tmp_path / "out" / f"billing_events_2024-03-0{d}.csv", dtype=str)["occurred_at"].tolist()
              for d in (1, 2, 3)]
    assert stamps == [[f"2024-03-0{d}T21:30:00Z"] for d in (1, 2, 3)]


def test_each_day_file_keeps_the_log_order(tmp_path, monkeypatch):
    """Rows of a day are written in file order (the kept rows are sorted by day and line before the landing
    columns are computed): each day's invoices are that day's lines of the log in order, in one range or many."""
    import cs_pipeline.feeds.imports.days as days

    log = pd.read_csv(DATA / "purchase_log.txt", sep=r"\s+", header=None, names=["c", "d", "q", "a"], dtype=str)
    shuffled = tmp_path / "in"
    shuffled.mkdir()
    lines = (DATA / "purchase_log.txt").read_text().splitlines()
    (shuffled / "purchase_log.txt").write_text("\n".join(lines[1::2] + lines[0::2]) + "\n")  # days interleaved
    log = pd.concat([log.iloc[1::2], log.iloc[0::2]])
    for rows in (days.RANGE_ROWS, 7):
        monkeypatch.setattr(days, "RANGE_ROWS", rows)
        run_import(load_mapping(PURCHASES), shuffled, tmp_path / f"out{rows}")
        for day, lines_of_day in log.groupby("d", sort=False):
            billing = pd.read_csv(tmp_path / f"out{rows}" / f"billing_events_{day[:4]}-{day[4:6]}-{day[6:]}.csv", dtype=str)
            assert billing[["supplier_id", "amount"]].values.tolist() == lines_of_day[["c", "a"]].values.tolist(), day


def test_a_failed_range_stops_the_others_and_leaves_the_landing_files_as_they_were(tmp_path, monkeypatch):
    """A range that fails (a fault injected into the third piece written) stops the pieces still queued, and
    the landing folder keeps the previous import's files byte for byte: day files are written to a staging
    folder and moved in only once every one is written."""
    import cs_pipeline.feeds.imports.days as days

    mapping = load_mapping(PURCHASES)
    out = tmp_path / "landing"
    monkeypatch.setattr(days, "RANGE_ROWS", 7)
    calls = []
    real = days.DayRuns.write_piece

    def counted(self, con, n):
        calls.append(n)
        return real(self, con, n)

    monkeypatch.setattr(days.DayRuns, "write_piece", counted)
    run_import(mapping, DATA, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    every = len(calls)
    calls.clear()

    def failing(self, con, n):
        calls.append(n)
        if len(calls) == 3:
            raise OSError("disk full (injected)")
        return real(self, con, n)

    monkeypatch.setattr(days.DayRuns, "write_piece", failing)
    with pytest.raises(OSError, match="injected"):
        run_import(mapping, DATA, out)
    assert len(calls) < every / 2, (len(calls), every)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
