"""Landed files judged one by one against the declared schema, then combined.

Each file is read, checked and converted by itself (``delivery``, ``values``), so a column one
file lacks is never supplied by another file of the same range; the declared row rules then run
over all files' rows at once with per-file verdicts (``rules``). A window is refused at its first
file at fault, with that file's own message: the one reading that day alone gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from ml_platform.ingestion import delivery
from ml_platform.ingestion.delivery import SourceError, day_of_file
from ml_platform.ingestion.rules import References, Window, faults
from ml_platform.ingestion.schemas import TableSpec
from ml_platform.ingestion.values import Converted, ValueFault, conform_file


@dataclass(frozen=True)
class Landed:
    """A file to judge, the day it is delivered for, and how an empty day is declared."""

    path: Path
    day: date
    empty_marker: Path | None = None  # where upstream says the day is really empty
    declared_empty: bool = False


def judge(files: list[Landed], spec: TableSpec, references: References) -> tuple[pd.DataFrame, list[str]]:
    """The files' rows, conformed, in file order, and the warnings to log. Raises ``SourceError``
    naming the first file (in order) that cannot be right."""
    converted: list[Converted] = []
    warnings: list[str] = []
    unreadable: SourceError | None = None
    for landed in files:
        try:
            one = read_one(landed, spec)
        except SourceError as exc:
            unreadable = exc  # the files before it may still hold an earlier fault
            break
        converted.append(one)
        warnings += extra_warning(landed.path, one.extra, spec)
    judged = files[: len(converted)]
    combined = _combine(converted, spec)
    window = Window(
        frame=combined,
        sizes=[c.rows for c in converted],
        days=[f.day for f in judged],
        empty_markers=[None if f.declared_empty else str(f.empty_marker or "a marker") for f in judged],
    )
    found = faults(window, spec, references)
    if found:
        first = min(found)
        raise SourceError(f"{judged[first].path}: {found[first]}")
    if unreadable is not None:
        raise unreadable
    return combined, warnings


def read_one(landed: Landed, spec: TableSpec) -> Converted:
    """One file read and converted by itself; the file must be named for the day asked for (a
    symbolic link may point inside the root, but only at a file named for the same day)."""
    path = landed.path
    if day_of_file(path) != landed.day:
        raise SourceError(f"{path}: file is named for another day than {landed.day.isoformat()}")
    before = delivery.stat(path)
    frame = delivery.read_file(path, spec)
    if delivery.stat(path) != before:
        raise SourceError(f"{path}: file changed while it was being read; it will be read again")
    try:
        return conform_file(frame, spec)
    except ValueFault as exc:
        raise SourceError(f"{path}: {exc}") from exc


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
