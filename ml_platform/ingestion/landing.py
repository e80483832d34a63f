"""Landing days from the packaged dataset into a landing directory, as upstream would."""

from datetime import date, timedelta
from pathlib import Path

from ml_platform.ingestion.schemas import DAILY_TABLES, REFERENCE_TABLES
from ml_platform.ingestion.source import EMPTY_DIR, REFERENCE_DIR, PackagedSource, write_frame_atomically

FORMATS = ("parquet", "csv")


def declare_empty(root: Path, table: str, day: date) -> Path:
    """Upstream's word that ``day`` of ``table`` really has no rows: without it an empty delivery
    is refused, since upstream fills every day."""
    marker = Path(root) / EMPTY_DIR / table / day.isoformat()
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"upstream has no {table} rows for {day.isoformat()}\n")
    return marker


def land_days(
    start: date, days: int, root: Path, fmt: str = "parquet", *, reference: bool = True, echo=print
) -> list[Path]:
    """Write ``days`` days from ``start`` (flights and weather, one file per day and table).

    A day with no rows upstream is still delivered, as an empty file with the declared columns,
    so that "nothing happened" is distinguishable from "nothing arrived", together with the marker
    ``<root>/empty/<table>/<day>`` that says the day is really empty (an empty file alone is
    refused: upstream fills every day).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    source = PackagedSource()
    # A day the packaged data does not cover would land as an empty file, i.e. as "no flights
    # that day": refuse it instead of fabricating a delivery.
    covered = source.available_days("flights")
    last = start + timedelta(days=days - 1)
    if start < covered[0] or last > covered[-1]:
        raise ValueError(
            f"{start.isoformat()}..{last.isoformat()} is not inside the packaged data "
            f"({covered[0].isoformat()}..{covered[-1].isoformat()})"
        )
    root = Path(root)
    written: list[Path] = []
    if reference:
        for table in REFERENCE_TABLES:
            path = root / REFERENCE_DIR / f"{table}.parquet"
            write_frame_atomically(source.read_reference(table).frame, path)
            written.append(path)
    for offset in range(days):
        day = start + timedelta(days=offset)
        for table in DAILY_TABLES:
            frame = source.read_days(table, day, day + timedelta(days=1)).frame
            path = root / table / f"{day.isoformat()}.{fmt}"
            if frame.empty:
                written.append(declare_empty(root, table, day))
            write_frame_atomically(frame, path)
            written.append(path)
        echo(f"landed {day.isoformat()} ({offset + 1}/{days}) into {root}")
    return written
