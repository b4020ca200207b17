"""Connection credentials kept out of command lines, and connection security parameters kept intact.

libpq (and so psycopg, psycopg2 under dagster-postgres and dbt-postgres) reads a password from a
password file (``passfile`` parameter / ``PGPASSFILE``, mode 0600) and every security parameter from the
connection string or from its ``PG*`` environment variables. cs_pipeline uses both so that no password
is ever on a process's argv (readable by every local user through ``/proc/<pid>/cmdline``) and no child
weakens the TLS or authentication settings the user gave (issue 31).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

#: libpq parameters that decide how safely a client connects, with their environment variable. Each one
#: given in ``CS_PIPELINE_DATABASE_URL`` reaches psycopg (the conninfo itself), dagster-postgres (the
#: storage URL's query) and dbt (the child's ``PG*`` environment) unchanged.
SECURITY_PARAMS: dict[str, str] = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL",
    "require_auth": "PGREQUIREAUTH",
    "channel_binding": "PGCHANNELBINDING",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "gssencmode": "PGGSSENCMODE",
}

_URL_HEAD = re.compile(r"^(?P<scheme>postgres(?:ql)?(?:\+\w+)?://)(?P<rest>.*)$", re.DOTALL)
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def normalise_url(url: str) -> str:
    """``url`` with its password percent-encoded when the user left reserved characters in it.

    libpq reads ``postgresql://cs:p@ss@db/x`` as password ``p`` on host ``ss@db`` and fails on
    ``50%off``; a password may hold any of ``@ : / % ?``. The user-info ends at the URL's last ``@``
    (as in browsers and ``urllib``); its password part (after the first ``:``) is encoded with every
    reserved character escaped, keeping valid ``%XX`` escapes as they are. Only a URL libpq misreads (a
    parse error, an ``@`` in the host or database, a port that is not a number) is rewritten; keyword
    conninfos and well-formed URLs come back unchanged.
    """
    match = _URL_HEAD.match(url)
    if not match or "@" not in match["rest"] or _reads_well(url):
        return url
    userinfo, _, hostpart = match["rest"].rpartition("@")
    if ":" not in userinfo:
        return url
    user, _, password = userinfo.partition(":")
    if any(ch in user for ch in "/?#@"):
        return url
    encoded = quote(_BAD_PERCENT.sub("%25", password), safe="%")
    return f"{match['scheme']}{user}:{encoded}@{hostpart}"


def _reads_well(url: str) -> bool:
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url.replace("+psycopg2://", "://", 1))
    except Exception:  # psycopg.ProgrammingError: malformed (never shown: it may quote the password)
        return False
    port = params.get("port", "5432").replace(",", "")
    return "@" not in params.get("host", "") + params.get("dbname", "") and (port.isdigit() or not port)


def _escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace(":", "\\:")


def write_passfile(path: Path, user: str, password: str) -> Path:
    """Write a libpq password file at ``path`` (mode 0600, created without following a link; its folder
    0700) holding ``password`` for ``user`` on any host, port and database (``*:*:*:user:password``,
    ``:`` and ``\\`` escaped). Only connections that name this file (``passfile=``) read it.

    Raises:
        OSError: the folder is not writable or ``path`` is a link.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.parent.chmod(0o700)
    text = f"*:*:*:{_escape(user)}:{_escape(password)}\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)
        fh.write(text)
    return path


def without_password(storage_url: str, passfile: Path) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg2://``) equal to ``storage_url`` but with its password moved
    into the libpq password file ``passfile`` (``write_passfile``) and named by a ``passfile=`` query
    parameter. The result may sit in dagster.yaml and so in the ``--instance-ref`` argument ``dagster dev``
    gives its webserver, daemon and code servers. A URL without a password comes back unchanged.
    """
    from sqlalchemy.engine import make_url

    url = make_url(storage_url)
    if not url.password:
        return storage_url
    write_passfile(passfile, url.username or "postgres", str(url.password))
    clean = url._replace(password=None).update_query_dict({"passfile": str(passfile)})  # set() keeps a None
    return clean.render_as_string(hide_password=False)


def libpq_env(params: dict[str, str]) -> dict[str, str]:
    """The ``PG*`` environment variables carrying the security parameters of ``params`` (libpq keywords),
    for a child whose own configuration cannot name them all (dbt-postgres has no ``require_auth``,
    ``channel_binding`` or ``target_session_attrs``). Parameters absent from ``params`` are left out, so a
    ``PG*`` variable the user exported still applies."""
    return {env: params[key] for key, env in SECURITY_PARAMS.items() if params.get(key)}


def describe(conninfo: str) -> str:
    """A conninfo with its password masked, for logs and the UI (``mask_secrets`` if malformed)."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return mask_secrets(conninfo)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)


_URL_PASSWORD = re.compile(r"(?P<head>//[^/?#@\s:]*:)[^\s/?#]*@")
_KEYWORD_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def mask_secrets(text: str, *secrets_: str) -> str:
    """``text`` with passwords replaced by ``***``: the user-info password of any URL
    (``scheme://user:***@host``), ``password=...`` keywords (quoted or not, also ``?password=``), and
    each literal string in ``secrets_``. For error messages and logs that may quote a connection string."""
    for secret in secrets_:
        if secret:  # as given, and percent-encoded as it appears in a URL
            for form in dict.fromkeys((secret, quote(secret, safe=""), quote(secret))):
                text = text.replace(form, "***")
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + "***@", text)
    return _KEYWORD_PASSWORD.sub(lambda m: m.group("head") + "***", text)
