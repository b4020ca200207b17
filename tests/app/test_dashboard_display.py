"""The dashboard's display rules (issue 29 item 8), pure functions: the URL of a view, missing values as
an em dash or "never" instead of grey "None", and milestone dates on a backfill ("on or before", retracted)."""

from __future__ import annotations

from datetime import date, datetime, timezone

import numpy as np
import pandas as pd
import pytest

from cs_pipeline.app.dashboard.display import (
    EM_DASH,
    MILESTONE_COLUMNS,
    PAGES,
    View,
    cell_text,
    history_start,
    milestone_table,
    params_for,
    quoted_id,
    score_heading,
    styled,
    view_from_params,
)


@pytest.mark.parametrize(("params", "expected"), [
    ({"page": "supplier", "supplier": "sup_000002"}, View("Supplier", "sup_000002")),
    ({"page": "Supplier", "supplier": " sup_000002 "}, View("Supplier", "sup_000002")),
    ({"supplier": "sup_000002"}, View("Supplier", "sup_000002")),  # a supplier alone opens its page
    ({"page": "score_quality"}, View("Score quality")),
    ({"page": "interventions"}, View("Interventions and outcomes")),
    ({"page": "Interventions and outcomes"}, View("Interventions and outcomes")),
    ({"page": "nonsense"}, View("Portfolio")),
    ({}, View("Portfolio")),
    ({"page": ["portfolio", "supplier"], "supplier": "sup_1"}, View("Supplier", "sup_1")),
])
def test_a_url_names_a_view(params, expected):
    assert view_from_params(params) == expected


def test_every_view_round_trips_through_its_url():
    for page in PAGES:
        for supplier in (None, "sup_000002"):
            params = params_for(View(page, supplier))
            assert set(params) <= {"page", "supplier"}
            expected = View(page, supplier if page == "Supplier" else None)
            assert view_from_params(params) == expected
    assert params_for(View("Supplier", "sup_000002")) == {"page": "supplier", "supplier": "sup_000002"}
    assert params_for(View("Portfolio", "sup_000002")) == {"page": "portfolio"}


@pytest.mark.parametrize(("value", "fmt", "missing", "expected"), [
    (None, None, EM_DASH, "\u2014"),
    (np.nan, "{:.1f}", EM_DASH, "\u2014"),
    (pd.NaT, None, "never", "never"),
    (pd.NA, None, EM_DASH, "\u2014"),
    (62.5, "{:.1f}", EM_DASH, "62.5"),
    (-3.25, "{:+.1f}", EM_DASH, "-3.2"),
    (1234.5, "{:,.2f}", EM_DASH, "1,234.50"),
    (0.123456, None, EM_DASH, "0.1235"),
    (30.0, None, EM_DASH, "30"),
    (-0.00001, None, EM_DASH, "0"),
    (date(2025, 4, 19), None, "never", "2025-04-19"),
    (pd.Timestamp("2025-04-19"), None, EM_DASH, "2025-04-19"),
    (True, None, EM_DASH, "True"),
    (7, None, EM_DASH, "7"),
    ("declining", None, EM_DASH, "declining"),
    ("", None, EM_DASH, ""),
])
def test_cell_text(value, fmt, missing, expected):
    assert cell_text(value, fmt, missing) == expected


def test_styled_shows_no_none_and_keeps_the_values():
    frame = pd.DataFrame({
        "supplier_id": ["sup_1", "sup_2"],
        "health_score": [62.5, None],
        "trend": [None, "improving"],
        "last_activity": [date(2025, 4, 1), None],
        "mrr": [np.nan, 99.0],
        "drivers": [None, "no login for 12 days: 0 of 30 points"],
    })
    style = styled(frame, {"health_score": "{:.1f}", "mrr": "{:,.2f}"}, never=["last_activity"])
    lines = style.to_string().splitlines()
    assert "None" not in style.to_string() and "nan" not in style.to_string().lower()
    assert lines[1].split() == ["0", "sup_1", "62.5", "\u2014", "2025-04-01", "\u2014", "\u2014"]
    assert lines[2].split(" ", 6)[1:6] == ["sup_2", "\u2014", "improving", "never", "99.00"]
    # the cells keep their values (a grid sorts on them), but the never columns are text
    pd.testing.assert_frame_equal(style.data.drop(columns="last_activity"), frame.drop(columns="last_activity"))
    assert style.data["last_activity"].tolist() == ["2025-04-01", "never"]


def test_score_heading():
    assert score_heading("sup_1", 62.456, "at_risk", "declining") == "sup_1: 62.5 (at_risk, declining)"
    assert score_heading("sup_1", None, "unscored", None) == "sup_1: \u2014 (unscored, no trend yet)"
    assert score_heading("sup_1", np.nan, "unscored", "") == "sup_1: \u2014 (unscored, no trend yet)"


def test_history_start():
    warehouse_first, supplier_first = date(2025, 3, 1), date(2025, 3, 10)
    assert history_start(supplier_first, date(2024, 1, 5), warehouse_first) == supplier_first
    assert history_start(None, date(2024, 1, 5), warehouse_first) == warehouse_first  # no score: the warehouse's
    assert history_start(supplier_first, None, warehouse_first) == supplier_first  # signup unknown: not exact
    assert history_start(supplier_first, supplier_first, warehouse_first) is None  # signed up that day: exact
    assert history_start(warehouse_first, date(2025, 3, 20), warehouse_first) is None
    assert history_start(None, None, None) is None


def test_milestone_table_marks_on_or_before_and_retracted():
    milestones = pd.DataFrame({
        "milestone_type": ["onboarded", "first_client", "ten_clients", "power_user"],
        "category": ["setup", "first_use", "growth", "mastery"],
        "achieved_at": [date(2025, 3, 1), date(2025, 3, 1), date(2025, 3, 14), date(2025, 2, 27)],
        "celebrated": [True, False, True, True],
        "retracted_at": [None, None, datetime(2025, 4, 2, 6, 0, tzinfo=timezone.utc), None],
    })
    table = milestone_table(milestones, date(2025, 3, 1))
    assert list(table.columns) == MILESTONE_COLUMNS
    assert table["achieved"].tolist() == ["on or before 2025-03-01", "on or before 2025-03-01", "2025-03-14",
                                          "on or before 2025-02-27"]
    assert table["status"].tolist() == ["current", "current", "retracted 2025-04-02", "current"]
    assert table["celebrated"].tolist() == [True, False, True, True]
    exact = milestone_table(milestones, None)  # a complete history: the dates are exact
    assert exact["achieved"].tolist() == ["2025-03-01", "2025-03-01", "2025-03-14", "2025-02-27"]
    # a warehouse from before issue 28 has no retracted_at column: every milestone is current
    assert milestone_table(milestones.drop(columns="retracted_at"), None)["status"].eq("current").all()
    assert milestone_table(milestones.iloc[:0], date(2025, 3, 1)).columns.tolist() == MILESTONE_COLUMNS


def test_a_supplier_id_from_the_url_is_shown_as_text_never_as_markup():
    # ?supplier=[Session expired, log in](https://evil.example) must not become a link in the warning.
    shown = quoted_id("[Session expired, log in](https://evil.example)")
    assert shown == "`[Session expired, log in](https://evil.example)`"
    assert quoted_id("a`b`](x)\nline") == "`ab](x) line`"  # no way out of the code span
    assert quoted_id("x" * 100) == "`" + "x" * 64 + "…`"
    assert quoted_id("sup_000002") == "`sup_000002`"
