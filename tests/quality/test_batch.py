"""The batch a gate validates holds the columns its suite reads (cs_pipeline.quality.batch): the real
suites against the real tables, and a gate's outcome on a batch read that way."""

from __future__ import annotations

import json

import pytest
from psycopg import sql

from cs_pipeline.ingest.sources import sources
from cs_pipeline.quality.batch import VALUE_ARGUMENTS, batch_columns, read_gate_batch, suite_columns
from cs_pipeline.quality.gx import GateRunner, load_suite_json


def value_columns(suite: dict) -> set[str]:
    """Every column an expectation of ``suite`` reads values of (the epoch columns' sources included)."""
    found = set()
    for expectation in suite["expectations"]:
        for argument in VALUE_ARGUMENTS:
            given = expectation["kwargs"].get(argument)
            found |= {given} if isinstance(given, str) else set(given or [])
    return found | {c.removesuffix("_epoch") for c in found}


@pytest.mark.parametrize("source", sorted(sources()))
def test_raw_batches_read_every_column_the_suite_reads_and_keep_every_named_one(source):
    suite = load_suite_json(f"raw_{source}")
    table = [*sources()[source].column_names, "_partition_date", "_source_file", "_record_number", "_loaded_at"]
    read, named = batch_columns(suite, table)
    assert set(read) == value_columns(suite) & set(table)
    assert read == [c for c in table if c in read]  # the table's order
    column_sets = {c for e in suite["expectations"] for c in e["kwargs"].get("column_set", [])}
    assert column_sets <= set(read) | set(named)


def test_customer_health_batch_leaves_its_json_columns_behind():
    from cs_pipeline.health.store import HEALTH_COLUMNS

    read, named = batch_columns(load_suite_json("customer_health"), HEALTH_COLUMNS)
    assert {"components", "drivers"}.isdisjoint(read) and {"health_score", "risk_level", "supplier_id"} <= set(read)


def test_an_argument_that_may_name_columns_reads_every_column():
    suite = {"expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "b", "value_set": [1],
                                                                 "row_condition": 'c == "x"'}}]}
    assert suite_columns(suite) is None
    assert batch_columns(suite, ["a", "b", "c", "d"]) == (["a", "b", "c", "d"], [])
    del suite["expectations"][1]["kwargs"]["row_condition"]
    assert batch_columns(suite, ["a", "b", "c", "d"]) == (["a", "b"], [])


def test_gate_on_a_pruned_batch_sees_values_names_and_missing_columns(conn, tmp_path):
    """A value expectation fails on the rows that break it, a named column the table has passes though its
    values are not read, and a named column the table lacks fails: as on the whole table."""
    conn.execute("CREATE TABLE public.gate_probe (id text, note jsonb, score float8, at timestamptz)")
    conn.execute("INSERT INTO public.gate_probe VALUES ('a', '{\"x\": 1}', 5, '2026-01-01T00:00:00Z'), "
                 "('b', '{}', 50, '2026-01-02T00:00:00Z'), (NULL, NULL, 7, NULL)")
    suite = {"name": "probe", "expectations": [
        {"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": ["id", "note"], "exact_match": False},
         "severity": "critical"},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "score", "max_value": 10},
         "severity": "critical"}]}
    (tmp_path / "probe.json").write_text(json.dumps(suite))
    frame = read_gate_batch(conn, "probe", "public", "gate_probe", sql.SQL("true"), directory=tmp_path)
    assert list(frame.columns) == ["id", "note", "score"] and len(frame) == 3
    assert frame["note"].isna().all() and sorted(frame["score"]) == [5, 7, 50]
    filtered = read_gate_batch(conn, "probe", "public", "gate_probe", sql.SQL("score < %s"), (6,), directory=tmp_path)
    assert len(filtered) == 1

    runner = GateRunner(tmp_path / "docs", suites_dir=tmp_path)
    by_type = {d["expectation"]: d for d in runner.validate(frame, "probe", {}, "pruned").details}
    assert by_type["expect_table_columns_to_match_set"]["success"]
    assert not by_type["expect_column_values_to_be_between"]["success"]
    assert by_type["expect_column_values_to_be_between"]["unexpected_count"] == 1
    suite["expectations"][0]["kwargs"]["column_set"].append("ghost")
    (tmp_path / "probe.json").write_text(json.dumps(suite))
    ghost = read_gate_batch(conn, "probe", "public", "gate_probe", sql.SQL("true"), directory=tmp_path)
    assert "ghost" not in ghost.columns
    assert not {d["expectation"]: d for d in runner.validate(ghost, "probe", {}, "ghost").details}[
        "expect_table_columns_to_match_set"]["success"]
    conn.rollback()
