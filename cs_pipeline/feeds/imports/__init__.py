"""Importing a team's own data: an import mapping (YAML, validated) turns external tables (CSV) into
the four landing sources, one file per source per day, ready for the daily pipeline.

A mapping names the external tables, the days to write, and for each landing source one or more
*parts*: the table rows come from, joins that bring columns from other tables (first match, or the
latest by a column), an optional row filter, and per landing column a source column, a constant, a
value map (with a default, or unmapped values are reported and the record dropped), a timestamp format
and time of day. Event sources are split by the day of ``day_from``; snapshot sources (suppliers) are
written whole for every day, with rows present from ``present_from`` and a status derived from a churn
table. ``login_per_active_day`` adds one login per supplier and active day (for products whose export
has usage but no sessions). What did not map is counted in the returned report.

The package follows the import's seams: ``spec`` (the mapping model and its validation), ``read``
(reading the exports into DuckDB), ``transform`` (each part as SQL), ``write`` (``run_import``: the queries
of a mapping, the counts of what did not map) and ``days`` (each query's rows sorted by day in ranges written
side by side, split into the day files). The public names are importable from here.
"""

from cs_pipeline.feeds.imports.read import CHUNK_ROWS, read_table
from cs_pipeline.feeds.imports.spec import (
    AGGREGATES,
    ColumnMap,
    Delimiter,
    ImportMapping,
    ImportReport,
    Join,
    MappingError,
    Part,
    StatusRule,
    TableSpec,
    check_event_names,
    load_mapping,
)
from cs_pipeline.feeds.imports.write import run_import

__all__ = [
    "AGGREGATES", "CHUNK_ROWS", "ColumnMap", "Delimiter", "ImportMapping", "ImportReport", "Join", "MappingError",
    "Part", "StatusRule", "TableSpec", "check_event_names", "load_mapping", "read_table", "run_import",
]
