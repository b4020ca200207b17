"""Markdown tables for Dagster materialisation and check metadata."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd


def markdown_table(rows: Sequence[Mapping] | pd.DataFrame, empty: str = "(no rows)", max_cell: int | None = 60) -> str:
    """A Markdown table of ``rows`` (dicts with the same keys, or a DataFrame).

    Null cells are blank; ``|`` and newlines in values are escaped so a cell stays a cell; cells are
    cut to ``max_cell`` characters (None: not cut). ``empty`` is returned when there are no rows.
    """
    records = rows.to_dict("records") if isinstance(rows, pd.DataFrame) else list(rows)
    if not records:
        return empty
    headers = list(records[0])

    def cell(value) -> str:
        if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA or value is pd.NaT:
            return ""
        text = str(value).replace("|", "\\|").replace("\n", " ")
        return text if max_cell is None else text[:max_cell]

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(r.get(h)) for h in headers) + " |" for r in records]
    return "\n".join(lines)
