"""The landing contract: which files in the landing folder are landing files, and how they are opened.

A landing file is a *regular file* named exactly ``<source>_<YYYY-MM-DD>.<csv|jsonl|parquet>[.gz]``
(DOMAIN.md, "Raw inputs"): ``<source>`` one of ``LANDING_SOURCES``, the day a real calendar day (UTC).
Everything else in the folder is ignored: it never counts as a day's file and never moves the partition
start. A file with a contract name that is not a regular file (a symbolic link, FIFO, device, socket or
directory) is refused: nothing is read from it, and the reason names the file. Files are opened with
``O_NOFOLLOW`` and checked with ``fstat`` after opening, so a link swapped in after the folder was listed
is refused too (OWASP file-upload guidance: never follow a link planted in an upload folder).

Every stage that reads or writes landing files (ingest, feeds, benchmarks, settings) uses this module;
it imports nothing from the stages.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

#: The four raw sources, in DOMAIN.md's order.
LANDING_SOURCES: tuple[str, ...] = ("suppliers", "activity_events", "support_tickets", "billing_events")
#: Landing file formats; each may also come gzip-compressed (``.gz``), but for Parquet (compressed inside).
FORMATS: tuple[str, ...] = ("csv", "jsonl", "parquet")

_NAME = re.compile(r"(?P<source>[a-z_]+)_(?P<day>\d{4}-\d{2}-\d{2})\.(?P<fmt>csv|jsonl|parquet)(?P<gz>\.gz)?")
#: Characters of a foreign file name shown in a message (longer names are cut with "...").
NAME_CHARS = 80


class NotRegularFile(OSError):
    """A landing path that is not a regular file (link, FIFO, device, socket, directory): never read."""


@dataclass(frozen=True)
class LandingName:
    """A file name that follows the contract: ``source`` (one of ``LANDING_SOURCES``), ``day`` (UTC),
    ``fmt`` (one of ``FORMATS``) and ``gz`` (gzip-compressed)."""

    source: str
    day: date
    fmt: str
    gz: bool

    @property
    def name(self) -> str:
        """The file name (``landing_file_name`` of the parts)."""
        return landing_file_name(self.source, self.day, self.fmt, self.gz)


def landing_file_name(source: str, day: date, fmt: str = "csv", gz: bool = False) -> str:
    """``<source>_<YYYY-MM-DD>.<fmt>[.gz]``."""
    return f"{source}_{day.isoformat()}.{fmt}{'.gz' if gz else ''}"


def candidate_names(source: str, day: date) -> list[str]:
    """Every name ``source``'s file for ``day`` may have: each format, plain and ``.gz``."""
    return [landing_file_name(source, day, fmt, gz) for fmt in FORMATS for gz in (False, True)]


def parse_landing_name(name: str) -> LandingName | None:
    """The parts of ``name`` when it follows the contract exactly (known source, real day, known
    format, optional ``.gz``), else None. ``old export (copy)_1970-01-01.bak`` is None."""
    match = _NAME.fullmatch(name)
    if match is None or match["source"] not in LANDING_SOURCES:
        return None
    try:
        day = date.fromisoformat(match["day"])
    except ValueError:  # 2024-02-30
        return None
    return LandingName(match["source"], day, match["fmt"], match["gz"] is not None)


def shown_name(name: str, limit: int = NAME_CHARS) -> str:
    """``name`` safe to print in a message or metadata: control and non-ASCII characters as Python
    escapes, cut to ``limit`` characters with ``...``."""
    text = name.encode("unicode_escape", "backslashreplace").decode("ascii")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def file_kind(mode: int) -> str:
    """What an ``st_mode`` is, in words: ``regular file``, ``symbolic link``, ``FIFO``, ..."""
    for test, kind in ((stat.S_ISREG, "regular file"), (stat.S_ISLNK, "symbolic link"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory")):
        if test(mode):
            return kind
    return "special file"


def refusal(path: Path, kind: str) -> str:
    """The reason a landing path that is not a regular file is refused (names the file)."""
    return f"{shown_name(path.name)} in {path.parent}: a {kind}, not a regular file; refused, nothing read from it"


def open_regular(path: Path) -> int:
    """A read-only descriptor on ``path`` if it is a regular file; the caller closes it (``os.fdopen``).

    Opened with ``O_NOFOLLOW`` (a symbolic link fails) and ``O_NONBLOCK`` (a FIFO does not wait for a
    writer), then checked with ``fstat`` (the file opened, not a name looked up earlier).

    Raises:
        NotRegularFile: ``path`` is a link, FIFO, device, socket or directory (message from ``refusal``).
        FileNotFoundError, PermissionError: as ``os.open``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last component is a symbolic link
            raise NotRegularFile(refusal(path, "symbolic link")) from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFile(refusal(path, file_kind(mode)))
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


@dataclass
class LandingScan:
    """What a landing folder holds.

    Attributes:
        files: the landing files: (path, parsed name) of each regular file whose name follows the contract.
        refused: (path, reason) of each path whose name follows the contract but that is not a regular file.
        ignored: every other name in the folder, as ``shown_name`` (escaped, cut), sorted.
    """

    files: list[tuple[Path, LandingName]] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)


def scan_landing_dir(landing_dir: Path) -> LandingScan:
    """List ``landing_dir`` (not recursive) by the contract, without following links (``lstat``).

    A missing or unreadable folder is an empty scan.
    """
    scan = LandingScan()
    try:
        entries = sorted(os.scandir(landing_dir), key=lambda e: e.name)
    except OSError:
        return scan
    for entry in entries:
        parsed = parse_landing_name(entry.name)
        if parsed is None:
            scan.ignored.append(shown_name(entry.name))
            continue
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except OSError:  # gone since the listing
            continue
        path = Path(entry.path)
        if stat.S_ISREG(mode):
            scan.files.append((path, parsed))
        else:
            scan.refused.append((path, refusal(path, file_kind(mode))))
    return scan


def earliest_landing_day(landing_dir: Path) -> date | None:
    """The earliest day among the landing files of ``landing_dir`` (``scan_landing_dir``: regular
    files named by the contract only; a stray ``old export (copy)_1970-01-01.bak`` does not count)."""
    days = [name.day for _, name in scan_landing_dir(landing_dir).files]
    return min(days) if days else None
