"""Turning chunks of an external table into landing rows: joins (first match, ``earliest_by``,
``latest_by``), row filters, column maps (constants, value maps, timestamp formats, JSON of columns),
stable row ids, ``group_by`` aggregates, day parsing and the snapshot status rule. Pure functions over
pandas DataFrames; nothing is written here.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date

import numpy as np
import pandas as pd

from cs_pipeline.feeds.imports.spec import ColumnMap, ImportReport, Join, MappingError, Part, StatusRule
from cs_pipeline.ingest.sources import sources


class SeenSet:
    """The 64-bit hashes seen so far: one sorted numpy array, 8 bytes per distinct hash (not a Python set),
    grown by a linear merge (``np.insert`` at ``searchsorted`` positions), so adding a chunk costs one copy of
    the array, not a concatenation, an argsort and a gather."""

    def __init__(self) -> None:
        self.keys = np.empty(0, dtype=np.uint64)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """A bool array: which of ``hashes`` were added before."""
        if not len(self.keys):
            return np.zeros(len(hashes), dtype=bool)
        pos = np.searchsorted(self.keys, hashes).clip(max=len(self.keys) - 1)
        return self.keys[pos] == hashes

    def add(self, hashes: np.ndarray) -> None:
        """Add ``hashes`` (any order, repeats allowed)."""
        new = np.unique(hashes)
        new = new[~self.contains(new)]
        if len(new):
            self.keys = np.insert(self.keys, np.searchsorted(self.keys, new), new)


class SeenCounts:
    """How often each 64-bit hash was seen so far: a ``SeenSet`` of the hashes seen at least once, and a
    dict of the extra occurrences of the few seen more than once (repeated rows are rare), so millions of
    rows cost 8 bytes each."""

    def __init__(self) -> None:
        self.seen = SeenSet()
        self.repeats: dict[int, int] = {}  # hash -> occurrences beyond the first

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Occurrences so far of each of ``hashes`` (0 for a new one)."""
        counts = self.seen.contains(hashes).astype(np.int64)
        if self.repeats:
            found = np.flatnonzero(counts)
            counts[found] += np.fromiter((self.repeats.get(int(h), 0) for h in hashes[found]), np.int64, len(found))
        return counts

    def add(self, hashes: np.ndarray) -> None:
        unique, counts = np.unique(hashes, return_counts=True)
        total = self.lookup(unique) + counts
        for h, n in zip(unique[total > 1].tolist(), total[total > 1].tolist()):
            self.repeats[h] = n - 1
        self.seen.add(unique)


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """A stable 64-bit hash per row (pandas' ``hash_pandas_object`` with its fixed key)."""
    return pd.util.hash_pandas_object(frame.astype(object).where(frame.notna(), None), index=False).to_numpy()


class RowIds:
    """Stable row ids for one table: ``<16 hex digits of the row's hash>-<occurrence number>``, the
    hash over every source column, the occurrence counting identical rows in file order from 1, so
    re-importing the same file gives the same ids."""

    def __init__(self) -> None:
        self.seen = SeenCounts()

    def assign(self, frame: pd.DataFrame) -> pd.Series:
        if frame.empty:
            return pd.Series([], index=frame.index, dtype=object)
        hashes = row_hashes(frame)
        occurrence = pd.Series(hashes).groupby(hashes, sort=False).cumcount().to_numpy() + self.seen.lookup(hashes) + 1
        self.seen.add(hashes)
        ids = [f"{int(h):016x}-{int(n)}" for h, n in zip(hashes, occurrence)]
        return pd.Series(ids, index=frame.index, dtype=object)


def _column(frame: pd.DataFrame, spec: ColumnMap, target: str, report: ImportReport, where: str,
            row_ids: pd.Series | None = None) -> pd.Series:
    if spec.row_id:
        return row_ids if row_ids is not None else pd.Series(None, index=frame.index, dtype=object)
    if spec.json_of is not None:
        missing = [c for c in spec.json_of if c not in frame]
        if missing:
            raise MappingError(f"{where}.{target}: json_of column(s) {missing} not in the data")
        return pd.Series([json.dumps({c: r[c] for c in spec.json_of if r[c] is not None and r[c] == r[c] and r[c] != ""})
                          for r in frame[spec.json_of].astype(object).to_dict("records")], index=frame.index, dtype=object)
    if spec.column is None:
        return pd.Series(spec.constant, index=frame.index, dtype=object)
    if spec.column not in frame:
        raise MappingError(f"{where}.{target}: column {spec.column!r} not in the data")
    values = frame[spec.column].astype(object).where(frame[spec.column].notna(), None)
    if spec.value_map is not None:
        mapped = values.map(lambda v: spec.value_map.get(v, "\0unmapped") if v is not None else None)
        unmapped = mapped == "\0unmapped"
        if unmapped.any():
            if spec.default is not None:
                mapped[unmapped] = spec.default
            else:
                report.unmapped.setdefault(f"{where}.{target}", Counter()).update(values[unmapped].tolist())
        values = mapped
    if spec.format is not None:
        parsed = pd.to_datetime(values, format=spec.format, errors="coerce", utc=True)
        bad = parsed.isna() & values.notna()
        if bad.any():
            report.unmapped.setdefault(f"{where}.{target}:format", Counter()).update(values[bad].astype(str).tolist())
        offset = pd.to_timedelta(spec.time)
        values = (parsed + offset).dt.strftime("%Y-%m-%dT%H:%M:%SZ").astype(object).where(parsed.notna(), None)
    return values


def _join(frame: pd.DataFrame, tables: dict[str, pd.DataFrame], join: Join, report: ImportReport, where: str) -> pd.DataFrame:
    other = tables[join.table]
    if join.latest_by:
        other = other.sort_values(join.latest_by, kind="stable").drop_duplicates(join.key, keep="last")
    elif join.earliest_by:
        other = other.sort_values(join.earliest_by, kind="stable").drop_duplicates(join.key, keep="first")
    else:
        other = other.drop_duplicates(join.key, keep="first")
    merged = frame.merge(other[[join.key, *join.columns]], on=join.key, how="left", suffixes=("", f"_{join.table}"))
    merged.index = frame.index
    misses = merged[join.columns[0]].isna() & frame[join.key].notna()
    if misses.any():
        report.dropped[f"{where}: no match in {join.table} on {join.key}"] += int(misses.sum())
    return merged


def parse_days(values: pd.Series) -> pd.Series:
    """Days (``datetime64[ns]`` at midnight, NaT where unparseable) of a column of dates: compact
    ``YYYYMMDD``, ISO 8601 (fast paths), else any format pandas recognises."""
    text = values.astype(object).where(values.notna(), None)
    if not len(text):
        return pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns]")
    compact = text.str.fullmatch(r"\d{8}").fillna(False).astype(bool)
    parsed = pd.to_datetime(text.where(compact), format="%Y%m%d", errors="coerce")
    rest = ~compact & text.notna()
    if rest.any():
        iso = pd.to_datetime(text.where(rest), format="ISO8601", errors="coerce", utc=True).dt.tz_localize(None)
        parsed = parsed.where(~rest, iso)
        retry = rest & parsed.isna()
        if retry.any():
            mixed = pd.to_datetime(text.where(retry), format="mixed", errors="coerce", utc=True).dt.tz_localize(None)
            parsed = parsed.where(~retry, mixed)
    return parsed.astype("datetime64[ns]").dt.normalize()


def part_frame(part: Part, frame: pd.DataFrame, tables: dict[str, pd.DataFrame], target: str,
                report: ImportReport, where: str, row_ids: pd.Series | None = None,
                days: tuple[date | None, date | None] | None = None) -> pd.DataFrame:
    """The landing rows of one chunk of ``part``'s table: landing columns plus helper columns
    ``_day``, ``_present_from``, ``_key``, ``_trial`` and ``_g0``.. (the group_by values).

    With ``days`` (first, last, either None for open) event rows outside them are dropped before
    mapping. What did not map or join is counted in ``report``.

    Raises:
        MappingError: a mapped, ``json_of`` or ``group_by`` column is absent from the data.
    """
    for join in part.joins:
        frame = _join(frame, tables, join, report, where)
    if part.where:
        for column, allowed in part.where.items():
            keep = frame[column].isin(allowed)
            frame = frame.loc[keep]
            if row_ids is not None:
                row_ids = row_ids.loc[keep[keep].index]
    if days is not None and part.day_from:  # event sources: drop the rows outside the days before mapping them
        day = parse_days(frame[part.day_from])
        keep = _in_range(day, *days)
        outside = int((~keep & day.notna()).sum())
        if outside:
            report.dropped[f"{target}: outside {days[0] or '-'}..{days[1] or '-'}"] += outside
        undated = int(day.isna().sum())
        if undated:
            report.dropped[f"{where}: no day in {part.day_from}"] += undated
        frame = frame.loc[keep]
        if row_ids is not None:
            row_ids = row_ids.loc[frame.index]
    out = pd.DataFrame({col: _column(frame, spec, col, report, where, row_ids) for col, spec in part.columns.items()},
                       index=frame.index)
    for col in sources()[target].column_names:
        if col not in out:
            out[col] = None
    mapped_unmapped = pd.Series(False, index=out.index)
    for col, spec in part.columns.items():
        if spec.value_map is not None and spec.default is None:
            mapped_unmapped |= out[col] == "\0unmapped"
    if mapped_unmapped.any():
        report.dropped[f"{where}: unmapped values"] += int(mapped_unmapped.sum())
        out = out.loc[~mapped_unmapped]
        frame = frame.loc[out.index]
    none = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns]")
    out["_day"] = parse_days(frame[part.day_from]) if part.day_from else none
    out["_present_from"] = parse_days(frame[part.present_from]) if part.present_from else none
    if part.status is not None:
        out["_key"] = frame[part.status.key].to_numpy()
        out["_trial"] = (frame[part.status.trial_column].astype(str).str.lower() == "true").to_numpy() \
            if part.status.trial_column else False
    for i, column in enumerate(part.group_by or []):
        if column not in frame:
            raise MappingError(f"{where}: group_by column {column!r} not in the data")
        out[f"_g{i}"] = frame[column].to_numpy()
    return out[[*sources()[target].column_names, *[c for c in out.columns if c.startswith("_")]]]


#: How partial aggregates of consecutive chunks combine.
_COMBINE = {"min": "min", "max": "max", "first": "first", "last": "last", "count": "sum", "sum": "sum"}


def aggregate(frame: pd.DataFrame, part: Part, combine: bool = False) -> pd.DataFrame:
    """One row per ``group_by`` group (keys in ``_g0``..): each landing column by its ``aggregate``
    (default ``first``, the first non-missing value in file order); numbers compare as numbers for
    min/max when every value of the column is numeric; helper columns: earliest ``_day`` and
    ``_present_from``, first ``_key``, last ``_trial``. ``combine`` merges partial aggregates."""
    keys = [f"_g{i}" for i in range(len(part.group_by or []))]
    if frame.empty:
        return frame
    how: dict[str, str] = {}
    data = frame.copy()
    for column in frame.columns:
        if column in keys:
            continue
        spec = part.columns.get(column)
        agg = spec.aggregate if spec and spec.aggregate else "first"
        if column in ("_day", "_present_from"):
            agg = "min"
        elif column == "_trial":
            agg = "last"
        if combine:
            agg = _COMBINE[agg]
        elif agg == "count":
            data[column] = 1
            agg = "sum"
        if agg == "sum":
            data[column] = pd.to_numeric(data[column], errors="coerce")
        elif agg in ("min", "max") and column not in ("_day", "_present_from"):
            numbers = pd.to_numeric(data[column], errors="coerce")
            if numbers.notna().sum() == data[column].notna().sum():
                data[column] = numbers
        if data[column].dtype == object and column not in ("_key", "_trial"):
            data[column] = data[column].astype(str).where(data[column].notna())  # Arrow strings: vectorised min/max
        how[column] = agg
    grouped = data.groupby(keys, sort=False, dropna=False).agg(how).reset_index()
    for column, agg in how.items():  # back to text for the landing file (ints without ".0")
        if agg in ("sum", "min", "max") and pd.api.types.is_numeric_dtype(grouped[column]) and column != "_trial":
            values = grouped[column]
            whole = values.dropna().eq(values.dropna().round()).all()
            grouped[column] = values.map(lambda v: None if pd.isna(v) else (str(int(v)) if whole else repr(float(v))))
    return grouped


def snapshot_status(snapshot: pd.DataFrame, churn: pd.DataFrame, rule: StatusRule, day: date) -> tuple[pd.Series, pd.Series]:
    """(status, cancelled_at) per row of ``snapshot`` (with ``_key`` and ``_trial``) on ``day``: ``cancelled``
    from the latest ``churn`` row on or before the day unless it is a reactivation, ``trialing`` where
    ``_trial``, else ``active``; ``cancelled_at`` is that churn day at 00:00 UTC (ISO text) or None."""
    events = churn.loc[pd.to_datetime(churn[rule.churn_date], errors="coerce").dt.date <= day]
    if rule.reactivation_column:
        events = events.assign(_re=events[rule.reactivation_column].astype(str).str.lower() == "true")
    else:
        events = events.assign(_re=False)
    events = events.assign(_d=pd.to_datetime(events[rule.churn_date]).dt.date).sort_values("_d")
    last = events.drop_duplicates(rule.key, keep="last").set_index(rule.key)
    cancelled_on = last["_d"].where(~last["_re"])
    when = snapshot["_key"].map(cancelled_on)
    status = pd.Series("active", index=snapshot.index, dtype=object)
    status[snapshot["_trial"].astype(bool)] = "trialing"
    status[when.notna()] = "cancelled"
    cancelled_at = when.map(lambda d: f"{d.isoformat()}T00:00:00Z" if isinstance(d, date) else None)
    return status, cancelled_at


def login_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """One login per supplier and day of ``rows`` (with ``_day``): at 08:00 UTC, by the day's first
    user of that supplier, or the supplier's own id when the rows have no user."""
    firsts = rows.assign(user_id=rows["user_id"].where(rows["user_id"].notna(), rows["supplier_id"])) \
        .drop_duplicates(["supplier_id", "_day"])[["supplier_id", "user_id", "_day"]].copy()
    days = firsts["_day"].dt.strftime("%Y-%m-%d")
    firsts["event_id"] = "login-" + firsts["supplier_id"].astype(str) + "-" + days
    firsts["event_name"] = "login"
    firsts["occurred_at"] = days + "T08:00:00Z"
    return firsts


def _in_range(days: pd.Series, start: date | None, end: date | None) -> pd.Series:
    keep = days.notna()
    if start is not None:
        keep &= days >= pd.Timestamp(start)
    if end is not None:
        keep &= days <= pd.Timestamp(end)
    return keep
