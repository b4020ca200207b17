"""Dagster side of re-runs (issue 15): a run of an old day rebuilds the later days that depend on it
(``cs_pipeline.core.window.DayWindow.rebuild``); these helpers report those later partitions as
materialised by the same run, and let downstream assets (customer_health) find and rescore them.

(No ``from __future__ import annotations`` here: Dagster inspects the context annotation.)
"""

from datetime import date, timedelta

import dagster as dg

#: Metadata key of the materialisations a run reports for partitions outside its own that it rebuilt.
REBUILT_AFTER = "rebuilt_after"

def report_rebuilt_partitions(context: dg.AssetExecutionContext, keys, first: date, end: date,
                              partitions_def: dg.PartitionsDefinition) -> list[date]:
    """Log a materialisation of ``keys`` for each day in [first, end] outside the run's own partitions
    (the later days a re-run of an old day rebuilt), with metadata ``rebuilt_after`` = the run's days.
    Returns those days. Call it before the asset returns, so the run's own partitions stay the newest
    events (the intervention sensor treats them as a backfill of a past day)."""
    own = set(context.partition_keys)
    valid = set(partitions_def.get_partition_keys())
    days = [first + timedelta(days=i) for i in range((end - first).days + 1)]
    extra = [d for d in days if d.isoformat() not in own and d.isoformat() in valid]
    label = f"{context.partition_keys[0]}..{context.partition_keys[-1]}"
    for key in keys:
        for day in extra:
            context.log_event(dg.AssetMaterialization(asset_key=key, partition=day.isoformat(),
                                                      metadata={REBUILT_AFTER: label}))
    return extra


def rebuilt_days(context: dg.AssetExecutionContext, key: dg.AssetKey) -> list[date]:
    """Days (oldest first) of ``key``'s partitions that this run rebuilt beyond its own partitions
    (reported by ``report_rebuilt_partitions``); empty for an ordinary daily run."""
    records = context.instance.get_records_for_run(
        run_id=context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    own = set(context.partition_keys)
    days = set()
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None or event.asset_key != key or event.partition is None or event.partition in own:
            continue
        if REBUILT_AFTER in (event.event_specific_data.materialization.metadata or {}):
            days.add(date.fromisoformat(event.partition))
    return sorted(days)
