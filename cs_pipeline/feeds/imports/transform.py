"""Turning a mapping part into SQL over the tables ``read`` loaded into DuckDB: joins (first match,
``earliest_by``, ``latest_by``), row filters, column maps (constants, value maps, timestamp formats, JSON of
columns), stable row ids, ``group_by`` aggregates, day parsing, logins and the snapshot status rule. Values
from the mapping travel as named parameters (``Params``), identifiers through ``quote``. Nothing is written
here; ``write`` runs the queries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cs_pipeline.feeds.imports.read import DAY_SUFFIX, parse_days, quote
from cs_pipeline.feeds.imports.spec import ColumnMap, MappingError, Part, StatusRule
from cs_pipeline.ingest.sources import sources

#: A value_map result meaning "no mapping and no default": the record is reported and dropped.
UNMAPPED = "\x01unmapped"


@dataclass
class Params:
    """Named query parameters (``$p0``, ``$p1``..) collected while a query is built."""

    values: dict[str, Any] = field(default_factory=dict)

    def __call__(self, value: Any, cast: str = "VARCHAR") -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"CAST(${name} AS {cast})"

    def of(self, query: str) -> dict[str, Any]:
        """The parameters ``query`` uses (DuckDB refuses others)."""
        return {name: value for name, value in self.values.items() if f"${name} " in query}


def table_name(table: str) -> str:
    """The DuckDB table holding the mapping's table ``table``."""
    return quote(f"t_{table}")


def row_id_sql() -> str:
    """SQL of the stable row id of a table loaded with row ids (``_h``, ``_occ``): the row's 64-bit hash
    (16 hex digits), ``-``, and the occurrence of identical rows in file order from 1, so repeated lines get
    distinct ids and a re-import gives the same ids (``duckdb`` is pinned: its ``hash`` is not promised
    stable across releases; tests/feeds checks a known id)."""
    # lpad only where the hash has leading zero digits (1 in 16): padding every row costs more than the rest
    return ("lower(CASE WHEN _h >= CAST(1152921504606846976 AS UBIGINT) THEN to_hex(_h) ELSE lpad(to_hex(_h), 16, '0') END)"
            " || '-' || CAST(_occ AS VARCHAR)")


@dataclass
class PartSql:
    """The SQL of one part: ``ctes`` (name, query) ending in ``final`` (landing columns and helpers
    ``_day``, ``_present_from``, ``_key``, ``_trial``, ``_g0``.., ``_rn``), ``in_order`` the same sorting the
    kept rows first (see ``query``); ``checks`` are (report key,
    CTE, SQL condition); ``value_checks`` (report key, SQL of a value over ``kept``, SQL condition on ``value``
    meaning it did not map), checked once per distinct value."""

    ctes: list[tuple[str, str]]
    final: str
    checks: list[tuple[str, str, str]]
    value_checks: list[tuple[str, str, str]]
    params: Params
    in_order: list[tuple[str, str]] | None = None

    def query(self, select: str, upto: str | None = None, ordered: bool = False) -> str:
        """``select`` after the CTEs (with ``upto``, only those up to that one: what a check reads). With
        ``ordered`` (a part without ``group_by``): the kept rows are sorted by ``_day`` and ``_rn`` before the
        landing columns are computed, so the sort carries the table's narrow columns rather than the landing
        rows, and a query that only filters and projects ``final`` keeps that order (DuckDB preserves the order
        of a sorted subquery through WHERE and SELECT)."""
        ctes = self.in_order if ordered and self.in_order else self.ctes
        if ordered and not self.in_order:
            raise ValueError("a grouped part has no ordered form")
        names = [name for name, _ in ctes]
        ctes = ctes[:names.index(upto) + 1] if upto else ctes
        return "WITH " + ", ".join(f"{name} AS ({sql})" for name, sql in ctes) + " " + select


def part_sql(part: Part, target: str, where: str, columns: dict[str, list[str]],
             days: tuple[date | None, date | None] | None, row_ids: bool, parsed: tuple[str, ...] = (),
             distinct: dict[str, str] | None = None) -> PartSql:
    """Build the SQL of ``part`` for landing source ``target``. ``columns`` holds each loaded table's own
    columns; with ``days`` (first, last, either None for open) rows whose ``day_from`` is outside them or
    unparseable are dropped (and counted); ``row_ids``: the part's table carries ``_h`` and ``_occ`` for ``row_id``;
    ``parsed``: columns of the part's table loaded with their day (``<column>#day``, ``read.load_table``);
    ``distinct``: columns of the part's table with few values -> a table of those values (column ``#v``): a
    timestamp ``format`` of such a column is computed once per value and joined.

    Raises:
        MappingError: a mapped, joined, filtered, ``json_of`` or ``group_by`` column is absent from the data.
    """
    p = Params()
    ctes: list[tuple[str, str]] = []
    checks: list[tuple[str, str, str]] = []
    value_checks: list[tuple[str, str, str]] = []
    have = list(columns[part.from_])
    select = [f"b.{quote(c)}" for c in have] + ["b._rn"] + (["b._h", "b._occ"] if row_ids else [])
    parsed = tuple(c for c in parsed if c in have)
    select += [f"b.{quote(c + DAY_SUFFIX)}" for c in parsed]

    def day_of(column: str) -> str:
        return quote(column + DAY_SUFFIX) if column in parsed else parse_days(column)

    joins = []
    for i, join in enumerate(part.joins):
        other = columns[join.table]
        for column in [join.key, *join.columns]:
            if column not in other:
                raise MappingError(f"{where}: join column {column!r} not in table {join.table}")
        if join.key not in have:
            raise MappingError(f"{where}: join key {join.key!r} not in the data")
        if join.latest_by or join.earliest_by:
            by = quote(join.latest_by or join.earliest_by)
            if (join.latest_by or join.earliest_by) not in other:
                raise MappingError(f"{where}: column {join.latest_by or join.earliest_by!r} not in table {join.table}")
            order = f"{by} IS NULL DESC, {by} DESC, _rn DESC" if join.latest_by else f"{by} ASC NULLS LAST, _rn ASC"
        else:
            order = "_rn"
        names = {c: c if c not in have else f"{c}_{join.table}" for c in join.columns}
        picked = ", ".join(f"{quote(c)} AS {quote(n)}" for c, n in names.items())
        joins.append(f"LEFT JOIN (SELECT {quote(join.key)} AS _k, {picked} FROM {table_name(join.table)} "
                     f"QUALIFY row_number() OVER (PARTITION BY {quote(join.key)} ORDER BY {order}) = 1) j{i} "
                     f"ON b.{quote(join.key)} = j{i}._k")
        first = names[join.columns[0]]
        checks.append((f"{where}: no match in {join.table} on {join.key}", "joined",
                       f"{quote(first)} IS NULL AND {quote(join.key)} IS NOT NULL"))
        select += [f"j{i}.{quote(n)}" for n in names.values()]
        have += [n for n in names.values()]
    ctes.append(("joined", f"SELECT {', '.join(select)} FROM {table_name(part.from_)} b {' '.join(joins)}"))
    conditions = []
    for column, allowed in (part.where or {}).items():
        _need(column, have, where)
        conditions.append(f"{quote(column)} IN ({', '.join(p(v) for v in allowed) or 'NULL'})")
    for column in [part.day_from, part.present_from]:
        if column:
            _need(column, have, where)
    day = day_of(part.day_from) if part.day_from else "CAST(NULL AS DATE)"
    ctes.append(("dayed", f"SELECT *, {day} AS _day FROM joined" + (f" WHERE {' AND '.join(conditions)}" if conditions else "")))
    keep = "TRUE"
    if days is not None and part.day_from:
        first_day, last_day = days
        keep = "_day IS NOT NULL"
        inside = keep + (f" AND _day >= {p(first_day, 'DATE')}" if first_day else "") + \
            (f" AND _day <= {p(last_day, 'DATE')}" if last_day else "")
        checks.append((f"{target}: outside {first_day or '-'}..{last_day or '-'}", "dayed", f"_day IS NOT NULL AND NOT ({inside})"))
        checks.append((f"{where}: no day in {part.day_from}", "dayed", "_day IS NULL"))
        keep = inside
    ctes.append(("kept", f"SELECT * FROM dayed WHERE {keep}"))
    landing = list(sources()[target].column_names)
    exprs, unmapped_flags, lookups = [], [], []
    for col in landing:
        spec = part.columns.get(col)
        exprs.append(f"{_column(spec, have, p, where, col, value_checks, distinct or {}, lookups) if spec else 'CAST(NULL AS VARCHAR)'} AS {quote(col)}")
        if spec is not None and spec.value_map is not None and spec.default is None:
            unmapped_flags.append(f"{quote(col)} = {p(UNMAPPED)}")
    helpers = ["_day", f"{day_of(part.present_from) if part.present_from else 'CAST(NULL AS DATE)'} AS _present_from", "_rn"]
    if part.status is not None:
        _need(part.status.key, have, where)
        helpers.append(f"{quote(part.status.key)} AS _key")
        trial = part.status.trial_column
        if trial:
            _need(trial, have, where)
        helpers.append(f"coalesce(lower({quote(trial)}) = 'true', FALSE) AS _trial" if trial else "FALSE AS _trial")
    for i, column in enumerate(part.group_by or []):
        if column not in have:
            raise MappingError(f"{where}: group_by column {column!r} not in the data")
        helpers.append(f"{quote(column)} AS _g{i}")
    ctes.append(("mapped", f"SELECT {', '.join(exprs + helpers)} FROM kept {' '.join(lookups)}"))
    formatted = "".join(f", {quote(f'#f{i}')}" for i in range(len(lookups)))
    ordered = [("sorted", f"SELECT kept.*{formatted} FROM kept {' '.join(lookups)} ORDER BY _day, _rn"),
               ("mapped", f"SELECT {', '.join(exprs + helpers)} FROM sorted")]
    unmapped = " OR ".join(unmapped_flags) or "FALSE"
    if unmapped_flags:  # nothing to count (a query over every row) where no value_map can leave a value unmapped
        checks.append((f"{where}: unmapped values", "mapped", f"coalesce({unmapped}, FALSE)"))
    ctes.append(("rows", f"SELECT * FROM mapped WHERE NOT coalesce({unmapped}, FALSE)"))
    final = "rows"
    if part.group_by:
        ctes += _aggregate_ctes(part, landing, p)
        final = "grouped"
    in_order = None if part.group_by else [c for name, sql in ctes for c in (ordered if name == "mapped" else [(name, sql)])]
    return PartSql(ctes, final, checks, value_checks, p, in_order)


def _need(column: str, have: list[str], where: str) -> None:
    if column not in have:
        raise MappingError(f"{where}: column {column!r} not in the data")


def _column(spec: ColumnMap, have: list[str], p: Params, where: str, target: str,
            value_checks: list[tuple[str, str, str]], distinct: dict[str, str], lookups: list[str]) -> str:
    if spec.row_id:
        return row_id_sql()
    if spec.json_of is not None:
        missing = [c for c in spec.json_of if c not in have]
        if missing:
            raise MappingError(f"{where}.{target}: json_of column(s) {missing} not in the data")
        items = ", ".join(f"CASE WHEN {quote(c)} <> '' THEN {p(json.dumps(c) + ': ')} || to_json({quote(c)}) END"
                          for c in spec.json_of)
        # Every value present (the usual row): one concatenation, without concat_ws's per-item cases.
        whole = " AND ".join(f"{quote(c)} <> ''" for c in spec.json_of) or "FALSE"
        joined = " || ', ' || ".join(f"{p(json.dumps(c) + ': ')} || to_json({quote(c)})" for c in spec.json_of)
        return f"(CASE WHEN {whole} THEN '{{' || {joined} || '}}' ELSE '{{' || concat_ws(', ', {items}) || '}}' END)"
    if spec.column is None:
        return p(str(spec.constant)) if spec.constant is not None else "CAST(NULL AS VARCHAR)"
    if spec.column not in have:
        raise MappingError(f"{where}.{target}: column {spec.column!r} not in the data")
    value = quote(spec.column)
    if spec.value_map is not None:
        otherwise = p(spec.default if spec.default is not None else UNMAPPED)
        cases = " ".join(f"WHEN {p(k)} THEN {p(v) if v is not None else 'CAST(NULL AS VARCHAR)'}"
                         for k, v in spec.value_map.items())
        if spec.default is None:
            value_checks.append((f"{where}.{target}", f"{value}", f"(CASE value {cases} ELSE {otherwise} END) = {otherwise}"))
        value = f"(CASE WHEN {value} IS NULL THEN NULL {cases.replace('WHEN ', f'WHEN {value} = ')} ELSE {otherwise} END)"
    if spec.format is not None:
        value_checks.append((f"{where}.{target}:format", value, f"try_strptime(value, {p(spec.format)}) IS NULL"))
        stamp = "strftime(CAST(try_strptime({}, {}) AS TIMESTAMP) + {}, '%Y-%m-%dT%H:%M:%SZ')"
        if spec.value_map is None and spec.column in distinct:  # once per value, joined on the value
            alias, v, f = quote(f"#lookup{len(lookups)}"), quote("#v"), quote(f"#f{len(lookups)}")
            once = stamp.format(v, p(spec.format), p(spec.time, "INTERVAL"))
            lookups.append(f"LEFT JOIN (SELECT {v}, {once} AS {f} FROM {distinct[spec.column]}) {alias} "
                           f"ON kept.{value} = {alias}.{v}")
            return f  # "#f<n>": a name of its own, so the mapped columns read it after a sort too
        value = stamp.format(value, p(spec.format), p(spec.time, 'INTERVAL'))
    return value


def _aggregate_ctes(part: Part, landing: list[str], p: Params) -> list[tuple[str, str]]:
    """CTEs ending in ``grouped``: one row per ``group_by`` group of ``rows``, each landing column by its
    ``aggregate`` (default ``first``, the first non-missing value in file order; ``count`` counts the group's
    rows); min/max compare numbers as numbers when every value of the column is numeric; numeric results are
    written as integers when every value of the column is whole. Helpers: earliest ``_day``/``_present_from``,
    first ``_key``, last ``_trial``. A constant stays a constant; ``first`` of a ``group_by`` column is its key."""
    keys = [f"_g{i}" for i in range(len(part.group_by or []))]
    inner, outer, numeric = list(keys), list(keys), []
    for col in landing:
        spec = part.columns.get(col)
        agg = spec.aggregate if spec and spec.aggregate else "first"
        c = quote(col)
        plain = spec is not None and spec.column is not None and spec.value_map is None and spec.format is None
        if spec is None or (spec.constant is not None and agg in ("first", "last", "min", "max")):
            outer.append(f"{p(str(spec.constant)) if spec else 'CAST(NULL AS VARCHAR)'} AS {c}")
            continue
        if agg == "first" and plain and spec.column in (part.group_by or []):
            outer.append(f"_g{(part.group_by or []).index(spec.column)} AS {c}")
            continue
        if agg == "first":
            inner.append(f"arg_min({c}, _rn) FILTER (WHERE {c} IS NOT NULL) AS {c}")
        elif agg == "last":
            inner.append(f"arg_max({c}, _rn) FILTER (WHERE {c} IS NOT NULL) AS {c}")
        elif agg == "count":
            inner.append(f"CAST(count(*) AS DOUBLE) AS {c}")
        elif agg == "sum":
            inner.append(f"coalesce(sum(try_cast({c} AS DOUBLE)), 0) AS {c}")
        elif spec.format is not None:  # an ISO 8601 timestamp: never a number, compared as text
            inner.append(f"{agg}({c}) AS {c}")
        else:
            n = quote(f"{col}#n")
            inner += [f"{agg}(try_cast({c} AS DOUBLE)) AS {n}", f"{agg}({c}) AS {c}"]
            numeric.append(f"count({c}) = count(try_cast({c} AS DOUBLE)) AS {n}")
        if agg in ("count", "sum"):
            outer.append(f"{_number_text(c)} AS {c}")
        elif agg in ("min", "max") and spec.format is not None:
            outer.append(c)
        elif agg in ("min", "max"):
            outer.append(f"CASE WHEN num.{n} THEN {_number_text('g.' + n)} ELSE g.{c} END AS {c}")
        else:
            outer.append(c)
    inner += ["min(_day) AS _day", "min(_present_from) AS _present_from", "min(_rn) AS _rn"]
    outer += ["_day", "_present_from", "_rn"]
    if part.status is not None:
        inner += ["arg_min(_key, _rn) FILTER (WHERE _key IS NOT NULL) AS _key", "arg_max(_trial, _rn) AS _trial"]
        outer += ["_key", "_trial"]
    numbers = f"SELECT {', '.join(numeric)} FROM rows" if numeric else "SELECT TRUE AS _none"  # one row
    return [("numeric", numbers), ("grouped", f"SELECT {', '.join(outer)} FROM (SELECT {', '.join(inner)} FROM rows "
                                              f"GROUP BY {', '.join(keys)}) g CROSS JOIN numeric num")]


def _number_text(value: str) -> str:
    """A DOUBLE as text: an integer when every value of the column is whole, else the shortest repr."""
    whole = f"coalesce(bool_and({value} = round({value})) OVER (), TRUE)"
    return (f"CASE WHEN {value} IS NULL THEN NULL WHEN {whole} THEN CAST(CAST({value} AS HUGEINT) AS VARCHAR) "
            f"ELSE CAST({value} AS VARCHAR) END")


def logins_sql(final: str) -> str:
    """One login per supplier and day of the CTE ``final``: at 08:00 UTC, by the day's first user of that
    supplier in file order, or the supplier's own id when the row has no user."""
    columns = [c for c in sources()["activity_events"].column_names]
    chosen = {"event_id": "'login-' || supplier_id || '-' || strftime(_day, '%Y-%m-%d')",
              "supplier_id": "supplier_id", "user_id": "arg_min(coalesce(user_id, supplier_id), _rn)",
              "event_name": "'login'", "occurred_at": "strftime(_day, '%Y-%m-%d') || 'T08:00:00Z'"}
    select = [f"{chosen.get(c, 'CAST(NULL AS VARCHAR)')} AS {quote(c)}" for c in columns]
    return (f"SELECT {', '.join(select)}, _day, min(_rn) AS _rn FROM {final} WHERE supplier_id IS NOT NULL AND _day IS NOT NULL "
            f"GROUP BY supplier_id, _day")


def status_sql(final: str, rule: StatusRule, landing: list[str], first: date, last: date, p: Params) -> str:
    """The rows of the CTE ``final`` for every day ``first``..``last`` they are present (``_present_from``
    missing or on or before the day), with ``status`` and ``cancelled_at`` of that day. ``churn_on:
    churn_event``: ``cancelled`` from the latest churn row on or before the day (the last in file order on
    one day) unless it is a reactivation. ``churn_on: last_subscription_end``: ``cancelled`` when every
    subscription started by the day (``start_date``) has ended on or before it (``churn_date``; empty: still
    running), from the last end. Otherwise ``trialing`` where ``_trial``, else ``active``; ``cancelled_at``
    is the day cancelled from, at 00:00 UTC. Columns: ``landing``, ``_day`` (the snapshot day), ``_rn``."""
    days = (f"SELECT CAST(range AS DATE) AS _snap FROM range({p(first, 'DATE')}, "
            f"CAST({p(last, 'DATE')} + 1 AS DATE), INTERVAL 1 DAY)")
    snap = (f"(SELECT f.*, d._snap FROM {final} f JOIN ({days}) d "
            f"ON f._present_from IS NULL OR f._present_from <= d._snap) s")
    if rule.churn_on == "last_subscription_end":
        started = f"{parse_days(rule.start_date)}" if rule.start_date else "CAST(NULL AS DATE)"
        subs = (f"SELECT {quote(rule.key)} AS _k, {started} AS _s, {parse_days(rule.churn_date)} AS _e "
                f"FROM {table_name(rule.churn_table)}")
        ended = (f"SELECT k._key, k._snap, max(u._e) AS _d FROM (SELECT DISTINCT _key, _snap FROM {snap}) k "
                 f"JOIN ({subs}) u ON u._k = k._key AND (u._s IS NULL OR u._s <= k._snap) GROUP BY ALL "
                 f"HAVING NOT bool_or(u._e IS NULL OR u._e > k._snap)")
        join = f"LEFT JOIN ({ended}) c ON s._key = c._key AND s._snap = c._snap"
        cancelled = "c._d IS NOT NULL"
    else:
        reactivated = f"coalesce(lower({quote(rule.reactivation_column)}) = 'true', FALSE)" if rule.reactivation_column else "FALSE"
        churn = (f"SELECT {quote(rule.key)} AS _k, {parse_days(rule.churn_date)} AS _d, {reactivated} AS _re "
                 f"FROM {table_name(rule.churn_table)} WHERE {parse_days(rule.churn_date)} IS NOT NULL "
                 f"QUALIFY row_number() OVER (PARTITION BY {quote(rule.key)}, _d ORDER BY _rn DESC) = 1")
        join = f"ASOF LEFT JOIN ({churn}) c ON s._key = c._k AND s._snap >= c._d"
        cancelled = "c._d IS NOT NULL AND NOT c._re"
    select = []
    for col in landing:
        if col == "status":
            select.append(f"CASE WHEN {cancelled} THEN 'cancelled' WHEN s._trial THEN 'trialing' ELSE 'active' END AS status")
        elif col == "cancelled_at":
            select.append(f"CASE WHEN {cancelled} THEN strftime(c._d, '%Y-%m-%d') || 'T00:00:00Z' END AS cancelled_at")
        else:
            select.append(f"s.{quote(col)}")
    return f"SELECT {', '.join(select)}, s._snap AS _day, s._rn FROM {snap} {join}"
