"""The feature catalogue in force: WedSync's shipped seed, or a team's own product catalogue.

A catalogue is a CSV with the columns of ``dbt_project/seeds/feature_catalogue.csv`` (DOMAIN.md, "Feature
catalogue"): ``event_name`` (unique), ``feature``, ``is_core`` (true/false), ``adoption_min_active_days``
and ``adoption_window_days`` (whole days, the window at most 90: the marts look back 90 days). Which file
is in force is a setting (``cs_pipeline.core.settings.resolve_feature_catalogue``: ``CS_PIPELINE_FEATURE_CATALOGUE``,
else the one an import recorded in ``CS_PIPELINE_HOME``). Ingestion reads its event names (the accepted
values of ``activity_events.event_name``); dbt loads it as the seed ``feature_catalogue`` from the
directory in ``CS_PIPELINE_DBT_SEED_DIR`` (``dbt_project.yml``'s ``seed-paths``, relative to the project),
where ``stage_for_dbt`` puts a validated copy, so the seed keeps its name, lineage and tests whatever file the team gave.

Pure file handling: no database, no Dagster.
"""

from __future__ import annotations

import csv
import hashlib
import io
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cs_pipeline.core.paths import DBT_PROJECT_DIR, FEATURE_CATALOGUE_CSV
from cs_pipeline.core.settings import resolve_feature_catalogue

COLUMNS = ("event_name", "feature", "is_core", "adoption_min_active_days", "adoption_window_days")
#: The longest adoption window the marts can evaluate (they look back 90 days).
MAX_WINDOW_DAYS = 90
#: File name of the seed dbt loads (the seed's name is the file's stem).
SEED_FILE = "feature_catalogue.csv"
#: Where a team's catalogue is staged for dbt, inside the dbt project (git-ignored).
STAGED_DIR = "seeds_staged"
_FIX = (f"a feature catalogue is a CSV with the header {','.join(COLUMNS)}, one row per event name, "
        f"is_core true or false, whole numbers of days (window 1..{MAX_WINDOW_DAYS}); "
        f"see dbt_project/seeds/feature_catalogue.csv")


class CatalogueError(ValueError):
    """A feature catalogue is missing or invalid; the message names the file, the row and the fix."""


class CatalogueRow(BaseModel):
    """One event of the catalogue: the feature it belongs to, whether that feature is core (adoption is
    measured on core features), and the adoption rule (used on at least ``adoption_min_active_days``
    distinct days within ``adoption_window_days``)."""

    model_config = ConfigDict(frozen=True, str_strip_whitespace=True)

    event_name: str = Field(min_length=1)
    feature: str = Field(min_length=1)
    is_core: bool
    adoption_min_active_days: int = Field(ge=1)
    adoption_window_days: int = Field(ge=1, le=MAX_WINDOW_DAYS)


def active_catalogue_path() -> Path:
    """The catalogue file in force (``resolve_feature_catalogue``), else the shipped seed."""
    return resolve_feature_catalogue() or FEATURE_CATALOGUE_CSV


def load_catalogue(path: Path) -> tuple[CatalogueRow, ...]:
    """The rows of the catalogue at ``path``, validated, in file order (cached per file version).

    Raises:
        CatalogueError: the file is missing or unreadable, a column is missing, a row is invalid
            (e.g. ``is_core`` not true/false), an event name appears twice, there are no rows, or a
            feature mixes core and non-core events (dbt's uniqueness tests would fail on the first run).
    """
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as exc:
        raise CatalogueError(f"feature catalogue {path} not found ({exc.strerror}); {_FIX}") from exc
    return _load(path, stamp)


@lru_cache(maxsize=8)
def _load(path: Path, stamp: int) -> tuple[CatalogueRow, ...]:
    del stamp  # part of the cache key only: an edited file is read again
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"feature catalogue {path}: cannot read it ({exc}); {_FIX}") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise CatalogueError(f"feature catalogue {path}: column(s) {', '.join(missing)} missing; {_FIX}")
    reader.fieldnames = header
    rows: list[CatalogueRow] = []
    seen: dict[str, int] = {}
    for line, record in enumerate(reader, start=2):
        if not any((v or "").strip() for v in record.values()):
            continue
        try:
            row = CatalogueRow.model_validate({c: (record.get(c) or "").strip() for c in COLUMNS})
        except ValidationError as exc:
            problems = "; ".join(f"{e['loc'][0]}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors())
            raise CatalogueError(f"feature catalogue {path}, line {line}: {problems}; {_FIX}") from exc
        if row.event_name in seen:
            raise CatalogueError(f"feature catalogue {path}, line {line}: event_name {row.event_name!r} "
                                 f"already on line {seen[row.event_name]}; give each event name one row")
        seen[row.event_name] = line
        rows.append(row)
    if not rows:
        raise CatalogueError(f"feature catalogue {path}: no rows; {_FIX}")
    _check_features(path, rows, [seen[row.event_name] for row in rows])
    return tuple(rows)


def _check_features(path: Path, rows: list[CatalogueRow], lines: list[int]) -> None:
    """A feature is core or not as a whole: dbt keeps one row per supplier, day and feature, so a feature
    whose events disagree on ``is_core`` passes here but fails dbt's uniqueness tests on the first run
    (issue 29: 13,098 duplicate rows, with no pointer to the catalogue).

    Raises:
        CatalogueError: one line naming the file, the feature, one core and one non-core event (with
            their lines) and the fix.
    """
    first: dict[str, tuple[CatalogueRow, int]] = {}
    for row, line in zip(rows, lines):
        earlier, at = first.setdefault(row.feature, (row, line))
        if earlier.is_core != row.is_core:
            core, core_at, other, other_at = (earlier, at, row, line) if earlier.is_core else (row, line, earlier, at)
            raise CatalogueError(
                f"feature catalogue {path}: feature {row.feature!r} mixes core and non-core events "
                f"({core.event_name!r} is_core true on line {core_at}, {other.event_name!r} false on line "
                f"{other_at}); give every event of a feature the same is_core, or move the events that "
                f"differ to a feature of their own")


def event_names(path: Path | None = None) -> tuple[str, ...]:
    """Event names of the catalogue at ``path`` (default: the one in force), in file order.

    Raises:
        CatalogueError: see ``load_catalogue``.
    """
    return tuple(row.event_name for row in load_catalogue(path or active_catalogue_path()))


def render(rows: tuple[CatalogueRow, ...]) -> str:
    """The catalogue as CSV text in the seed's form (its header, ``true``/``false``, ``\\n`` line ends)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([row.event_name, row.feature, "true" if row.is_core else "false",
                         row.adoption_min_active_days, row.adoption_window_days])
    return out.getvalue()


def write_catalogue(rows: tuple[CatalogueRow, ...], target: Path) -> Path:
    """Write ``rows`` to ``target`` (``render``) unless it already holds exactly that text, so dbt's
    partial parsing sees no change when nothing changed. Returns ``target``."""
    text = render(rows)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if target.read_text(encoding="utf-8") == text:
            return target
    except OSError:
        pass
    tmp = target.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(target)
    return target


def record_catalogue(source: Path, home: Path) -> Path:
    """Validate the catalogue at ``source`` and record a copy in ``<home>/catalogue/feature_catalogue.csv``
    (what a mapping's ``catalogue:`` does at import), so later runs use it. Returns the recorded path.

    Raises:
        CatalogueError: see ``load_catalogue``.
    """
    from cs_pipeline.core.settings import RECORDED_CATALOGUE

    return write_catalogue(load_catalogue(source.absolute()), home / RECORDED_CATALOGUE)


def stage_for_dbt(catalogue: Path | None, home: Path) -> str:
    """The seed directory dbt loads ``feature_catalogue`` from (``CS_PIPELINE_DBT_SEED_DIR``), relative to
    the dbt project: dbt writes each seed's compiled SQL to ``target/run/<project>/<seed path>``, so an
    absolute seed path would have it overwrite the CSV itself.

    ``None`` (WedSync's catalogue) gives ``seeds``. A team's catalogue is validated and written as
    ``dbt_project/seeds_staged/<key>/feature_catalogue.csv`` (whatever its own file name; ``key`` is a hash
    of ``home``, so projects with different homes do not share it), and ``seeds_staged/<key>`` is returned.

    Raises:
        CatalogueError: see ``load_catalogue``.
    """
    if catalogue is None or catalogue.absolute() == FEATURE_CATALOGUE_CSV:
        return "seeds"
    key = hashlib.sha256(str(home.absolute()).encode()).hexdigest()[:16]
    relative = f"{STAGED_DIR}/{key}"
    write_catalogue(load_catalogue(catalogue.absolute()), DBT_PROJECT_DIR / relative / SEED_FILE)
    return relative
