"""The declared rules over the rows of landed files, each file held to them alone.

The rows of a window of files are checked together (one pass over a year of rows instead of one
per file), but every count, sample and verdict is per file: a file's fault reads exactly as it
would if that file were read by itself, and no file's rows can excuse another's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd

from ml_platform.ingestion.schemas import NULL_SPELLINGS, Column, TableSpec


@dataclass(frozen=True)
class Window:
    """Conformed rows of several files in file order, and what each file is allowed to be."""

    frame: pd.DataFrame
    sizes: list[int]  # rows of each file
    days: list[date]  # the day each file is named for
    empty_markers: list[str | None]  # None where the day is declared empty, else the marker to add
    hours: list[datetime | None] | None = None  # the UTC hour each hourly file is named for


# "<table>.<column>" -> (the codes it lists, where they come from)
References = dict[str, tuple[frozenset[str], str]]


def faults(window: Window, spec: TableSpec, references: References) -> dict[int, str]:
    """The first fault of each file that has one, by file position."""
    return _Judge(window, spec, references).run()


class _Judge:
    def __init__(self, window: Window, spec: TableSpec, references: References):
        self.window, self.spec, self.references = window, spec, references
        self.frame = window.frame
        self.sizes = np.asarray(window.sizes, dtype="int64")
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]) if len(self.sizes) else self.sizes
        self.file_of_row = np.repeat(np.arange(len(self.sizes)), self.sizes)
        self.found: dict[int, str] = {}

    def run(self) -> dict[int, str]:
        spec = self.spec
        for i, marker in enumerate(self.window.empty_markers):
            if spec.filled_daily and self.sizes[i] == 0 and marker is not None:
                self.found[i] = f"no rows (upstream fills this day; add {marker} if it is really empty)"
        self._required()
        if spec.hourly:
            self._outside_hour()
        else:
            self._outside_day()
        self._filled()
        for col in spec.columns:
            self._domain(col)
        self._consistency()
        return self.found

    # --- attribution ---------------------------------------------------------------------------

    def _flag(self, mask: np.ndarray, say: Callable[[int, int], str]) -> None:
        """For each file with a row in ``mask`` (and no earlier fault), ``say(count, first_row)``
        where ``first_row`` is the global row; the message is the file's own."""
        rows = np.flatnonzero(mask)
        if not len(rows):
            return
        files = self.file_of_row[rows]
        counts = np.bincount(files, minlength=len(self.sizes))
        unique, first = np.unique(files, return_index=True)
        for file, row in zip(unique.tolist(), rows[first].tolist(), strict=True):
            if file not in self.found:
                self.found[file] = say(int(counts[file]), row)

    def _row_in_file(self, row: int) -> int:
        return row - int(self.starts[self.file_of_row[row]]) + 1

    # --- the rules -----------------------------------------------------------------------------

    def _required(self) -> None:
        required = [c.name for c in self.spec.columns if not c.nullable]
        nulls = {c: self.frame[c].isna().to_numpy() for c in required}
        per_file = {c: np.bincount(self.file_of_row[m], minlength=len(self.sizes)) for c, m in nulls.items()}

        def say(_count: int, row: int) -> str:
            file = self.file_of_row[row]
            detail = ", ".join(f"{c} ({n[file]})" for c, n in per_file.items() if n[file])
            return f"null values in required column(s) {detail}"

        self._flag(np.logical_or.reduce(list(nulls.values()), initial=False) if nulls else [], say)

    def _outside_day(self) -> None:
        column = self.spec.partition_column
        expected = np.repeat(np.array(self.window.days, dtype="datetime64[D]"), self.sizes)
        stored = self.frame[column].to_numpy().astype("datetime64[D]")
        outside = ~np.isnat(stored) & (stored != expected)
        self._flag(
            outside,
            lambda n, row: (
                f"{n} row(s) are dated outside the file's day "
                f"{self.window.days[self.file_of_row[row]].isoformat()}"
            ),
        )

    def _outside_hour(self) -> None:
        """An hourly file holds its hour: ``event_hour`` is the hour its name gives, and every
        event instant lies in [hour, hour + 1h)."""
        hours = [np.datetime64(h.astimezone(UTC).replace(tzinfo=None), "h") for h in self.window.hours or []]
        expected = np.repeat(np.array(hours, dtype="datetime64[h]"), self.sizes)

        def named(row: int) -> str:
            return f"{self.window.hours[self.file_of_row[row]]:%Y-%m-%dT%H}:00Z"

        column = self.spec.partition_column
        stamped = _utc(self.frame[column])
        self._flag(
            ~np.isnat(stamped) & (stamped != expected.astype(stamped.dtype)),
            lambda n, row: (
                f"{n} row(s) have {column} other than the file's hour {named(row)} "
                f"(first in row {self._row_in_file(row)}: {self.frame[column].iloc[row]})"
            ),
        )
        event = self.spec.event_instant
        instants = _utc(self.frame[event])
        self._flag(
            ~np.isnat(instants) & (instants.astype("datetime64[h]") != expected),
            lambda n, row: (
                f"{n} row(s) have {event} outside the file's hour {named(row)} + 1h "
                f"(first in row {self._row_in_file(row)}: {self.frame[event].iloc[row]})"
            ),
        )

    def _filled(self) -> None:
        filled = [c.name for c in self.spec.columns if c.filled]
        if not filled:
            return
        present = {
            c: np.bincount(self.file_of_row[self.frame[c].notna().to_numpy()], minlength=len(self.sizes))
            for c in filled
        }
        for file, size in enumerate(self.sizes.tolist()):
            empty = [c for c in filled if size and present[c][file] == 0]
            if empty and file not in self.found:
                columns = "column" if len(empty) == 1 else "columns"
                self.found[file] = f"{columns} {', '.join(empty)}: every value missing"

    def _domain(self, col: Column) -> None:
        if col.sql_type == "DATE":
            days = self.frame[col.name]
            timed = (days.notna() & (days != days.dt.normalize())).to_numpy()
            self._flag(
                timed,
                lambda n, row: (
                    f"column {col.name}: {days.iloc[row]} in row {self._row_in_file(row)} "
                    f"has a time of day; expected a date ({n} row(s))"
                ),
            )
        if col.sql_type in ("DOUBLE", "BIGINT"):
            values = self.frame[col.name].to_numpy(dtype="float64", na_value=np.nan)
            self._flag(
                np.isinf(values),
                lambda n, row: (
                    f"column {col.name}: {values[row]} in row {self._row_in_file(row)} "
                    f"is not a finite number ({n} row(s))"
                ),
            )
            low = -np.inf if col.minimum is None else col.minimum
            high = np.inf if col.maximum is None else col.maximum
            self._flag(
                (values < low) | (values > high),
                lambda n, row: (
                    f"column {col.name}: {_number(values[row])} in row {self._row_in_file(row)} "
                    f"is outside {_number(low)}..{_number(high)} ({n} row(s))"
                ),
            )
            if col.clock:
                minutes = np.fmod(values, 100)
                self._flag(
                    (minutes >= 60) | (np.fmod(values, 1) != 0) & ~np.isnan(values),
                    lambda n, row: (
                        f"column {col.name}: {_number(values[row])} in row "
                        f"{self._row_in_file(row)} is not a time of day hhmm ({n} row(s))"
                    ),
                )
        elif col.sql_type == "VARCHAR":
            self._text(col)

    def _text(self, col: Column) -> None:
        codes, unique = pd.factorize(self.frame[col.name])
        unique = [str(u) for u in unique]

        def check(wrong: Callable[[str], bool], say: Callable[[str, int, int], str]) -> None:
            bad = np.flatnonzero([wrong(u) for u in unique])
            if len(bad):
                mask = np.isin(codes, bad)
                self._flag(mask, lambda n, row: say(unique[codes[row]], n, self._row_in_file(row)))

        check(
            lambda u: u.strip() in NULL_SPELLINGS,
            lambda v, n, r: (
                f"column {col.name}: {v!r} in row {r} is a null written as text "
                f"({n} row(s)); upstream leaves a missing value empty"
            ),
        )
        if col.pattern:
            pattern = re.compile(col.pattern)
            check(
                lambda u: not pattern.fullmatch(u),
                lambda v, n, r: (
                    f"column {col.name}: {v!r} in row {r} is not a code of the form "
                    f"{col.pattern} ({n} row(s))"
                ),
            )
        if col.references and col.references in self.references:
            known, where = self.references[col.references]
            check(
                lambda u: u not in known,
                lambda v, n, r: f"{col.name} {v!r} is not in {where} ({n} row(s), first in row {r})",
            )

    def _consistency(self) -> None:
        spec, frame = self.spec, self.frame
        day = spec.day
        stamps = frame[day].to_numpy().astype("datetime64[D]")
        if spec.date_parts:
            dated = ~np.isnat(stamps)
            days = np.where(dated, stamps, np.datetime64("1970-01-01"))
            months = days.astype("datetime64[M]")
            written = (
                (days.astype("datetime64[Y]").astype("int64") + 1970) * 10_000
                + (months.astype("int64") % 12 + 1) * 100
                + (days - months.astype("datetime64[D]")).astype("int64")
                + 1
            )
            parts = [frame[p].to_numpy(dtype="float64", na_value=np.nan) for p in spec.date_parts]
            as_number = parts[0] * 10_000 + parts[1] * 100 + parts[2]
            self._flag(
                dated & ~np.isnan(as_number) & (as_number != written),
                lambda n, row: (
                    f"{n} row(s) have {'/'.join(spec.date_parts)} that disagree with {day} "
                    f"(first in row {self._row_in_file(row)})"
                ),
            )
        if spec.clock_parts:
            hhmm, hour, minute = (_floats(frame[c]) for c in spec.clock_parts)
            self._flag(
                (np.floor(hhmm / 100) != hour) | (np.fmod(hhmm, 100) != minute),
                lambda n, row: (
                    f"{n} row(s) have {spec.clock_parts[1]}/{spec.clock_parts[2]} that disagree "
                    f"with {spec.clock_parts[0]} (first in row {self._row_in_file(row)})"
                ),
            )
        if spec.local_hour:
            self._local_hour(stamps)
        if spec.instant_of:
            self._instant_of(*spec.instant_of)

    def _instant_of(self, instant: str, base: str, minute: str) -> None:
        """A scheduled instant is its scheduled hour's instant plus the minute."""
        got, hour = _utc(self.frame[instant]), _utc(self.frame[base])
        minutes = _floats(self.frame[minute])
        usable = ~np.isnat(got) & ~np.isnat(hour) & ~np.isnan(minutes)
        offset = (np.where(usable, minutes, 0) * 60_000_000).astype("int64")
        wrong = usable & (got.astype("int64") != hour.astype("int64") + offset)
        self._flag(
            wrong,
            lambda n, row: (
                f"{n} row(s) have {instant} that is not {base} + {minute} minutes "
                f"(first in row {self._row_in_file(row)}: {self.frame[instant].iloc[row]})"
            ),
        )

    def _local_hour(self, stamps: np.ndarray) -> None:
        """The instant is the day's local hour: either reading of an hour the clocks repeat."""
        hour_column, instant_column, zone = self.spec.local_hour
        hours = self.frame[hour_column].to_numpy(dtype="float64", na_value=np.nan)
        instants = self.frame[instant_column]
        usable = ~np.isnan(hours) & ~np.isnat(stamps) & instants.notna().to_numpy()
        if not usable.any():  # nothing to compare: the missing values are refused by their own rule
            return
        days = np.where(usable, stamps, np.datetime64("1970-01-01", "D")).astype("datetime64[us]")
        local = days + np.where(usable, hours, 0).astype("int64").astype("timedelta64[h]")
        codes, unique = pd.factorize(local)
        unique = pd.DatetimeIndex(unique)
        readings = [
            unique.tz_localize(zone, ambiguous=np.full(len(unique), dst), nonexistent="shift_forward")
            .tz_convert("UTC")
            .as_unit("us")
            .asi8[codes]
            for dst in (True, False)
        ]
        actual = pd.DatetimeIndex(instants).tz_convert("UTC").as_unit("us").asi8
        wrong = usable & (actual != readings[0]) & (actual != readings[1])
        self._flag(
            wrong,
            lambda n, row: (
                f"{n} row(s) have {instant_column} that is not {self.spec.day} at "
                f"{hour_column} in {zone} (first in row {self._row_in_file(row)}: {instants.iloc[row]})"
            ),
        )


def _utc(values: pd.Series) -> np.ndarray:
    """Instants as naive UTC datetime64[us] (NaT where missing)."""
    stamps = pd.DatetimeIndex(values)
    if stamps.tz is not None:
        stamps = stamps.tz_convert("UTC").tz_localize(None)
    return stamps.as_unit("us").to_numpy()


def _floats(values: pd.Series) -> np.ndarray:
    return values.to_numpy(dtype="float64", na_value=np.nan)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
