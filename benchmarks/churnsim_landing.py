"""Landing files from the churnsim_crm dataset (../shared/data/churnsim_crm, see its README).

A stopgap loader for ``benchmarks/score_validity.py`` until import mappings can express a churn table
derived from subscription periods (a later issue): it turns the simulator's accounts, subscriptions and
events into the four landing sources, one file per source per day, like ``cs-pipeline import`` does.

What it derives (and how it reduces the data, said in its report):

- **suppliers** (daily snapshot): one row per account from its first subscription start
  (``signed_up_at`` = ``onboarded_at`` = that day, 09:00 UTC). An account's subscription rows are merged
  into periods (a row that starts within 7 days of the previous end continues the period, README rule);
  it is cancelled on its last ``end_date`` if that is on or before the dataset's label end (2022-10-01),
  and shows ``status`` cancelled with ``cancelled_at`` from that day on. Gaps between earlier periods are
  not churn here (the README's label counts only the last end). Tier from the plan (starter, basic ->
  starter; standard -> professional; advanced -> scale; premier -> enterprise), mrr the plan's mrr,
  country ``US`` (the data holds US states), vendor category ``other`` (not a wedding product).
- **activity_events**: the 25 CRM event types mapped onto the WedSync catalogue by what they do
  (``EVENT_MAP``: leads/contacts -> client_*, opportunities -> journey_*, meetings -> form_* (scheduled
  -> sent, held -> completed), searches -> timeline_shared, quotes -> payment_link_sent, emails and
  calls -> message_sent, lists and competitors -> non-core features), plus one ``login`` per account and
  active day (the simulator has no sessions). **Reduced**: 4.6 M events are too many for a shared
  2-core machine, so at most ``cap`` events (default 3) are kept per account, day and mapped event
  name, with ids ``cs-<account>-<day>-<event_name>-<n>``. Everything "used on a day" (adoption, active
  days, recency) is exact; counts and completion rates are of the capped events.
- **billing_events**: ``invoice_paid`` on each plan row's start day (amount = mrr x bill period months x
  (1 - discount)), ``subscription_cancelled`` on the churn day.
- **support_tickets**: none (header-only files).

Event times are local without a zone: they are read as UTC.
"""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from cs_pipeline.core.landing_contract import landing_file_name
from cs_pipeline.ingest.sources import SOURCE_NAMES, sources

LABEL_END = date(2022, 10, 1)
"""The simulation's end: churn is only observed up to this day (README)."""
PERIOD_GAP_DAYS = 7
"""A subscription row starting within this many days of the previous end continues the period (README)."""

EVENT_MAP = {
    "add_lead": "client_added", "add_contact": "client_added",
    "edit_lead": "client_updated", "edit_contact": "client_updated", "unsub_lead": "client_updated",
    "create_opportunity": "journey_started", "advance_stage": "journey_created",
    "win_opportunity": "journey_completed", "lose_opportunity": "journey_failed",
    "disqualify_opportunity": "journey_failed",
    "schedule_meeting": "form_sent", "meeting": "form_completed", "edit_meeting": "form_created",
    "cancel_meeting": "form_created",
    "create_search": "timeline_shared", "search": "timeline_shared", "edit_search": "timeline_shared",
    "delete_search": "timeline_shared",
    "quote": "payment_link_sent",
    "email_lead": "message_sent", "email_list": "message_sent", "call_lead": "message_sent",
    "create_list": "document_uploaded", "delete_list": "document_uploaded",
    "add_competitor": "integration_connected",
}
"""churnsim event type -> WedSync event name (DOMAIN.md catalogue)."""

TIER_OF_PLAN = {"starter": "starter", "basic": "starter", "standard": "professional", "advanced": "scale",
                "premier": "enterprise"}


def churnsim_suppliers(accounts: pd.DataFrame, subscriptions: pd.DataFrame,
                       label_end: date = LABEL_END) -> pd.DataFrame:
    """One row per account with a subscription: signup, churn day and latest plan.

    Args:
        accounts: ``account_id`` (str), ``country``.
        subscriptions: ``account_id`` (str), ``product``, ``start_date``, ``end_date`` (YYYY-MM-DD),
            ``mrr``, ``bill_period_months``, ``discount``.
        label_end: churn is only counted on or before this day.

    Returns:
        DataFrame ``supplier_id`` (str), ``signup`` (date: first subscription start), ``cancelled``
        (date or None: the last period's end when on or before ``label_end``), ``tier``, ``mrr`` (float,
        latest plan row started by ``label_end``). Accounts without subscriptions are left out.
    """
    subs = subscriptions.assign(start=pd.to_datetime(subscriptions["start_date"]),
                                end=pd.to_datetime(subscriptions["end_date"]))
    out = []
    for account, rows in subs.sort_values(["account_id", "start"]).groupby("account_id", sort=False):
        period_end = None
        for start, end in zip(rows["start"], rows["end"]):
            if period_end is None or start <= period_end + pd.Timedelta(days=PERIOD_GAP_DAYS):
                period_end = end if period_end is None else max(period_end, end)
            else:  # a new period after a gap: only the last period's end can be the churn
                period_end = end
        last_end = period_end.date()
        plans = rows.loc[~rows["product"].isin(["meetings", "search_unlimited"]) & (rows["start"].dt.date <= label_end)]
        plan = plans.iloc[-1] if len(plans) else rows.iloc[-1]
        out.append({"supplier_id": str(account), "signup": rows["start"].min().date(),
                    "cancelled": last_end if last_end <= label_end else None,
                    "tier": TIER_OF_PLAN.get(str(plan["product"]).split("_")[0], "starter"),
                    "mrr": float(plan["mrr"])})
    return pd.DataFrame(out)


def churnsim_activity(events_path: Path, start: date, end: date, cap: int = 3,
                      chunk_rows: int = 1_000_000) -> tuple[pd.DataFrame, int]:
    """The events of ``events_path`` on days ``start``..``end``, mapped and capped.

    Returns:
        (DataFrame ``supplier_id`` (str), ``day`` (str YYYY-MM-DD), ``event_name``, ``first_time``
        (str HH:MM:SS), ``count`` (events kept, 1..cap), number of source events read).
    """
    parts, read = [], 0
    lo, hi = start.isoformat(), end.isoformat()
    for chunk in pd.read_csv(events_path, dtype=str, chunksize=chunk_rows):
        read += len(chunk)
        day = chunk["event_time"].str.slice(0, 10)
        chunk = chunk.assign(day=day, time=chunk["event_time"].str.slice(11, 19),
                             event_name=chunk["event_type"].map(EVENT_MAP)).loc[(day >= lo) & (day <= hi)]
        parts.append(chunk.groupby(["account_id", "day", "event_name"], sort=False)
                     .agg(first_time=("time", "min"), count=("time", "size")).reset_index())
    daily = pd.concat(parts, ignore_index=True).groupby(["account_id", "day", "event_name"], sort=False) \
        .agg(first_time=("first_time", "min"), count=("count", "sum")).reset_index()
    daily["count"] = daily["count"].clip(upper=cap)
    return daily.rename(columns={"account_id": "supplier_id"}), read


def write_churnsim_landing(source_dir: Path, out_dir: Path, start: date = date(2022, 1, 1),
                           end: date = LABEL_END, cap: int = 3) -> dict:
    """Write the landing files (suppliers, activity_events, billing_events, support_tickets) for every
    day ``start``..``end`` into ``out_dir``.

    Returns:
        A report: rows written per source, source events read, accounts, churners, and ``reduction``
        (what was sampled away, in words).
    """
    accounts = pd.read_csv(source_dir / "accounts.csv.gz", dtype=str, keep_default_na=False)
    subs = pd.read_csv(source_dir / "subscriptions.csv.gz", dtype={"account_id": str})
    suppliers = churnsim_suppliers(accounts, subs)
    activity, read = churnsim_activity(source_dir / "events.csv.gz", start, end, cap)
    out_dir.mkdir(parents=True, exist_ok=True)
    cols = {name: list(sources()[name].column_names) for name in SOURCE_NAMES}
    rows: Counter = Counter()

    # Activity: expand the capped counts into rows with ids; one login per account and active day.
    reps = activity.loc[activity.index.repeat(activity["count"])].copy()
    reps["n"] = reps.groupby(["supplier_id", "day", "event_name"]).cumcount() + 1
    reps["event_id"] = "cs-" + reps["supplier_id"] + "-" + reps["day"] + "-" + reps["event_name"] + "-" + reps["n"].astype(str)
    reps["occurred_at"] = reps["day"] + "T" + reps["first_time"] + "Z"
    logins = activity.groupby(["supplier_id", "day"], sort=False)["first_time"].min().reset_index()
    logins = logins.assign(event_name="login", event_id="cs-" + logins["supplier_id"] + "-" + logins["day"] + "-login",
                           occurred_at=logins["day"] + "T" + logins["first_time"] + "Z")
    events = pd.concat([reps, logins], ignore_index=True)

    # Billing: paid plan invoices and the churn.
    subs = subs.assign(start=pd.to_datetime(subs["start_date"]).dt.date)
    paid = subs.assign(
        billing_event_id="cs-inv-" + subs.index.astype(str), supplier_id=subs["account_id"],
        occurred_at=subs["start_date"] + "T06:00:00Z", event_type="invoice_paid", currency="USD",
        amount=(subs["mrr"] * subs["bill_period_months"] * (1 - subs["discount"].fillna(0))).round(2),
        tier=[TIER_OF_PLAN.get(p.split("_")[0]) if p not in ("meetings", "search_unlimited") else None
              for p in subs["product"]], day=subs["start_date"])
    churned = suppliers.dropna(subset=["cancelled"])
    cancels = pd.DataFrame({"billing_event_id": "cs-cancel-" + churned["supplier_id"],
                            "supplier_id": churned["supplier_id"],
                            "day": [d.isoformat() for d in churned["cancelled"]],
                            "event_type": "subscription_cancelled", "amount": 0.0, "currency": "USD", "tier": None})
    cancels["occurred_at"] = cancels["day"] + "T18:00:00Z"
    billing = pd.concat([paid, cancels], ignore_index=True)

    snap = suppliers.assign(business_name="Account " + suppliers["supplier_id"], email=None, vendor_category="other",
                            country="US", currency="USD",
                            signed_up_at=[f"{d.isoformat()}T09:00:00Z" for d in suppliers["signup"]],
                            onboarded_at=[f"{d.isoformat()}T10:00:00Z" for d in suppliers["signup"]])
    by_day_events = dict(tuple(events.groupby("day")))
    by_day_billing = dict(tuple(billing.groupby("day")))
    day = start
    while day <= end:
        iso = day.isoformat()
        present = snap.loc[snap["signup"] <= day].copy()
        gone = present["cancelled"].notna() & (present["cancelled"] <= day)
        present["status"] = np.where(gone, "cancelled", "active")
        present["cancelled_at"] = [f"{c.isoformat()}T00:00:00Z" if g else None for c, g in zip(present["cancelled"], gone)]
        frames = {"suppliers": present,
                  "activity_events": by_day_events.get(iso, pd.DataFrame(columns=cols["activity_events"])),
                  "billing_events": by_day_billing.get(iso, pd.DataFrame(columns=cols["billing_events"])),
                  "support_tickets": pd.DataFrame(columns=cols["support_tickets"])}
        for name, frame in frames.items():
            frame.reindex(columns=cols[name]).to_csv(out_dir / landing_file_name(name, day), index=False)
            rows[name] += len(frame)
        day += timedelta(days=1)
    return {"rows": dict(rows), "source_events_read": read, "accounts": int(len(suppliers)),
            "churners": int(suppliers["cancelled"].notna().sum()),
            "reduction": f"at most {cap} events per account, day and mapped event name (of {read:,} source events, "
                         f"{int(activity['count'].sum()):,} kept on {start}..{end}) plus one login per active day"}


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, default=Path("../shared/data/churnsim_crm"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cap", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(write_churnsim_landing(args.source, args.out, cap=args.cap), default=str))
