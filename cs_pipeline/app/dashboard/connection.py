"""The dashboard's database connection: the read-only BI role, and the one-time set-up that lets it log in.

The dashboard never connects as the pipeline's owner role. ``dashboard_conninfo`` is the only place its
connection string is made, so that a password (scram-sha-256 on the embedded server, or an external
server's BI login) is added in one place. ``prepare_dashboard_access`` runs once, as the owner role, before
the app starts (``cs-pipeline dashboard``): it gives the BI role LOGIN on the embedded server and creates the
two intervention views the dashboard reads from ``marts`` (personal data left out).
"""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cs_pipeline.core.access import ensure_bi_role
from cs_pipeline.core.warehouse import embedded_password, resolve_endpoints
from cs_pipeline.core.settings import ENV_DASHBOARD_CONNINFO, ENV_DASHBOARD_DATABASE_URL, Settings

__all__ = ["ENV_DASHBOARD_CONNINFO", "ENV_DASHBOARD_DATABASE_URL", "dashboard_conninfo", "prepare_dashboard_access"]
#: The BI role's generated login on the embedded server (``$CS_PIPELINE_HOME/secrets/``, mode 0600).
BI_SECRET_NAME = "bi_reader_password"
#: Every session of the dashboard's connection is read-only, on top of the role's grants.
READ_ONLY_OPTIONS = "-c default_transaction_read_only=on -c TimeZone=UTC"

#: Views in ``marts`` over the intervention stage's ops tables: what the dashboard may show of them.
#: No recipient address, message id, note or free text written by a person.
INTERVENTION_VIEWS = {
    "marts.dashboard_interventions": """
        SELECT intervention_id, supplier_id, rule, channel, as_of_date, template, status, reason, scheduled_for,
               sent_at, health_score, risk_level, drivers, run_id, created_at
        FROM ops.interventions""",
    "marts.dashboard_call_tasks": """
        SELECT interaction_id, intervention_id, supplier_id, interaction_type, scheduled_for, completed_at, outcome
        FROM ops.support_interactions""",
}
_VIEW_SOURCES = {"marts.dashboard_interventions": "ops.interventions",
                 "marts.dashboard_call_tasks": "ops.support_interactions"}


def dashboard_conninfo(settings: Settings) -> str:
    """The libpq conninfo the dashboard connects with: the BI role (``settings.bi_role``), read-only.

    Order: ``CS_PIPELINE_DASHBOARD_CONNINFO`` (set by ``cs-pipeline dashboard`` for its child process),
    then ``CS_PIPELINE_DASHBOARD_DATABASE_URL`` (an explicit BI login), else the warehouse's conninfo with
    the user replaced by the BI role and, on the embedded server, the BI role's generated password
    (``$CS_PIPELINE_HOME/secrets/bi_reader_password``; the server starts if needed).
    Every variant gets ``default_transaction_read_only=on`` and UTC.

    Raises:
        cs_pipeline.core.warehouse.WarehouseError: the embedded server could not start.
    """
    given = settings.dashboard.conninfo or settings.dashboard.database_url
    if given:
        params = conninfo_to_dict(given.get_secret_value())
    else:
        params = conninfo_to_dict(resolve_endpoints(settings).warehouse)
        params.pop("password", None)
        params["user"] = settings.bi_role
        if settings.embedded:  # scram-sha-256: the BI role logs in with its own generated secret
            params["password"] = embedded_password(settings.home, BI_SECRET_NAME)
    params["options"] = " ".join(filter(None, [params.get("options"), READ_ONLY_OPTIONS]))
    params["application_name"] = "cs_pipeline_dashboard"
    return make_conninfo(**params)


def prepare_dashboard_access(settings: Settings) -> None:
    """As the warehouse owner: make sure the BI role exists with its grants, can log in on the embedded
    server, and can read the intervention views (created when the ops tables exist). Idempotent.

    On an external server (``CS_PIPELINE_DATABASE_URL``) the role's LOGIN and password are the operator's
    decision: only the grants and views are made.

    Raises:
        psycopg.Error: the owner role may not create roles, views or grants.
    """
    endpoints = resolve_endpoints(settings)
    role = sql.Identifier(settings.bi_role)
    with psycopg.connect(endpoints.warehouse, autocommit=True) as conn:
        if not ensure_bi_role(conn, settings.bi_role):  # no BI role and no right to create it: warned once
            return
        if settings.embedded:
            secret = embedded_password(settings.home, BI_SECRET_NAME)
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(secret)))
        with conn.transaction():
            for view, body in INTERVENTION_VIEWS.items():
                source = _VIEW_SOURCES[view]
                if conn.execute("SELECT to_regclass(%s) IS NOT NULL", (source,)).fetchone()[0]:
                    schema, name = view.split(".")
                    target = sql.Identifier(schema, name)
                    conn.execute(sql.SQL("CREATE OR REPLACE VIEW {} AS ").format(target) + sql.SQL(body))
                    conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(target, role))
