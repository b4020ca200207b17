"""The churnsim_crm loader of the score-validity benchmark: churn from merged subscription periods (the
dataset README's rule) and capped, identified events. Unit tests on small frames, and one check of the
real files when they are there."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.churnsim_landing import EVENT_MAP, churnsim_activity, churnsim_suppliers

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "churnsim_crm"  # optional validation data


def _subs(rows):
    return pd.DataFrame(rows, columns=["account_id", "product", "start_date", "end_date", "mrr", "bill_period_months",
                                       "discount"])


def test_periods_merge_within_seven_days_and_only_the_last_end_is_churn():
    subs = _subs([
        # a: renewals 3 days apart continue one period, which ends before the label end: churned.
        ("a", "basic_mthly", "2022-01-05", "2022-02-05", 100, 1, 0),
        ("a", "basic_mthly", "2022-02-08", "2022-03-08", 100, 1, 0),
        # b: a 20-day gap starts a new period that runs past the label end: not churned.
        ("b", "premier_mthly", "2022-01-10", "2022-02-10", 300, 1, 0),
        ("b", "premier_mthly", "2022-03-02", "2022-11-02", 300, 1, 0),
        # c: ends exactly on the label end: churned that day; add-ons do not set the tier.
        ("c", "standard_mthly", "2022-06-01", "2022-10-01", 200, 1, 0),
        ("c", "meetings", "2022-06-01", "2022-10-01", 50, 1, 0),
    ])
    out = churnsim_suppliers(pd.DataFrame({"account_id": ["a", "b", "c"]}), subs).set_index("supplier_id")
    assert out.loc["a", "signup"] == date(2022, 1, 5) and out.loc["a", "cancelled"] == date(2022, 3, 8)
    assert out.loc["b", "signup"] == date(2022, 1, 10) and pd.isna(out.loc["b", "cancelled"])
    assert out.loc["c", "cancelled"] == date(2022, 10, 1)
    assert out["tier"].to_dict() == {"a": "starter", "b": "enterprise", "c": "professional"}


def test_events_are_mapped_and_capped_per_account_day_and_name(tmp_path):
    rows = [("1", "2022-03-01 08:00:00", "search")] * 5 + [("1", "2022-03-01 07:00:00", "edit_search"),
                                                           ("1", "2022-03-02 09:00:00", "meeting"),
                                                           ("1", "2021-12-31 09:00:00", "meeting")]
    path = tmp_path / "events.csv.gz"
    pd.DataFrame(rows, columns=["account_id", "event_time", "event_type"]).to_csv(path, index=False)
    daily, read = churnsim_activity(path, date(2022, 1, 1), date(2022, 10, 1), cap=3, chunk_rows=3)
    assert read == 8
    got = {(r.day, r.event_name): (r.count, r.first_time) for r in daily.itertuples()}
    assert got == {("2022-03-01", "timeline_shared"): (3, "07:00:00"), ("2022-03-02", "form_completed"): (1, "09:00:00")}


@pytest.mark.skipif(not DATA.is_dir(), reason=f"optional validation data absent: no {DATA} (docs/score-validity.md)")
def test_real_files_give_the_readme_churn_count_and_every_event_type_maps():
    accounts = pd.read_csv(DATA / "accounts.csv.gz", dtype=str)
    subs = pd.read_csv(DATA / "subscriptions.csv.gz", dtype={"account_id": str})
    out = churnsim_suppliers(accounts, subs)
    assert len(out) == 441 and int(out["cancelled"].notna().sum()) == 43  # README: 43 of 441 churn
    assert len(EVENT_MAP) == 25
