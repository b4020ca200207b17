"""Dagster definitions of the ingest stage: the assets ``raw/<source>`` (one per source, daily partitions,
COPY with quarantine, a blocking Great Expectations check each) and the landing-zone resource.

(No ``from __future__ import annotations`` here: Dagster inspects the context annotation.)
"""


from datetime import datetime
from pathlib import Path

import dagster as dg

from cs_pipeline.core.landing_contract import LANDING_SOURCES, scan_landing_dir
from cs_pipeline.core.metadata import markdown_table
from cs_pipeline.core.partitions import DAILY_FRESHNESS, partition_days
from cs_pipeline.core.resources import WarehouseResource
from cs_pipeline.ingest.gates import raw_gate, raw_gate_range
from cs_pipeline.ingest.landing import LandingFileError, find_landing_file, open_records
from cs_pipeline.ingest.loader import LoadReport, load_partition
from cs_pipeline.ingest.sources import SOURCE_NAMES, sources
from cs_pipeline.quality.checks import check_result
from cs_pipeline.quality.gx import GateRunner
from cs_pipeline.core.settings import Settings

PER_DAY_GATES_UP_TO = 7  # longer ranges (backfills) are validated as one batch
IGNORED_SHOWN = 20  # ignored file names listed in a run's log and metadata (the count is always given)


class LandingZoneResource(dg.ConfigurableResource):
    """The landing directory (``CS_PIPELINE_LANDING_DIR``, default ``$CS_PIPELINE_HOME/landing``)."""

    directory: str

    @property
    def path(self) -> Path:
        return Path(self.directory)


def _iso(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def ignored_for(ignored: list[str], source_name: str) -> list[str]:
    """The names of ``ignored`` (``scan_landing_dir``: not landing files) that ``raw/<source_name>`` lists,
    so that across the four assets each is listed once: names starting with ``<source_name>_``, and every
    name starting with no source's prefix for the first source (``suppliers``)."""
    def owner(name: str) -> str:
        return next((s for s in LANDING_SOURCES if name.startswith(f"{s}_")), LANDING_SOURCES[0])
    return [name for name in ignored if owner(name) == source_name]


def report_metadata(reports: list[LoadReport]) -> dict[str, dg.MetadataValue]:
    """Materialisation metadata for one or more partition loads (totals, and per day for ranges)."""
    loaded = sum(r.rows_loaded for r in reports)
    rejected = sum(r.rows_rejected for r in reports)
    reasons: dict[str, int] = {}
    for r in reports:
        for reason, count in r.rejected_by_reason.items():
            reasons[reason] = reasons.get(reason, 0) + count
    times = [t for r in reports for t in (r.min_time, r.max_time) if t is not None]
    meta: dict[str, dg.MetadataValue] = {
        "dagster/row_count": dg.MetadataValue.int(loaded),
        "rows_loaded": dg.MetadataValue.int(loaded),
        "rows_rejected": dg.MetadataValue.int(rejected),
        "records_in_files": dg.MetadataValue.int(sum(r.records_in_file for r in reports)),
        # Measured: rows counted in raw.<source> and raw.rejected_rows after each load (LoadReport).
        "conservation_holds": dg.MetadataValue.bool(all(r.conserved for r in reports)),
        "conservation": dg.MetadataValue.text(
            f"records {sum(r.records_in_file for r in reports)} = loaded {loaded} + rejected {rejected} "
            "(counted in the tables after the load)"
            if all(r.conserved for r in reports) else
            f"NOT CONSERVED: records {sum(r.records_in_file for r in reports)} != loaded {loaded} + "
            f"rejected {rejected} (counted in the tables after the load)"),
        "rejected_by_reason": dg.MetadataValue.json(dict(sorted(reasons.items(), key=lambda kv: -kv[1]))),
        "distinct_suppliers": dg.MetadataValue.int(max((r.distinct_suppliers for r in reports), default=0)),
        "load_seconds": dg.MetadataValue.float(round(sum(r.load_seconds for r in reports), 3)),
        "files": dg.MetadataValue.text(", ".join(r.source_file for r in reports)),
        "file_bytes": dg.MetadataValue.int(sum(r.file_bytes for r in reports)),
    }
    if times:
        meta["min_time"] = dg.MetadataValue.text(_iso(min(times)))
        meta["max_time"] = dg.MetadataValue.text(_iso(max(times)))
    if reports and reports[0].preview:
        meta["preview"] = dg.MetadataValue.md(markdown_table(reports[0].preview))
    if len(reports) > 1:
        meta["per_day"] = dg.MetadataValue.md(markdown_table([
            {"day": r.partition_date.isoformat(), "file": r.source_file, "loaded": r.rows_loaded,
             "rejected": r.rows_rejected, "seconds": round(r.load_seconds, 2)} for r in reports
        ]))
    return meta


def build_ingest_asset(source_name: str, partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """The asset ``raw/<source_name>``: loads each partition's landing file with COPY.

    A range of partitions loads in one run (single-run backfill policy), one transaction per day.
    Every file of the range is checked (present, readable, required columns) before any day is
    loaded, so a missing file fails the run without changing anything.
    """
    source = sources()[source_name]

    @dg.asset(
        name=source_name,
        key_prefix="raw",
        group_name="ingest",
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        freshness_policy=DAILY_FRESHNESS,
        kinds={"python", "postgres"},
        description=f"raw.{source_name}: {source.description} Loaded with COPY from "
        f"{source_name}_<YYYY-MM-DD>.<csv|jsonl|parquet>[.gz]; rejected records go to raw.rejected_rows.",
        metadata={"table": f"raw.{source_name}", "columns": ", ".join(source.column_names)},
        check_specs=[dg.AssetCheckSpec(
            f"gx_raw_{source_name}", asset=["raw", source_name], blocking=True,
            description=f"Great Expectations suite expectations/raw_{source_name}.json on each loaded day; "
                        "critical failures block the day's downstream assets.")],
    )
    def _ingest(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
                landing: LandingZoneResource) -> dg.MaterializeResult:
        days = partition_days(context)
        ignored = ignored_for(scan_landing_dir(landing.path).ignored, source_name)
        if ignored:
            shown = ", ".join(ignored[:IGNORED_SHOWN]) + (f" and {len(ignored) - IGNORED_SHOWN} more"
                                                          if len(ignored) > IGNORED_SHOWN else "")
            context.log.warning(f"{len(ignored)} file(s) in {landing.path} ignored: not named "
                                f"<source>_<YYYY-MM-DD>.<csv|jsonl|parquet>[.gz]: {shown}")
        files = []
        problems = []
        for day in days:
            try:
                path = find_landing_file(landing.path, source_name, day)
                open_records(path, source)  # header and readability check only
                files.append((day, path))
            except LandingFileError as exc:
                problems.append(str(exc))
        if problems:
            raise dg.Failure(
                # The first problem in the description itself: the terminal prints it (issue 29).
                description=f"{problems[0]}" + (f" (and {len(problems) - 1} more landing file problem(s))"
                                                if len(problems) > 1 else "") + "; nothing was loaded",
                metadata={"problems": dg.MetadataValue.md("\n".join(f"- {p}" for p in problems))},
            )
        reports: list[LoadReport] = []
        gates = {}
        runner = GateRunner(warehouse.settings().home / "gx_data_docs")
        with warehouse.connect() as conn:
            for day, path in files:
                report = load_partition(conn, source, path, day)
                reports.append(report)
                context.log.info(
                    f"{source_name} {day}: {report.rows_loaded} loaded, {report.rows_rejected} rejected "
                    f"from {path.name} in {report.load_seconds:.2f}s"
                )
                if len(files) <= PER_DAY_GATES_UP_TO:
                    gates[day] = raw_gate(conn, runner, report, context.run.run_id)
            if len(files) > PER_DAY_GATES_UP_TO:  # a backfill: one validation of the whole range
                gates[files[-1][0]] = raw_gate_range(conn, runner, reports, context.run.run_id)
        for day, gate in gates.items():
            if not gate.passed:
                context.log.warning(f"quality gate raw_{source_name} {day}: {gate.failed} expectation(s) "
                                    f"failed ({gate.severity})")
        metadata = report_metadata(reports)
        if ignored:
            metadata["ignored_files"] = dg.MetadataValue.json({"count": len(ignored), "names": ignored[:IGNORED_SHOWN]})
        return dg.MaterializeResult(metadata=metadata,
                                    check_results=[check_result(f"gx_raw_{source_name}", gates)])

    return _ingest


def build_ingest_assets(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The four ingest assets, in DOMAIN.md's order."""
    return [build_ingest_asset(name, partitions_def) for name in SOURCE_NAMES]


def build_defs(settings: Settings, partitions_def: dg.PartitionsDefinition) -> dg.Definitions:
    """The ingest stage: the four ``raw/<source>`` assets on ``partitions_def`` and the ``landing``
    resource (``CS_PIPELINE_LANDING_DIR``)."""
    return dg.Definitions(
        assets=build_ingest_assets(partitions_def),
        resources={"landing": LandingZoneResource(directory=str(settings.landing_dir))},
    )
