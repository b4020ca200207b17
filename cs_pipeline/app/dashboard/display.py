"""How the dashboard shows things (issue 29 item 8): pure functions, no Streamlit, no database.

* The URL of a view: ``?page=supplier&supplier=sup_000002`` opens that supplier's page (``view_from_params``)
  and the app writes the page and supplier it shows back into the URL (``params_for``), so a view can be
  bookmarked or pasted into a ticket.
* Missing values: an em dash (``EM_DASH``), or "never" for a day that never happened (last login), instead
  of the grid's grey "None" (``cell_text``, ``styled``).
* Milestone dates: a milestone whose criterion already held on the first day of the supplier's history was
  achieved *on or before* that day, not on it (a backfill cannot see earlier); a retracted one (the data no
  longer supports it: ``retracted_at``) says so (``milestone_table``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime

import pandas as pd
from pandas.io.formats.style import Styler

EM_DASH = "\u2014"
NEVER = "never"
#: Page label (the sidebar) -> its name in the URL (``?page=``).
PAGE_SLUGS = {"Portfolio": "portfolio", "Supplier": "supplier", "Interventions and outcomes": "interventions",
              "Score quality": "score_quality"}
PAGES = tuple(PAGE_SLUGS)


@dataclass(frozen=True)
class View:
    """What a URL asks for: a page label of ``PAGES`` and, on the Supplier page, a supplier id (or None)."""

    page: str
    supplier: str | None = None


def view_from_params(params: Mapping[str, str | list[str]]) -> View:
    """The view a URL's query parameters ask for (``st.query_params.to_dict()``).

    ``page`` is a slug of ``PAGE_SLUGS`` (case-insensitive) or a page label; anything else (or none) gives
    the Portfolio. ``supplier`` (stripped) is kept whatever the page, and opens the Supplier page when no
    page is given. A repeated parameter counts with its last value.
    """
    def last(key: str) -> str:
        value = params.get(key, "")
        if isinstance(value, list):
            value = value[-1] if value else ""
        return str(value).strip()

    supplier = last("supplier") or None
    raw = last("page").lower()
    by_slug = {slug: label for label, slug in PAGE_SLUGS.items()}
    by_label = {label.lower(): label for label in PAGES}
    page = by_slug.get(raw) or by_label.get(raw) or ("Supplier" if supplier and not raw else "Portfolio")
    return View(page, supplier)


def quoted_id(value: str, limit: int = 64) -> str:
    """``value`` (a supplier id from the URL or the data) as a Markdown code span, backticks and line breaks
    removed and cut to ``limit`` characters: a link or markup in a pasted URL is shown as text, never
    rendered (``st.warning``/``st.caption`` render Markdown)."""
    text = " ".join(str(value).replace("`", "").split())
    return f"`{text[:limit]}{'…' if len(text) > limit else ''}`"


def params_for(view: View) -> dict[str, str]:
    """The query parameters of ``view``: ``page`` always, ``supplier`` only on the Supplier page."""
    params = {"page": PAGE_SLUGS[view.page]}
    if view.page == "Supplier" and view.supplier:
        params["supplier"] = view.supplier
    return params


def is_missing(value) -> bool:
    """True for None, NaN, NaT and pd.NA (a scalar; containers are never missing)."""
    if value is None:
        return True
    if isinstance(value, (list, tuple, dict, set)):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def cell_text(value, fmt: str | None = None, missing: str = EM_DASH) -> str:
    """One cell as the dashboard shows it.

    Missing (``is_missing``) gives ``missing`` (the em dash, or ``NEVER`` for a day that never happened).
    Otherwise ``fmt`` (a ``str.format`` pattern such as ``"{:+.1f}"``) when given; a float shows up to 4
    decimals without trailing zeros (62.5, 0.1234); a midnight timestamp shows as its day (2025-04-19);
    everything else ``str(value)``.
    """
    if is_missing(value):
        return missing
    if fmt is not None:
        return fmt.format(value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return str(value)
        text = f"{value:.4f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    if isinstance(value, pd.Timestamp) and value == value.normalize():
        return value.date().isoformat()
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)


def styled(frame: pd.DataFrame, formats: Mapping[str, str] | None = None, never: Iterable[str] = ()) -> Styler:
    """``frame`` as a pandas Styler whose display text is ``cell_text`` of every cell: ``formats`` per
    column (``str.format`` patterns), the em dash for missing values. The columns in ``never`` (days that
    may never have happened, such as the last login) become text: the day, or ``NEVER``.

    ``st.table`` shows a Styler's display text as it is. ``st.dataframe`` shows it for the cells that have a
    value and its ``placeholder`` for missing ones, so give it ``placeholder=EM_DASH`` (otherwise a grey
    "None"); its numeric columns keep their values and still sort as numbers.
    """
    formats = dict(formats or {})
    never = [c for c in never if c in frame.columns]
    if never:
        frame = frame.assign(**{c: [cell_text(v, missing=NEVER) for v in frame[c]] for c in never})
    style = frame.style
    for column in frame.columns:
        style = style.format(lambda v, fmt=formats.get(column): cell_text(v, fmt), subset=[column])
    return style


MILESTONE_COLUMNS = ["milestone", "category", "achieved", "celebrated", "status"]


def history_start(first_scored: date | None, signup: date | None, warehouse_first: date | None) -> date | None:
    """The first day a supplier's milestones could be seen, or None when its history is complete.

    ``first_scored`` is the supplier's first day of data (its first customer_health row), else the
    warehouse's first day (``warehouse_first``). When the supplier signed up on or after that day
    (``signup``), nothing happened before it: its dates are exact (None).
    """
    start = first_scored or warehouse_first
    if start is None or (signup is not None and signup >= start):
        return None
    return start


def milestone_table(milestones: pd.DataFrame, start: date | None) -> pd.DataFrame:
    """The Supplier page's milestones: ``MILESTONE_COLUMNS`` (all text but celebrated).

    Args:
        milestones: marts.success_milestones rows of one supplier: milestone_type, category, achieved_at
            (date), celebrated (bool), retracted_at (timestamp, None while the data supports it).
        start: ``history_start`` (None: the dates are exact).

    ``achieved`` is the day, or "on or before <day>" when ``achieved_at`` is on or before ``start`` (the
    criterion already held on the first day of history, so the backfill cannot tell when it was reached);
    ``status`` is "retracted <day>" when ``retracted_at`` is set, else "current".
    """
    rows = []
    for m in milestones.to_dict("records"):
        achieved = pd.Timestamp(m["achieved_at"]).date()
        early = start is not None and achieved <= start
        retracted = m.get("retracted_at")
        rows.append((m["milestone_type"], m["category"], f"on or before {achieved}" if early else str(achieved),
                     bool(m["celebrated"]),
                     f"retracted {pd.Timestamp(retracted).date()}" if not is_missing(retracted) else "current"))
    return pd.DataFrame(rows, columns=MILESTONE_COLUMNS)


def score_heading(supplier_id: str, health_score, risk_level, trend) -> str:
    """The Supplier page's heading: ``sup_000002: 62.5 (at_risk, declining)``; an em dash for a missing
    score, "no trend yet" for a missing trend."""
    score = cell_text(health_score, "{:.1f}")
    return f"{supplier_id}: {score} ({cell_text(risk_level)}, {trend if not is_missing(trend) and trend else 'no trend yet'})"
