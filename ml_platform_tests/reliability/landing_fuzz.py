"""Corrupted landing deliveries for ``test_fuzz_landing.py``, each drawn with the verdict a correct
reader must reach: stored as exactly ``expected``, or refused naming the file.

A delivery starts from the packaged rows of its day and goes through four stages, in the order
upstream's own mistakes would happen: rows (dropped, duplicated, shuffled), values (boundary,
out of range, nulls, codes, dates and instants), columns (reordered, renamed, dropped, duplicated,
retyped, an extra one) and bytes (format, delimiter, null spelling, encoding, compression,
truncation, an empty file, a second file in the other format). Each step says whether it makes
the file one that cannot be right; the verdict is refuse when any step that still applies does.
About a third of the deliveries are hostile: one of their stages may do harm, the others only
what a correct reader must take in its stride; the rest are benign through and through. Choices
come from a generator seeded by a number Hypothesis draws (and replays): spread evenly, where
Hypothesis's own strategies bunch at their simplest values.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

from ml_platform.ingestion.schemas import DAILY_TABLES, TableSpec
from ml_platform.ingestion.source import PackagedSource

DAYS = [date(2013, 3, 4) + timedelta(days=i) for i in range(5)]  # no clock change near them
# Every n-th row of a packaged day: small files keep thousands of deliveries within minutes.
EVERY = {"flights": 12, "weather": 2}
BAD_CODES = ["ZZ", "zz", " UA", "NA", "", "Ü9", "TOOLONG9"]


@lru_cache(maxsize=16)
def clean(table: str, day: date) -> pd.DataFrame:
    frame = PackagedSource().read_days(table, day, day + timedelta(days=1)).frame
    return frame.iloc[:: EVERY[table]].reset_index(drop=True)


@dataclass
class Delivery:
    table: str
    day: date
    files: dict[str, bytes]  # "parquet" / "csv" -> content; two entries: the day delivered twice
    marker: bool  # upstream declares the day really empty
    expected: pd.DataFrame  # what a correct reading stores (declared types)
    refuse: bool
    steps: list[str] = field(default_factory=list)


@dataclass
class _Draft:
    spec: TableSpec
    frame: pd.DataFrame  # what is written (may carry other types)
    expected: pd.DataFrame
    steps: list[str] = field(default_factory=list)
    column_faults: list[str] = field(default_factory=list)
    row_faults: list[tuple[str, set[int]]] = field(default_factory=list)  # fault, rows it is in
    touched: set[str] = field(default_factory=set)
    retyped: str = ""
    hostile: str = ""  # the stage that may do harm: rows, values, columns or bytes


def _pick(rng: random.Random, d: _Draft, stage: str, benign: list[str], harmful: list[str]) -> str:
    """A benign choice, or (mostly) a harmful one in the delivery's hostile stage."""
    if d.hostile == stage and harmful and (not benign or rng.random() < 0.75):
        return rng.choice(harmful)
    return rng.choice(benign)


def delivery(draw, table: str, day: date) -> Delivery:
    spec = DAILY_TABLES[table]
    base = clean(table, day)
    d = _Draft(spec, base.copy(), base.copy())
    rng = random.Random(draw(st.integers(0, 2**64 - 1)))
    if rng.random() < 1 / 3:
        d.hostile = rng.choice(["rows", "values", "columns", "bytes", "bytes"])
        d.steps.append(f"hostile {d.hostile}")
    _rows(rng, d)
    for _ in range(max(rng.choice([0, 1, 1, 2]), d.hostile == "values")):
        _value(rng, d)
    _columns(rng, d)
    fmt, content, kept = _bytes(rng, d, rng.choice(["parquet", "csv"]))
    expected = d.expected.iloc[:kept].reset_index(drop=True) if kept is not None else d.expected
    files = {fmt: content}
    if d.hostile == "bytes" and rng.random() < 0.15:
        other = "csv" if fmt == "parquet" else "parquet"
        files[other] = _serialize(d.expected, other)
        d.column_faults.append("the day delivered twice, in both formats")
    marker = rng.random() < (0.5 if len(expected) == 0 else 0.05)
    rows = len(expected)
    faults = list(d.column_faults) + [f for f, where in d.row_faults if any(r < rows for r in where)]
    if rows == 0 and not marker:
        faults.append("no rows")
    filled = [c.name for c in spec.columns if c.filled]
    if rows and any(expected[c].isna().all() for c in filled):
        faults.append("an outcome missing on every row")
    d.steps.append(f"marker={marker}; faults: {faults or 'none'}")
    return Delivery(table, day, files, marker, expected, bool(faults), d.steps)


# --- rows --------------------------------------------------------------------------------------


def _rows(rng: random.Random, d: _Draft) -> None:
    n = len(d.frame)
    kind = _pick(rng, d, "rows", ["keep", "keep", "drop", "duplicate", "shuffle"], ["none_left"])
    if kind == "keep" or n == 0:
        return
    if kind == "none_left":
        keep = np.array([], dtype=int)
    elif kind == "drop":
        keep = np.array(sorted(rng.sample(range(n), int(n * rng.uniform(0.05, 0.95)))), dtype=int)
    elif kind == "duplicate":
        keep = np.concatenate([np.arange(n), [rng.randrange(n) for _ in range(rng.randint(1, 5))]])
    else:
        keep = np.array(rng.sample(range(n), n), dtype=int)
    d.frame = d.frame.iloc[keep].reset_index(drop=True)
    d.expected = d.expected.iloc[keep].reset_index(drop=True)
    d.steps.append(f"rows {kind} ({len(keep)} of {n})")


# --- values ------------------------------------------------------------------------------------


def _value(rng: random.Random, d: _Draft) -> None:
    n = len(d.frame)
    if n == 0:
        return
    spec = d.spec
    free = [c for c in spec.columns if c.name not in d.touched]
    col = rng.choice(free)
    rows = sorted({rng.randrange(n) for _ in range(rng.randint(1, 3))})
    kinds = _value_kinds(spec, col)
    benign = [k for k in kinds if k in BENIGN_VALUES and (col.nullable or not k.startswith("null"))]
    if col.filled:
        benign = [k for k in benign if k != "null_all"]
    if not benign and d.hostile != "values":
        return
    kind = _pick(rng, d, "values", benign, [k for k in kinds if k not in benign])
    d.touched.add(col.name)
    refuse, value = True, None
    if kind == "boundary":
        value, refuse = rng.choice([col.minimum, col.maximum]), False
    elif kind == "out_of_range":
        step = rng.choice([1, 7, 10**6])
        value = col.maximum + step if rng.random() < 0.5 else col.minimum - step
    elif kind == "not_a_clock":
        value = rng.choice([1260, 1375, 99, 1230.5 if col.sql_type == "DOUBLE" else 1961])
    elif kind == "infinite":
        value = rng.choice([np.inf, -np.inf])
    elif kind == "null":
        value, refuse = None, not col.nullable
    elif kind == "null_all":
        rows, value, refuse = list(range(n)), None, not col.nullable
    elif kind == "bad_code":  # an empty text is how CSV writes a null: a code only where required
        value = rng.choice([c for c in BAD_CODES if c or not col.nullable])
    elif kind == "good_code":
        value, refuse = {"dest": "XYZ", "tailnum": "N9ZZ"}.get(col.name, "UA"), False
    elif kind == "other_day":
        value = pd.Timestamp(d.expected[col.name].iloc[0]) + pd.Timedelta(days=rng.choice([1, -1, 40]))
    elif kind == "shifted_instant":
        shift = pd.Timedelta(hours=rng.choice([1, -1, 5, -5]))
        value = d.expected[col.name].iloc[rows] + shift
    elif kind == "disagreeing_part":
        value = (d.expected[col.name].iloc[rows] % {"hour": 23, "month": 12}.get(col.name, 28)) + 1
    _set(d, col.name, rows, value)
    d.steps.append(f"{col.name} {kind} in rows {rows[:3]}{'...' if len(rows) > 3 else ''}")
    if refuse:
        d.row_faults.append((f"{col.name} {kind}", set(rows)))


BENIGN_VALUES = {"boundary", "null", "null_all", "good_code"}


def _value_kinds(spec: TableSpec, col) -> list[str]:
    kinds = []
    rule_free = (
        col.name not in (spec.date_parts or ()) + (spec.clock_parts or ()) + (spec.local_hour or ())[:2]
    )
    if col.minimum is not None:
        kinds.append("out_of_range")
        if rule_free:
            kinds.append("boundary")
    if col.clock:
        kinds.append("not_a_clock")
    if col.sql_type == "DOUBLE":
        kinds.append("infinite")
    kinds += ["null", "null_all"]
    if col.pattern:
        kinds += ["bad_code"] + (["good_code"] if col.name in ("dest", "tailnum", "carrier") else [])
    if col.name == spec.partition_column:
        kinds.append("other_day")
    if col.sql_type == "TIMESTAMPTZ":
        kinds.append("shifted_instant")
    if col.name in (spec.date_parts or ()) or col.name == "hour":
        kinds.append("disagreeing_part")
    return kinds


def _set(d: _Draft, name: str, rows: list[int], value) -> None:
    for frame in (d.frame, d.expected):
        frame.loc[rows, name] = value.to_numpy() if isinstance(value, pd.Series) else value


# --- columns -----------------------------------------------------------------------------------


def _columns(rng: random.Random, d: _Draft) -> None:
    spec = d.spec
    if rng.random() < 0.5:
        d.frame = d.frame[rng.sample(list(d.frame.columns), len(d.frame.columns))]
        d.steps.append("columns reordered")
    change = _pick(
        rng, d, "columns", ["none", "none", "extra", "retype", "derive"], ["drop", "rename", "retype"]
    )
    name = None
    if change == "derive":  # the day column left out (or renamed): derived from year/month/day
        change = rng.choice(["drop", "rename"])
        if spec.partition_column in d.touched:
            return
        name = spec.partition_column
    if change == "extra":
        d.frame = d.frame.assign(gate_number="B12")
    elif change in ("drop", "rename"):
        if name is None:
            name = rng.choice(spec.column_names[1:])
        d.frame = (
            d.frame.drop(columns=[name]) if change == "drop" else d.frame.rename(columns={name: "renamed"})
        )
        if name != spec.partition_column:  # the day is derived from year/month/day
            d.column_faults.append(f"column {name} {dict(drop='dropped', rename='renamed')[change]}")
    elif change == "retype":
        _retype(rng, d)
        return
    d.steps.append(f"column change: {change}")


def _retype(rng: random.Random, d: _Draft) -> None:
    col = rng.choice(d.spec.columns)
    values = d.frame[col.name]
    options = {"strings": True}
    if col.sql_type == "BIGINT":
        options.update(floats=True, booleans=False)
    if col.sql_type == "DOUBLE":
        options.update(float32=True, booleans=False)
    if col.sql_type == "VARCHAR":
        options.update(category=True)
    if col.sql_type == "TIMESTAMPTZ":
        options.update(new_york=True, naive=False)
    if col.sql_type == "DATE":
        options.update(date_objects=True, us_format=False)
    how = _pick(
        rng,
        d,
        "columns",
        sorted(o for o, ok in options.items() if ok),
        sorted(o for o, ok in options.items() if not ok),
    )
    if how == "strings":
        if col.sql_type == "DATE":
            strings = values.dt.strftime("%Y-%m-%d")
        else:
            strings = values.map(lambda v: repr(v) if isinstance(v, float) else str(v), na_action="ignore")
        values = strings.astype(object).where(values.notna(), None)
    elif how == "floats":
        values = values.astype("float64")
    elif how == "booleans":
        values = values.notna()
    elif how == "float32":
        values = values.astype("float32")
        d.expected[col.name] = values.astype("float64")
    elif how == "category":
        values = values.astype("category")
    elif how == "new_york":
        values = values.dt.tz_convert("America/New_York")
    elif how == "naive":
        values = values.dt.tz_localize(None)
    elif how == "date_objects":
        values = values.dt.date.astype(object).where(values.notna(), None)
    elif how == "us_format":
        values = values.dt.strftime("%m/%d/%Y")
    d.frame[col.name] = values
    d.steps.append(f"column {col.name} retyped: {how}")
    d.retyped = how
    if how == "booleans" or (not options[how] and d.expected[col.name].notna().any()):
        d.column_faults.append(f"column {col.name} as {how}")


# --- bytes -------------------------------------------------------------------------------------


def _serialize(frame: pd.DataFrame, fmt: str, **csv_options) -> bytes:
    if fmt == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False, compression=csv_options.get("compression", "snappy"))
        return buffer.getvalue()
    return frame.to_csv(index=False, lineterminator="\n", **csv_options).encode("utf-8")


def _bytes(rng: random.Random, d: _Draft, fmt: str) -> tuple[str, bytes, int | None]:
    """The file's format and content, and how many rows of ``expected`` it still holds (None:
    all)."""
    if d.retyped == "float32" and fmt == "csv":
        fmt = "parquet"  # CSV text of a float32 is a different number than the float32 itself
    if fmt == "parquet":
        compression = rng.choice(["snappy", "zstd", "gzip", "none"])
        content = _serialize(d.frame, "parquet", compression=None if compression == "none" else compression)
        if d.hostile == "bytes" and rng.random() < 0.15 and d.frame.columns.is_unique:
            table = pa.Table.from_pandas(d.frame, preserve_index=False)
            name = rng.choice(d.spec.column_names)
            if name in table.column_names:
                table = table.append_column(name, table.column(name))
                buffer = io.BytesIO()
                pq.write_table(table, buffer)
                content = buffer.getvalue()
                d.column_faults.append(f"column {name} twice")
    else:
        content = _csv(rng, d)
    damage = _pick(rng, d, "bytes", ["none", "none", "none", "lines"], ["none", "gzip", "truncate", "empty"])
    d.steps.append(f"{fmt}, {damage}")
    if damage == "gzip":
        d.column_faults.append("gzip content")
        return fmt, gzip.compress(content), None
    if damage == "empty":
        d.column_faults.append("0 bytes")
        return fmt, b"", None
    if damage == "lines" and fmt == "csv" and not content.startswith((b"\xff\xfe", b"\xfe\xff")):
        # Cut exactly after a line: its first rows, undetectable in CSV and correct to store.
        ends = [i + 1 for i, b in enumerate(content) if b == 0x0A]
        keep = rng.randint(1, len(ends))
        return fmt, content[: ends[keep - 1]], keep - 1
    if damage == "truncate" and len(content) > 1:
        cut = rng.randint(1, len(content) - 1)
        return fmt, content[:cut], _rows_kept(d, fmt, content, cut)
    return fmt, content, None


def _csv(rng: random.Random, d: _Draft) -> bytes:
    options = {}
    hostile = d.hostile == "bytes"
    if hostile and rng.random() < 0.2:
        options["sep"] = rng.choice([";", "\t", "|"])
        d.column_faults.append(f"delimiter {options['sep']!r}")
    if hostile and rng.random() < 0.2:
        options["na_rep"] = "NA"
        declared = [c for c in d.spec.column_names if c in d.frame.columns]
        nulls = set(np.flatnonzero(d.frame[declared].isna().any(axis=1).to_numpy()).tolist())
        if nulls:
            d.row_faults.append(("a null written NA", nulls))
    if rng.random() < 0.15:
        options["quoting"] = csv.QUOTE_ALL
    if hostile and d.frame.columns.is_unique and rng.random() < 0.15:
        name = rng.choice(list(d.frame.columns))
        d.frame = pd.concat([d.frame, d.frame[[name]]], axis=1)
        d.column_faults.append(f"column {name} twice in the header")
    text = d.frame.to_csv(index=False, lineterminator="\n", **options)
    encoding = _pick(rng, d, "bytes", ["utf-8", "utf-8", "utf-8-sig"], ["utf-8", "utf-8", "utf-16"])
    if encoding == "utf-16":
        d.column_faults.append("UTF-16")
    elif not text.isascii():
        encoding = _pick(rng, d, "bytes", [encoding], ["latin-1"])
        if encoding == "latin-1":
            d.column_faults.append("Latin-1")
    d.steps.append(f"csv {options} {encoding}")
    return text.encode(encoding)


def _rows_kept(d: _Draft, fmt: str, content: bytes, cut: int) -> int:
    """A CSV cut exactly after a line holds its first rows (undetectable, and correct to store);
    anything else cut is a file that cannot be right."""
    ends = [i + 1 for i, b in enumerate(content) if b == 0x0A]
    if fmt == "csv" and cut in ends and not content.startswith((b"\xff\xfe", b"\xfe\xff")):
        return ends.index(cut)  # lines before the cut, less the header
    d.column_faults.append(f"cut at byte {cut} of {len(content)}")
    return 0
