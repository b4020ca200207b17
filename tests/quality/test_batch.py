"""The batch a gate validates holds the columns its suite reads (cs_pipeline.quality.batch): the real
suites against the real tables, and a gate's outcome on a batch read that way."""

from __future__ import annotations

import json

import pandas as pd
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
def test_raw_batches_read_every_column_the_suite_reads(source):
    suite = load_suite_json(f"raw_{source}")
    table = [*sources()[source].column_names, "_partition_date", "_source_file", "_record_number", "_loaded_at"]
    read = batch_columns(suite, table)
    assert set(read) == value_columns(suite) & set(table)
    assert read == [c for c in table if c in read]  # the table's order


def test_customer_health_batch_leaves_its_json_columns_behind():
    from cs_pipeline.health.store import HEALTH_COLUMNS

    read = batch_columns(load_suite_json("customer_health"), HEALTH_COLUMNS)
    assert {"components", "drivers"}.isdisjoint(read) and {"health_score", "risk_level", "supplier_id"} <= set(read)


def test_an_argument_that_may_name_columns_reads_every_column():
    suite = {"expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "b", "value_set": [1],
                                                                 "row_condition": 'c == "x"'}}]}
    assert suite_columns(suite) is None
    assert batch_columns(suite, ["a", "b", "c", "d"]) == ["a", "b", "c", "d"]
    del suite["expectations"][1]["kwargs"]["row_condition"]
    assert batch_columns(suite, ["a", "b", "c", "d"]) == ["a", "b"]
    suite["expectations"].append({"type": "expect_table_columns_to_match_set",
                                  "kwargs": {"column_set": {"$PARAMETER": "expected_columns"}}})
    assert batch_columns(suite, ["a", "b", "c", "d"]) == ["a", "b", "c", "d"]


def test_gate_on_a_pruned_batch_sees_values_names_and_missing_columns(conn, tmp_path):
    """A value expectation fails on the rows that break it; the table's shape is the whole table's (an exact
    column set fails on a column the suite does not name, a named column the table lacks fails); a row whose
    only read value is an empty string is still a row."""
    conn.execute("CREATE TABLE public.gate_probe (id text, note jsonb, score float8, at timestamptz)")
    conn.execute("INSERT INTO public.gate_probe VALUES ('a', '{\"x\": 1}', 5, '2026-01-01T00:00:00Z'), "
                 "('', '{}', 50, '2026-01-02T00:00:00Z'), (NULL, NULL, 7, NULL)")
    suite = {"name": "probe", "expectations": [
        {"type": "expect_table_columns_to_match_set", "kwargs": {"column_set": ["id", "note"], "exact_match": False},
         "severity": "critical"},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "score", "max_value": 10},
         "severity": "critical"}]}

    def gate(changed: dict) -> tuple[pd.DataFrame, dict]:
        (tmp_path / "probe.json").write_text(json.dumps(changed))
        frame = read_gate_batch(conn, "probe", "public", "gate_probe", sql.SQL("true"), directory=tmp_path)
        runner = GateRunner(tmp_path / "docs", suites_dir=tmp_path)
        return frame, {d["expectation"]: d for d in runner.validate(frame, "probe", {}, "pruned").details}

    frame, outcome = gate(suite)
    assert list(frame.columns) == ["id", "note", "score", "at"] and len(frame) == 3
    assert frame["note"].isna().all() and frame["at"].isna().all() and sorted(frame["score"]) == [5, 7, 50]
    assert outcome["expect_table_columns_to_match_set"]["success"]
    assert outcome["expect_column_values_to_be_between"]["unexpected_count"] == 1
    exact = json.loads(json.dumps(suite))
    exact["expectations"][0]["kwargs"]["exact_match"] = True  # "at" and "score" are not in the set
    assert not gate(exact)[1]["expect_table_columns_to_match_set"]["success"]
    ghost = json.loads(json.dumps(suite))
    ghost["expectations"][0]["kwargs"]["column_set"].append("ghost")
    frame, outcome = gate(ghost)
    assert "ghost" not in frame.columns and not outcome["expect_table_columns_to_match_set"]["success"]
    only_id = {"name": "probe", "expectations": [
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 3, "max_value": 3}},
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "id"}}]}
    frame, outcome = gate(only_id)
    assert frame["id"].tolist()[:2] == ["a", ""] and outcome["expect_table_row_count_to_be_between"]["success"]
    filtered = read_gate_batch(conn, "probe", "public", "gate_probe", sql.SQL("score < %s"), (6,), directory=tmp_path)
    assert len(filtered) == 1
    conn.rollback()
