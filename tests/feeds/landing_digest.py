"""A directory of landing files as comparable text: one JSON line per file (its columns) and per row (file
and values), sorted, with generated row ids (``<hash>-<occurrence>``) reduced to their occurrence, so two
imports compare row for row whatever the order of rows within a day and the hash function."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

ROW_ID = re.compile(r"^[0-9a-f]{16}-([0-9]+)$")


def digest(directory: Path) -> list[str]:
    """Sorted JSON lines: ``{"file", "columns"}`` per landing file and ``{"file", "row"}`` per row (values
    as text, missing as null; a row id ``<16 hex>-<n>`` becomes ``#<n>``)."""
    lines = []
    for path in sorted(directory.glob("*.csv")):
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        lines.append(json.dumps({"file": path.name, "columns": list(frame.columns)}))
        for record in frame.astype(object).where(frame.notna(), None).to_dict("records"):
            row = {k: (f"#{m.group(1)}" if isinstance(v, str) and (m := ROW_ID.match(v)) else v) for k, v in record.items()}
            lines.append(json.dumps({"file": path.name, "row": row}, sort_keys=True))
    return sorted(lines)
