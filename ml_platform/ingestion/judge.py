"""Landed files judged one by one against the declared schema, then combined.

Each file is read and its columns checked by itself (``delivery``, ``values``), so a column one
file lacks is never supplied by another file of the same range; values convert one by one, so
files whose columns have the same types convert as one frame; the declared row rules then run
over all files' rows at once with per-file verdicts (``rules``). A window is refused at its first
file at fault, with that file's own message: the one reading that day alone gives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import groupby
from pathlib import Path

import numpy as np
import pandas as pd

from ml_platform.ingestion import delivery
from ml_platform.ingestion.delivery import SourceError, day_of_file, hour_name, hour_of_file
from ml_platform.ingestion.rules import References, Window, faults
from ml_platform.ingestion.schemas import TableSpec
from ml_platform.ingestion.values import Converted, Layout, ValueFault, convert_frame, layout


@dataclass
class SourceBatch:
    frame: pd.DataFrame
    origins: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Landed:
    """A file to judge, the day (and for an hourly file the UTC hour) it is delivered for, and
    how an empty day is declared."""

    path: Path
    day: date
    empty_marker: Path | None = None  # where upstream says the day is really empty
    declared_empty: bool = False
    hour: datetime | None = None


def judge(files: list[Landed], spec: TableSpec, references: References) -> tuple[pd.DataFrame, list[str]]:
    """The files' rows, conformed, in file order, and the warnings to log. Raises ``SourceError``
    naming the first file (in order) that cannot be right."""
    read: list[tuple[Landed, pd.DataFrame, Layout]] = []
    warnings: list[str] = []
    unreadable: SourceError | None = None
    for landed in files:
        try:
            frame = read_one(landed, spec)
            shape = _layout(landed, frame, spec)
        except SourceError as exc:
            unreadable = exc  # the files before it may still hold an earlier fault
            break
        read.append((landed, frame, shape))
        warnings += extra_warning(landed.path, shape.extra, spec)
    converted, count, failed = _convert(read, spec)
    unreadable = failed or unreadable
    judged = read[:count]
    combined = _combine(converted, spec)
    window = Window(
        frame=combined,
        sizes=[len(frame) for _, frame, _ in judged],
        days=[landed.day for landed, _, _ in judged],
        hours=[landed.hour for landed, _, _ in judged],
        empty_markers=[None if f.declared_empty else str(f.empty_marker or "a marker") for f, _, _ in judged],
    )
    found = faults(window, spec, references)
    if found:
        first = min(found)
        raise SourceError(f"{judged[first][0].path}: {found[first]}")
    if unreadable is not None:
        raise unreadable
    return combined, warnings


def read_one(landed: Landed, spec: TableSpec) -> pd.DataFrame:
    """One file's unconverted frame; the file must be named for the day asked for (a symbolic
    link may point inside the root, but only at a file named for the same day)."""
    path = landed.path
    if landed.hour is not None:
        if hour_of_file(path) != landed.hour:
            raise SourceError(f"{path}: file is named for another hour than {hour_name(landed.hour)}")
    elif day_of_file(path) != landed.day:
        raise SourceError(f"{path}: file is named for another day than {landed.day.isoformat()}")
    before = delivery.stat(path)
    frame = delivery.read_file(path, spec)
    if delivery.stat(path) != before:
        raise SourceError(f"{path}: file changed while it was being read; it will be read again")
    return frame


def _layout(landed: Landed, frame: pd.DataFrame, spec: TableSpec) -> Layout:
    try:
        return layout(frame, spec)
    except ValueFault as exc:
        raise SourceError(f"{landed.path}: {exc}") from exc


def _convert(read, spec: TableSpec) -> tuple[list[Converted], int, SourceError | None]:
    """Consecutive files of one signature convert as one frame (a year of files in a few calls,
    not one per file): each value converts as it would alone, and where a run of files does not
    convert, its files are converted one by one to name the first at fault and its row."""
    converted: list[Converted] = []
    count = 0
    for _, run in groupby(read, key=lambda item: item[2].signature):
        run = list(run)
        frames = [frame for _, frame, _ in run]
        derive = run[0][2].derive
        try:
            whole = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
            converted.append(convert_frame(whole, spec, derive))
            count += len(run)
            continue
        except ValueFault:
            pass
        for landed, frame, _ in run:
            try:
                converted.append(convert_frame(frame, spec, derive))
            except ValueFault as exc:
                return converted, count, SourceError(f"{landed.path}: {exc}")
            count += 1
    return converted, count, None


def _combine(converted: list[Converted], spec: TableSpec) -> pd.DataFrame:
    """One frame from every file's columns, concatenated column by column: each file's arrays
    already have the declared types, so nothing is blurred by combining them."""
    rows = [c for c in converted if c.rows]
    if not rows:
        return empty(spec)
    columns = {}
    for name in spec.column_names:
        arrays = [c.columns[name] for c in rows]
        if isinstance(arrays[0], np.ndarray):
            columns[name] = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
        else:
            columns[name] = type(arrays[0])._concat_same_type(arrays) if len(arrays) > 1 else arrays[0]
    return pd.DataFrame(columns, index=pd.RangeIndex(sum(c.rows for c in rows)), copy=False)


def extra_warning(path: Path, extra: list[str], spec: TableSpec) -> list[str]:
    if not extra:
        return []
    return [f"{path}: ignored unknown column(s) {', '.join(extra)} not declared for {spec.name}"]


def empty(spec: TableSpec) -> pd.DataFrame:
    return pd.DataFrame({c.name: pd.Series(dtype=c.pandas_dtype) for c in spec.columns})
