"""The four raw sources of DOMAIN.md ("Raw inputs"): columns, types and the rules a record must pass.

Pure data: no database, no Dagster. The event-name value set is read from the feature catalogue in force
(``cs_pipeline.core.catalogue``: WedSync's seed ``dbt_project/seeds/feature_catalogue.csv``, or a team's own
through ``CS_PIPELINE_FEATURE_CATALOGUE`` or a mapping's ``catalogue:``), the same file dbt loads as the
seed, so that there is one catalogue for ingestion and the marts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cs_pipeline.core.catalogue import event_names
from cs_pipeline.core.landing_contract import LANDING_SOURCES

ColumnType = Literal["text", "timestamptz", "numeric", "integer", "jsonb"]

VENDOR_CATEGORIES = (
    "photographer", "videographer", "venue", "caterer", "florist", "planner",
    "dj_band", "hair_makeup", "cake", "stationery", "other",
)
TIERS = ("free", "starter", "professional", "scale", "enterprise")
SUPPLIER_STATUSES = ("trialing", "active", "paused", "cancelled")
TICKET_CHANNELS = ("email", "chat", "phone")
TICKET_CATEGORIES = ("onboarding", "technical", "billing", "feature_request", "other")
TICKET_PRIORITIES = ("low", "normal", "high", "urgent")
BILLING_EVENT_TYPES = (
    "invoice_paid", "invoice_failed", "subscription_upgraded", "subscription_downgraded",
    "subscription_cancelled", "subscription_reactivated", "trial_started", "trial_converted",
)


@dataclass(frozen=True)
class Column:
    """One column of a raw source.

    Attributes:
        name: column name in the landing file and in ``raw.<source>``.
        type: PostgreSQL type of the column in the raw table.
        required: a null or blank value rejects the record (``missing_required``).
        allowed: the value set for enums (``invalid_enum``).
        pattern: a regular expression (RE2 syntax) the value must match (``invalid_format``).
        min_value, max_value: inclusive bounds for numbers (``out_of_range``).
        day_window: ``"inside"``: the timestamp must fall in the file's UTC day; ``"not_after"``: it
            must not be later than the end of that day (``outside_partition_day``).
        unique: unique within one file (``duplicate_key``); the first record wins.
        pii: personal data (an owner's e-mail, a sole trader's business name): masked in UI previews.
    """

    name: str
    type: ColumnType = "text"
    required: bool = False
    allowed: tuple[str, ...] | None = None
    pattern: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    day_window: Literal["inside", "not_after"] | None = None
    unique: bool = False
    pii: bool = False


@dataclass(frozen=True)
class Source:
    """A raw source: its name (also the table ``raw.<name>`` and the landing file prefix) and columns."""

    name: str
    columns: tuple[Column, ...]
    description: str = ""
    time_column: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.required)

    @property
    def unique_column(self) -> str | None:
        return next((c.name for c in self.columns if c.unique), None)


def catalogue_event_names(path: Path | None = None) -> tuple[str, ...]:
    """Event names of the feature catalogue at ``path`` (default: the one in force), in file order.

    Raises:
        cs_pipeline.core.catalogue.CatalogueError: the file is missing or invalid (the message names the
            file and the fix).
    """
    return event_names(path)


_COUNTRY = r"^[A-Z]{2}$"
_CURRENCY = r"^[A-Z]{3}$"


def build_sources(event_names: tuple[str, ...]) -> dict[str, Source]:
    """The four sources of DOMAIN.md, keyed by name, with ``event_names`` as the event catalogue."""
    return {
        "suppliers": Source(
            name="suppliers",
            description="Daily full snapshot of all supplier accounts.",
            columns=(
                Column("supplier_id", required=True, unique=True),
                Column("business_name", required=True, pii=True),
                Column("email", pii=True),
                Column("vendor_category", allowed=VENDOR_CATEGORIES),
                Column("tier", allowed=TIERS),
                Column("country", pattern=_COUNTRY),
                Column("signed_up_at", "timestamptz", required=True, day_window="not_after"),
                Column("onboarded_at", "timestamptz", day_window="not_after"),
                Column("status", allowed=SUPPLIER_STATUSES),
                Column("cancelled_at", "timestamptz", day_window="not_after"),
                Column("mrr", "numeric", min_value=0),
                Column("currency", pattern=_CURRENCY),
            ),
        ),
        "activity_events": Source(
            name="activity_events",
            description="Product events that occurred that day.",
            time_column="occurred_at",
            columns=(
                Column("event_id", required=True, unique=True),
                Column("supplier_id", required=True),
                Column("user_id"),
                Column("event_name", required=True, allowed=event_names),
                Column("occurred_at", "timestamptz", required=True, day_window="inside"),
                Column("client_id"),
                Column("properties", "jsonb"),
            ),
        ),
        "support_tickets": Source(
            name="support_tickets",
            description="Support tickets opened or updated that day.",
            time_column="opened_at",
            columns=(
                Column("ticket_id", required=True, unique=True),
                Column("supplier_id", required=True),
                Column("opened_at", "timestamptz", required=True, day_window="not_after"),
                Column("resolved_at", "timestamptz", day_window="not_after"),
                Column("channel", allowed=TICKET_CHANNELS),
                Column("category", allowed=TICKET_CATEGORIES),
                Column("priority", allowed=TICKET_PRIORITIES),
                Column("csat", "integer", min_value=1, max_value=5),
                Column("first_response_minutes", "numeric", min_value=0),
            ),
        ),
        "billing_events": Source(
            name="billing_events",
            description="Billing events (invoices, subscription changes, trials).",
            time_column="occurred_at",
            columns=(
                Column("billing_event_id", required=True, unique=True),
                Column("supplier_id", required=True),
                Column("occurred_at", "timestamptz", required=True, day_window="inside"),
                Column("event_type", required=True, allowed=BILLING_EVENT_TYPES),
                Column("amount", "numeric", min_value=0),
                Column("currency", pattern=_CURRENCY),
                Column("tier", allowed=TIERS),
            ),
        ),
    }


def sources() -> dict[str, Source]:
    """The four sources with the feature catalogue in force (``catalogue_event_names``)."""
    return build_sources(catalogue_event_names())


#: The four sources in DOMAIN.md's order: the landing contract's (``cs_pipeline.core.landing_contract``).
SOURCE_NAMES: tuple[str, ...] = LANDING_SOURCES
