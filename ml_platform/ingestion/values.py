"""One landed file's columns converted to the declared types, by that file alone.

Stricter than ``schemas.conform`` (which also serves the packaged data): a value converts only
when it can mean one thing. Dates are YYYY-MM-DD, instants carry their UTC offset, numbers are
written as numbers, text is text; anything else is refused naming the column, value and row.
Columns come back as arrays, so a year of files is combined column by column without building a
frame per file; a column already of the declared type costs nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import pandas as pd

from ml_platform.ingestion.schemas import NULL_SPELLINGS, Column, TableSpec, extra_columns

ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
ISO_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})")
NUMBER = re.compile(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*")
INT64_MAX = 2**63 - 1
DECLARED = {
    "DATE": np.dtype("datetime64[us]"),
    "TIMESTAMPTZ": pd.DatetimeTZDtype("us", "UTC"),
    "BIGINT": pd.Int64Dtype(),
    "DOUBLE": np.dtype("float64"),
    "VARCHAR": pd.StringDtype("python"),
}


class ValueFault(ValueError):
    """A column of one file does not convert; the message says why, in the data's words."""


@dataclass(frozen=True)
class Converted:
    columns: dict[str, object]  # declared column -> numpy or extension array of its declared type
    rows: int


@dataclass(frozen=True)
class Layout:
    """One file's columns: whether its day is derived from year/month/day, its unknown columns,
    and the types of its declared ones (files of one signature convert as one frame)."""

    derive: bool
    extra: list[str]
    signature: tuple


def layout(frame: pd.DataFrame, spec: TableSpec) -> Layout:
    """Every declared column present once (the day may be derived). Raises ``ValueFault``."""
    names = list(frame.columns)
    types = dict(zip(names, frame.dtypes.tolist(), strict=True))
    if len(types) < len(names):
        twice = sorted({str(c) for c in names if names.count(c) > 1})
        raise ValueFault(f"column(s) {', '.join(twice)} appear more than once")
    parts, day = spec.date_parts, spec.partition_column
    # Only a day partition column is derived from the parts that name it (never an hour).
    derive = bool(
        day is not None and spec.day == day and day not in types and parts and all(p in types for p in parts)
    )
    missing = [c for c in spec.column_names if c not in types and not (derive and c == day)]
    if missing:
        raise ValueFault(f"{spec.name} is missing column(s) {', '.join(missing)}")
    signature = (derive, *((c, types[c]) for c in spec.column_names if c in types))
    return Layout(derive, extra_columns(frame, spec), signature)


def convert_frame(frame: pd.DataFrame, spec: TableSpec, derive: bool) -> Converted:
    """The declared columns converted, value by value: one file, or files of one signature
    combined (each value converts the same either way). Raises ``ValueFault``."""
    out = {}
    day = spec.partition_column
    for col in spec.columns:
        if derive and col.name == day:
            continue
        try:
            out[col.name] = convert(frame[col.name], col)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueFault(
                f"column {col.name!r} of {spec.name} does not convert to {col.sql_type}: {exc}"
            ) from exc
    if derive:
        out[day] = _date_from_parts(out, spec.date_parts)
    return Converted({c: out[c] for c in spec.column_names}, len(frame))


def convert(values: pd.Series, col: Column):
    declared = DECLARED[col.sql_type]
    python_strings = col.sql_type != "VARCHAR" or type(values.array) is pd.arrays.StringArray
    if values.dtype == declared and python_strings:
        return values.array if isinstance(declared, pd.api.extensions.ExtensionDtype) else values.to_numpy()
    if isinstance(values.dtype, pd.CategoricalDtype):  # dictionary-encoded values are still values
        values = values.astype(object).where(values.notna(), None)
    if len(values) == 0 or _all_null(values):
        # Nulls of the declared type, in the same kind of array as any other file's column.
        if isinstance(declared, np.dtype):
            missing = np.datetime64("NaT") if declared.kind == "M" else np.nan
            return np.full(len(values), missing, dtype=declared)
        return pd.array([None] * len(values), dtype=declared)
    return CONVERTERS[col.sql_type](values)


def _all_null(values: pd.Series) -> bool:
    """Whether every value is missing, cheaply for what CSV and Parquet readers give."""
    kind = values.dtype.kind
    if kind in "iub":
        return False
    if kind == "f":
        return bool(np.isnan(values.to_numpy()).all())
    if kind == "O":
        return pd.api.types.infer_dtype(values, skipna=True) == "empty"
    return bool(values.isna().all())


def _date_from_parts(out: dict, parts: tuple[str, str, str]) -> np.ndarray:
    """The day each row's year/month/day names (a null part makes a null day)."""
    year, month, day = (np.asarray(out[p].to_numpy(dtype="float64", na_value=np.nan)) for p in parts)
    known = ~(np.isnan(year) | np.isnan(month) | np.isnan(day))
    y, m, d = (np.where(known, v, 1).astype("int64") for v in (year, month, day))
    valid = (m >= 1) & (m <= 12) & (y >= 1) & (y <= 9999)
    months = (np.where(valid, y, 1970) - 1970) * 12 + np.where(valid, m, 1) - 1
    first = months.astype("datetime64[M]").astype("datetime64[D]")
    length = ((months + 1).astype("datetime64[M]").astype("datetime64[D]") - first).astype("int64")
    valid &= (d >= 1) & (d <= length)
    bad = known & ~valid
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        values = "-".join(str(int(v[row])) for v in (year, month, day))
        raise ValueFault(f"{'/'.join(parts)} {values} in row {row + 1} is not a calendar date")
    days = first + (d - 1).astype("timedelta64[D]")
    return np.where(known, days, np.datetime64("NaT")).astype("datetime64[us]")


def _row(mask) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0]) + 1


KINDS = {
    "string": "text",
    "integer": "number",
    "floating": "number",
    "mixed-integer-float": "number",
    "decimal": "number",
    "boolean": "bool",
    "date": "naive",
    "datetime64": "naive",
    "bytes": "binary",
}


def _kind(values: pd.Series) -> str:
    """What a column holds: text, number, bool, naive (dates or times), instant, or other."""
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype):
        return "text"
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "instant"
    if pd.api.types.is_datetime64_dtype(dtype):
        return "naive"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    if inferred == "datetime":
        return "naive" if values.dropna().iloc[0].tzinfo is None else "instant"
    return KINDS.get(inferred, "mixed")


def _unexpected(kind: str, expected: str) -> ValueFault:
    words = {"bool": "true/false values", "naive": "dates or times", "instant": "timestamps"}
    return ValueFault(f"{words.get(kind, kind + ' values')} where {expected} are expected")


def _date(values: pd.Series) -> np.ndarray:
    kind = _kind(values)
    if kind == "text":
        return _parse_text(values, ISO_DATE, "a date written YYYY-MM-DD", _iso_day)
    if kind == "naive":  # a time of day is refused by the rules
        return pd.to_datetime(values).to_numpy().astype("datetime64[us]")
    if kind == "instant":
        raise ValueFault("values carry a time zone; expected dates")
    raise _unexpected(kind, "dates")


def _instant(values: pd.Series):
    kind = _kind(values)
    if kind == "text":
        meaning = "a timestamp with its UTC offset (2013-01-01 05:00:00+00:00)"
        return pd.array(_parse_text(values, ISO_INSTANT, meaning, _iso_instant)).tz_localize("UTC")
    if kind == "instant":
        return pd.to_datetime(values, utc=True).astype(DECLARED["TIMESTAMPTZ"]).array
    if kind == "naive":
        raise ValueFault("timestamps without a time zone; expected them with their UTC offset")
    raise _unexpected(kind, "timestamps")


def _iso_day(text: str) -> np.datetime64:
    return np.datetime64(date.fromisoformat(text), "D")


def _iso_instant(text: str) -> np.datetime64:
    moment = datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None)
    return np.datetime64(moment, "us")


def _parse_text(values: pd.Series, pattern: re.Pattern, meaning: str, parse) -> np.ndarray:
    """Each distinct text parsed once (a day repeats the same few dates and hours); the first
    that is not ``meaning`` is named with its row."""
    codes, unique = pd.factorize(values)
    parsed = []
    for text in unique:
        try:
            if not pattern.fullmatch(text):
                raise ValueError(text)
            parsed.append(parse(text))
        except (ValueError, OverflowError):
            raise ValueFault(f"{text!r} in row {_row(codes == len(parsed))} is not {meaning}") from None
    table = np.array([*parsed, np.datetime64("NaT")], dtype="datetime64[us]")
    return table[codes]  # code -1 (a null) takes the trailing NaT


def _bigint(values: pd.Series):
    if values.dtype == np.int64:  # a CSV column of integers
        return pd.arrays.IntegerArray(values.to_numpy(), np.zeros(len(values), dtype=bool))
    numbers, mask = _numbers(values)
    if numbers.dtype.kind == "i":
        return pd.arrays.IntegerArray(numbers, mask)
    for wrong, says in (
        (np.isinf(numbers), "is not a finite number"),
        (np.fmod(numbers, 1) != 0, "is not a whole number"),
        (np.abs(numbers) >= 2.0**63, "overflows BIGINT"),
    ):
        wrong &= ~np.isnan(numbers)
        if wrong.any():
            row = _row(wrong)
            raise ValueFault(f"{float(numbers[row - 1])!r} in row {row} {says}")
    nulls = np.isnan(numbers)
    return pd.arrays.IntegerArray(np.where(nulls, 0, numbers).astype("int64"), nulls)


def _double(values: pd.Series) -> np.ndarray:
    numbers, mask = _numbers(values)  # infinite or out-of-range values are refused by the rules
    return np.where(mask, np.nan, numbers.astype("float64")) if numbers.dtype.kind == "i" else numbers


def _numbers(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """int64 values and their null mask, or float64 values (NaN for null) and a mask of nulls:
    a numeric column as is, text only where every value is written as a number."""
    kind = _kind(values)
    if kind == "number" and values.dtype == object:
        try:
            values = pd.to_numeric(values)
        except (ValueError, OverflowError) as exc:
            raise ValueFault(f"numbers that do not fit a 64-bit column ({exc})") from exc
    if kind == "number":
        mask = values.isna().to_numpy() if values.hasnans else np.zeros(len(values), dtype=bool)
        if pd.api.types.is_integer_dtype(values.dtype):
            if pd.api.types.is_unsigned_integer_dtype(values.dtype) and (values.fillna(0) > INT64_MAX).any():
                row = _row(values.fillna(0) > INT64_MAX)
                raise ValueFault(f"{values.iloc[row - 1]} in row {row} overflows BIGINT")
            return values.to_numpy(dtype="int64", na_value=0), mask
        return values.to_numpy(dtype="float64", na_value=np.nan), mask
    if kind != "text":
        raise _unexpected(kind, "numbers")
    codes, unique = pd.factorize(values)
    parsed = []
    for text in unique:
        if not NUMBER.fullmatch(text):
            hint = " (a null is an empty field)" if text.strip() in NULL_SPELLINGS else ""
            raise ValueFault(f"{text!r} in row {_row(codes == len(parsed))} is not a number{hint}")
        parsed.append(_parse_number(text))
    mask = codes < 0
    huge = [t for t, p in zip(unique, parsed, strict=True) if isinstance(p, int) and abs(p) > INT64_MAX]
    if huge:
        row = _row(codes == list(unique).index(huge[0]))
        raise ValueFault(f"{huge[0].strip()} in row {row} overflows a 64-bit integer")
    if all(isinstance(p, int) for p in parsed):
        return np.array([*parsed, 0], dtype="int64")[codes], mask
    return np.array([*parsed, np.nan], dtype="float64")[codes], mask


def _parse_number(text: str) -> int | float:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return float(text)


def _text(values: pd.Series):
    kind = _kind(values)
    if kind != "text":
        raise _unexpected(kind, "text values")
    return pd.array(values, dtype=DECLARED["VARCHAR"])


CONVERTERS = {
    "DATE": _date,
    "TIMESTAMPTZ": _instant,
    "BIGINT": _bigint,
    "DOUBLE": _double,
    "VARCHAR": _text,
}
