"""Access control: the read-only role BI tools use (USAGE and SELECT on schema ``marts`` only).

Least privilege (issue 31): the pipeline's own role needs only to own its database (or have CREATE on
it). Creating the BI role is an admin step (``cs-pipeline db grant-bi``, SQL from ``grant_bi_statements``)
run once by a role that may create roles; without it the pipeline warns once and carries on.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)
_ROLE_LOCK_KEY = 0x637372  # serialises concurrent role set-up ("csr")
READABLE_SCHEMAS = ("marts",)
PRIVATE_SCHEMAS = ("raw", "staging", "intermediate", "ops", "seeds", "public")
_warned: set[str] = set()
#: The tables, views and partitioned tables of a schema (parameter: the schema's name).
_RELATIONS = ("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
              "WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f')")
#: Whether the current user's default privileges in a schema already give a role SELECT on new tables.
_DEFAULT_SELECT = """
SELECT EXISTS (SELECT 1 FROM pg_default_acl d JOIN pg_namespace n ON n.oid = d.defaclnamespace,
                     aclexplode(d.defaclacl) a
               WHERE n.nspname = %s AND d.defaclrole = current_user::regrole AND d.defaclobjtype = 'r'
                 AND a.grantee = %s::regrole AND a.privilege_type = 'SELECT')
"""


def grant_bi_statements(role: str, owner: str) -> list[sql.Composed]:
    """The admin step, as SQL: create ``role`` (NOLOGIN), let it use schema ``marts`` and read every table
    there, including tables ``owner`` (the pipeline's role) creates later (``ALTER DEFAULT PRIVILEGES FOR
    ROLE owner``). Run by a role with CREATEROLE (and membership in ``owner`` or superuser) in the
    warehouse database. ``CREATE ROLE`` fails if the role exists: ``grant_bi`` skips it then."""
    ident, who = sql.Identifier(role), sql.Identifier(owner)
    statements = [sql.SQL("CREATE ROLE {} NOLOGIN").format(ident)]
    for schema in READABLE_SCHEMAS:
        s = sql.Identifier(schema)
        statements += [
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(s, who),
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, ident),
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(s, ident),
            sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(
                who, s, ident),
        ]
    return statements


def grant_bi(conn: psycopg.Connection, role: str, owner: str) -> None:
    """Run ``grant_bi_statements(role, owner)`` on ``conn`` in one transaction (the role's creation
    skipped when it exists). Idempotent.

    Raises:
        psycopg.Error: the connecting role may not create roles or grant for ``owner``.
    """
    statements = grant_bi_statements(role, owner)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ROLE_LOCK_KEY,))
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            statements = statements[1:]
        for statement in statements:
            conn.execute(statement)


def ensure_bi_role(conn: psycopg.Connection, role: str) -> bool:
    """Create ``role`` (NOLOGIN unless it exists) and grant it USAGE + SELECT on ``marts``, including
    tables created later by the current user (default privileges). Idempotent.

    The role is given nothing on raw, staging, intermediate, ops or seeds, and is revoked from them
    in case an operator granted it by hand. Give it LOGIN and a password (``ALTER ROLE``) or grant it
    to your BI tool's login role.

    Returns False, after one warning per process (log ``cs_pipeline.core.access``), when the role does not
    exist and the connecting role may not create it (no CREATEROLE: what managed PostgreSQL services hand
    out): the pipeline carries on and ``cs-pipeline db grant-bi`` is the admin step that creates it.

    Raises:
        psycopg.Error: the connecting role may not grant on marts.
    """
    ident = sql.Identifier(role)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ROLE_LOCK_KEY,))
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if not exists:
            may_create = conn.execute(
                "SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
            if not (may_create and may_create[0]):
                if role not in _warned:
                    _warned.add(role)
                    log.warning("BI role %s does not exist and this role may not create roles: the marts are "
                                "built without it. An admin creates it once with `cs-pipeline db grant-bi` "
                                "(`--print` shows the SQL); see SECURITY.md", role)
                return False
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident))
        # Only what is missing is granted and only what is held is revoked: a GRANT or REVOKE over ALL
        # TABLES rewrites every table's catalogue row even when nothing changes, and fails with "tuple
        # concurrently updated" while another run loads or analyzes those tables (Dagster's multiprocess
        # executor runs the raw loads side by side, each calling this on its first connection).
        for schema in READABLE_SCHEMAS:
            s = sql.Identifier(schema)
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s))
            if not conn.execute("SELECT has_schema_privilege(%s, %s, 'USAGE')", (role, schema)).fetchone()[0]:
                conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, ident))
            for (table,) in conn.execute(_RELATIONS + " AND NOT has_table_privilege(%s, c.oid, 'SELECT')",
                                         (schema, role)).fetchall():
                conn.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(schema, table), ident))
            if not conn.execute(_DEFAULT_SELECT, (schema, role)).fetchone()[0]:
                conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(s, ident))
        for schema in PRIVATE_SCHEMAS:
            present = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
            if present:
                s = sql.Identifier(schema)
                held = _RELATIONS + " AND EXISTS (SELECT 1 FROM aclexplode(c.relacl) a WHERE a.grantee = %s::regrole)"
                for (table,) in conn.execute(held, (schema, role)).fetchall():
                    conn.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(sql.Identifier(schema, table), ident))
                if schema != "public" and conn.execute(
                        "SELECT has_schema_privilege(%s, %s, 'USAGE') OR has_schema_privilege(%s, %s, 'CREATE')",
                        (role, schema, role, schema)).fetchone()[0]:
                    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(s, ident))
    return True
