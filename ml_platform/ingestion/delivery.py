"""One landed file's bytes, read as what upstream wrote: Parquet, or UTF-8 CSV with commas.

Content that cannot be what upstream meant (compressed or binary content under a .csv name,
another encoding, another delimiter, a file cut off mid-row) is refused here with the file and
the fault, before any value is interpreted. ``judge.py`` then holds the values to the schema.
"""

from __future__ import annotations

import csv
import io
import os
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from ml_platform.ingestion.schemas import TableSpec

DAY_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})\.(parquet|csv)$")
# An hourly delivery: <YYYY-MM-DD>T<HH>, the UTC hour [HH:00, HH+1:00) it holds the events of.
HOUR_FILE = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2})\.(parquet|csv)$")
# Leading bytes of content that is not CSV text, whatever the file's name says.
MAGIC = {
    b"\x1f\x8b": "gzip-compressed",
    b"PK\x03\x04": "zip-compressed",
    b"BZh": "bzip2-compressed",
    b"\xfd7zXZ\x00": "xz-compressed",
    b"\x28\xb5\x2f\xfd": "zstd-compressed",
    b"PAR1": "Parquet",
}
OTHER_DELIMITERS = (";", "\t", "|")


class SourceError(ValueError):
    """Upstream delivered something unusable; the message names the file or day and the problem."""


def day_of_file(path: Path) -> date:
    match = DAY_FILE.match(path.name)
    if not match:
        raise SourceError(f"{path}: file name is not <YYYY-MM-DD>.parquet or <YYYY-MM-DD>.csv")
    try:
        return date.fromisoformat(match.group(1))
    except ValueError as exc:
        raise SourceError(f"{path}: file name is not a calendar date") from exc


def hour_of_file(path: Path) -> datetime:
    """The UTC hour an hourly file is named for."""
    match = HOUR_FILE.match(path.name)
    if not match:
        raise SourceError(f"{path}: file name is not <YYYY-MM-DD>T<HH>.parquet or <YYYY-MM-DD>T<HH>.csv")
    try:
        day, hour = date.fromisoformat(match.group(1)), int(match.group(2))
        return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)
    except ValueError as exc:
        raise SourceError(f"{path}: file name is not a calendar date and hour (00..23)") from exc


def hour_name(hour: datetime) -> str:
    """The file stem of an hour's delivery (``2013-06-01T14``), from any aware instant."""
    return hour.astimezone(UTC).strftime("%Y-%m-%dT%H")


def stat(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def read_file(path: Path, spec: TableSpec | None = None) -> pd.DataFrame:
    """The file as a frame of unconverted values; every refusal names the file."""
    if not path.exists():
        raise SourceError(f"{path}: file does not exist")
    data = path.read_bytes()
    if not data:
        raise SourceError(f"{path}: file is empty (0 bytes)")
    kind = next((name for magic, name in MAGIC.items() if data.startswith(magic)), None)
    if path.suffix == ".parquet":
        if kind != "Parquet":
            raise SourceError(f"{path}: unreadable parquet file: {_not_parquet(kind, data)}")
        if not data.endswith(b"PAR1"):
            raise SourceError(f"{path}: unreadable parquet file: truncated (no Parquet footer at the end)")
        try:
            return pd.read_parquet(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 - any reader failure is the file's fault
            raise SourceError(f"{path}: unreadable parquet file: {exc}") from exc
    if path.suffix == ".csv":
        if kind is not None:
            raise SourceError(f"{path}: {kind} content in a .csv file")
        return _read_csv(path, _decode(path, data), spec)
    raise SourceError(f"{path}: unsupported file type {path.suffix!r}")


def _not_parquet(kind: str | None, data: bytes) -> str:
    if kind is not None:
        return f"{kind} content in a .parquet file"
    first_line = data[:4096].split(b"\n", 1)[0]
    if b"," in first_line and first_line.isascii():
        return "CSV text in a .parquet file (it does not start with PAR1)"
    return "not Parquet content (it does not start with PAR1)"


def _decode(path: Path, data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in data[:4096]:
        raise SourceError(f"{path}: text is UTF-16 (or holds NUL bytes), expected UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SourceError(
            f"{path}: text is not UTF-8: byte 0x{data[exc.start]:02x} on line {line} "
            "(Latin-1 or Windows-1252?); expected UTF-8"
        ) from exc
    return text.removeprefix("\ufeff")  # a byte-order mark says UTF-8 and nothing else


def _read_csv(path: Path, text: str, spec: TableSpec | None) -> pd.DataFrame:
    _check_csv_layout(path, text)
    # Only an empty field is missing (a code such as "NA" is a value), text columns stay text
    # whatever they look like, and floats read back exactly as they were written.
    strings = [c.name for c in spec.columns if c.sql_type == "VARCHAR"] if spec else []
    try:
        return pd.read_csv(
            io.StringIO(text),
            keep_default_na=False,
            na_values=[""],
            dtype={c: "string" for c in strings},
            float_precision="round_trip",
        )
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's fault
        raise SourceError(f"{path}: unreadable csv file: {exc}") from exc


def _check_csv_layout(path: Path, text: str) -> None:
    """Commas between fields, one name per column, and every record as long as the header: a file
    cut off mid-row (a partial write or transfer) is refused instead of read with the missing
    fields silently null, and so is one without its last line ending."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise SourceError(f"{path}: csv file has no header line")
    if len(header) == 1:
        used = [d for d in OTHER_DELIMITERS if d in header[0]]
        if used:
            raise SourceError(f"{path}: delimiter is {used[0]!r}, expected ','")
    twice = sorted({name for name in header if header.count(name) > 1})
    if twice:
        raise SourceError(f"{path}: column(s) {', '.join(twice)} appear more than once in the header")
    for row in reader:
        if row and len(row) != len(header):  # blank lines are skipped, as pandas does
            raise SourceError(
                f"{path}: line {reader.line_num} has {len(row)} field(s) but the header has "
                f"{len(header)}; the file is truncated or malformed"
            )
    if reader.line_num > 1 and not text.endswith(("\n", "\r")):
        raise SourceError(f"{path}: the last line has no line ending; the file is truncated")


def count_rows(path: Path) -> int:
    """Rows the file holds, counted apart from the reader; an unreadable file counts as none."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception:  # noqa: BLE001 - unreadable files count as nothing delivered
            return 0
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return max(sum(1 for row in csv.reader(fh) if row) - 1, 0)
    except (OSError, UnicodeDecodeError, csv.Error):
        return 0
