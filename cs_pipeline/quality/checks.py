"""The Dagster side of the quality gates: one asset-check result from the gate results of a run's days.

Stages call the quality package (``quality.gx`` for the suites, this module for the check result);
the quality package imports no stage."""

from __future__ import annotations

from datetime import date

import dagster as dg

from cs_pipeline.core.metadata import markdown_table
from cs_pipeline.quality.gx import GateResult


def check_result(check_name: str, results: dict[date, GateResult]) -> dg.AssetCheckResult:
    """One Dagster check result for the days of a run: fails (ERROR) when any day failed a critical
    expectation, fails with WARN when only warnings failed; per-expectation details as metadata."""
    failing_days = {d: r for d, r in results.items() if not r.passed}
    blocking = any(r.blocking_failed for r in results.values())
    shown_day, shown = (next(iter(failing_days.items())) if failing_days else max(results.items(), key=lambda kv: kv[0])) \
        if results else (None, None)
    metadata: dict[str, dg.MetadataValue] = {
        "days_validated": dg.MetadataValue.int(len(results)),
        "days_failed": dg.MetadataValue.text(", ".join(str(d) for d in sorted(failing_days)) or "none"),
        "gate_seconds": dg.MetadataValue.float(round(sum(r.seconds for r in results.values()), 3)),
    }
    if shown is not None:
        metadata["day_shown"] = dg.MetadataValue.text(str(shown_day))
        metadata["expectations"] = dg.MetadataValue.md(_details_table(shown.details))
        metadata["failed_expectations"] = dg.MetadataValue.json([d for d in shown.details if not d["success"]])
        if shown.docs_path:
            metadata["data_docs"] = dg.MetadataValue.path(shown.docs_path)
    return dg.AssetCheckResult(
        check_name=check_name,
        passed=not failing_days,
        severity=dg.AssetCheckSeverity.ERROR if blocking else dg.AssetCheckSeverity.WARN,
        metadata=metadata,
    )


def _details_table(details: list[dict]) -> str:
    return markdown_table([{
        "expectation": d["expectation"], "column": d["column"], "severity": d["severity"],
        "ok": "yes" if d["success"] else "NO",
        "observed": None if d["observed_value"] is None else str(d["observed_value"])[:40],
        "unexpected": d["unexpected_count"],
        "sample": ", ".join(str(v) for v in d["unexpected_sample"])[:60],
    } for d in details], empty="(no expectations)", max_cell=None)
