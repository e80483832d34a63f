"""The bad landing deliveries of ``test_bad_landing_files.py``: each case writes one bad flights
file for its day (empty, truncated, missing or extra column, wrong type, rows of another day,
duplicate or null keys, negative distance, a name that is not a date, links out of the root),
with what the platform is expected to say about it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from ml_platform.ingestion.source import PackagedSource, write_frame_atomically


def good_frame(day: date) -> pd.DataFrame:
    return PackagedSource().read_days("flights", day, day + timedelta(days=1)).frame


def deliver_weather(root: Path, day: date) -> None:
    frame = PackagedSource().read_days("weather", day, day + timedelta(days=1)).frame
    write_frame_atomically(frame, root / "weather" / f"{day.isoformat()}.parquet")


# --- the bad deliveries -----------------------------------------------------------------------------


def empty(root, day):
    path = root / "flights" / f"{day}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def truncated_parquet(root, day):
    path = root / "flights" / f"{day}.parquet"
    write_frame_atomically(good_frame(day), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def csv_missing_column(root, day):
    path = root / "flights" / f"{day}.csv"
    write_frame_atomically(good_frame(day).drop(columns=["distance"]), path)
    return path


def extra_column(root, day):
    path = root / "flights" / f"{day}.parquet"
    write_frame_atomically(good_frame(day).assign(gate_number="B12"), path)
    return path


def wrong_type(root, day):
    frame = good_frame(day).astype({"dep_delay": object})
    frame.loc[7, "dep_delay"] = "late"
    path = root / "flights" / f"{day}.csv"
    write_frame_atomically(frame, path)
    return path


def another_days_rows(root, day):
    path = root / "flights" / f"{day}.parquet"
    write_frame_atomically(good_frame(day - timedelta(days=1)), path)
    return path


def duplicate_keys(root, day):
    frame = good_frame(day)
    path = root / "flights" / f"{day}.parquet"
    write_frame_atomically(pd.concat([frame, frame.head(4)], ignore_index=True), path)
    return path


def negative_distance(root, day):
    frame = good_frame(day)
    frame.loc[[3, 9], "distance"] = -250.0
    path = root / "flights" / f"{day}.parquet"
    write_frame_atomically(frame, path)
    return path


def null_keys(root, day):
    frame = good_frame(day)
    frame.loc[[2, 5], "carrier"] = None
    path = root / "flights" / f"{day}.parquet"
    write_frame_atomically(frame, path)
    return path


def not_a_date(root, day):
    path = root / "flights" / f"{day:%Y%m%d}.parquet"
    write_frame_atomically(good_frame(day), path)
    return path


def _linked_out(root: Path, day: date, folder: str, relative: bool) -> Path:
    """A good file for ``day`` in ``folder`` beside the landing root, linked into its flights."""
    outside = root.parent / folder / f"{day}.parquet"
    write_frame_atomically(good_frame(day), outside)
    path = root / "flights" / f"{day}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(Path("..") / ".." / folder / f"{day}.parquet" if relative else outside)
    return path


def symlink_outside(root, day):
    return _linked_out(root, day, "outside", relative=False)


def dotdot_outside(root, day):
    """A relative link that climbs out with ``..``."""
    return _linked_out(root, day, "dotdot", relative=True)


@dataclass(frozen=True)
class Case:
    name: str
    offset: int  # days after the day ingested before any bad file arrives
    deliver: Callable[[Path, date], Path]
    # "read": refused when read (sensor skips it, run fails); "check": read fine, a blocking
    # check fails; "warn": ingested with a warning; "absent": not a delivery for any day.
    stage: str
    problem: tuple[str, ...]
    check: str | None = None


CASES = [
    Case("empty file", 1, empty, "read", ("file is empty (0 bytes)",)),
    Case("truncated Parquet", 2, truncated_parquet, "read", ("unreadable parquet file",)),
    Case("CSV with a missing column", 3, csv_missing_column, "read", ("missing column(s) distance",)),
    Case("extra unknown column", 4, extra_column, "warn", ("ignored unknown column(s) gate_number",)),
    Case(
        "column of the wrong type",
        5,
        wrong_type,
        "read",
        ("column 'dep_delay'", "does not convert to DOUBLE"),
    ),
    Case(
        "rows dated outside the file's day", 6, another_days_rows, "read", ("dated outside the file's day",)
    ),
    Case("duplicate flight keys", 7, duplicate_keys, "check", ("duplicate_rows",), "key_unique"),
    Case("negative distance", 8, negative_distance, "read", ("column distance: -250", "outside 0..10000")),
    Case("nulls in key columns", 9, null_keys, "read", ("null values in required column(s) carrier (2)",)),
    Case("file name that is not a date", 10, not_a_date, "absent", ("file name is not <YYYY-MM-DD>",)),
    Case(
        "symlink to a file outside the landing root",
        11,
        symlink_outside,
        "read",
        ("outside the landing root",),
    ),
    Case(
        "relative '..' link outside the landing root",
        12,
        dotdot_outside,
        "read",
        ("outside the landing root",),
    ),
]
