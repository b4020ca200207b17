"""Access control: the read-only role BI tools use (USAGE and SELECT on schema ``marts`` only)."""

from __future__ import annotations

import psycopg
from psycopg import sql

_ROLE_LOCK_KEY = 0x637372  # serialises concurrent role set-up ("csr")
READABLE_SCHEMAS = ("marts",)
PRIVATE_SCHEMAS = ("raw", "staging", "intermediate", "ops", "seeds", "public")


def ensure_bi_role(conn: psycopg.Connection, role: str) -> None:
    """Create ``role`` (NOLOGIN unless it exists) and grant it USAGE + SELECT on ``marts``, including
    tables created later by the current user (default privileges). Idempotent.

    The role is given nothing on raw, staging, intermediate, ops or seeds, and is revoked from them
    in case an operator granted it by hand. Give it LOGIN and a password (``ALTER ROLE``) or grant it
    to your BI tool's login role.

    Raises:
        psycopg.Error: the connecting role may not create roles or grant on marts.
    """
    ident = sql.Identifier(role)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_ROLE_LOCK_KEY,))
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(ident))
        for schema in READABLE_SCHEMAS:
            s = sql.Identifier(schema)
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s))
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, ident))
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(s, ident))
            conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA {} GRANT SELECT ON TABLES TO {}").format(s, ident))
        for schema in PRIVATE_SCHEMAS:
            present = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
            if present:
                s = sql.Identifier(schema)
                conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(s, ident))
                if schema != "public":
                    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(s, ident))
