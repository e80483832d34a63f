"""Data-quality rules for a table batch, as plain functions over a frame.

Each rule returns an ``Outcome``; assets turn outcomes into Dagster asset-check results. The
rules read the table's single schema declaration, so adding a column constraint there adds it here.
A failed outcome keeps the rows at fault and their days, so a refused batch can show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import pandas as pd

from ml_platform.ingestion.schemas import TableSpec
from ml_platform.refusals import window_of

SAMPLE = 5


@dataclass(frozen=True)
class Outcome:
    name: str
    passed: bool
    description: str
    blocking: bool = True
    warn_only: bool = False
    metadata: dict = field(default_factory=dict)
    # Rows at fault (a failed row-level rule) and the partition days they, or the fault, are on.
    rows: pd.DataFrame | None = field(default=None, compare=False, repr=False)
    days: tuple[date, ...] = ()


def _sample(frame: pd.DataFrame, mask: pd.Series, columns: list[str]) -> str:
    return frame.loc[mask, columns].head(SAMPLE).to_string(index=False)


def _at_fault(frame: pd.DataFrame, mask: pd.Series, spec: TableSpec, columns=()) -> dict:
    """The rows selected by ``mask`` (their key and ``columns``) and their partition days, as
    ``Outcome`` fields."""
    if not mask.any():
        return {}
    shown = [c for c in dict.fromkeys([*spec.key, *columns]) if c in frame.columns]
    rows = frame.loc[mask, shown].sort_values([c for c in spec.key if c in shown], kind="stable")
    if not spec.partition_column or spec.partition_column not in frame.columns:
        return {"rows": rows}
    stamps = pd.to_datetime(frame.loc[mask, spec.partition_column], errors="coerce").dropna()
    return {"rows": rows, "days": tuple(sorted({s.date() for s in stamps}))}


def check_schema(frame: pd.DataFrame, spec: TableSpec) -> Outcome:
    expected = [(c.name, c.pandas_dtype) for c in spec.columns]
    actual = [(str(n), str(t)) for n, t in frame.dtypes.items()]
    wrong = [f"{e} expected, got {a}" for e, a in zip(expected, actual, strict=False) if e != a]
    if len(expected) != len(actual):
        wrong.append(f"{len(actual)} columns, {len(expected)} declared")
    return Outcome(
        "columns_and_types",
        not wrong,
        f"Columns of {spec.name} are exactly the declared ones, in order, with the declared types.",
        metadata={"problems": len(wrong), "details": "; ".join(wrong[:SAMPLE]) or "none"},
    )


def check_keys_not_null(frame: pd.DataFrame, spec: TableSpec) -> Outcome:
    required = [c.name for c in spec.columns if not c.nullable]
    nulls = {c: int(frame[c].isna().sum()) for c in required}
    bad = {c: n for c, n in nulls.items() if n}
    return Outcome(
        "required_columns_not_null",
        not bad,
        f"Key and required columns of {spec.name} have no nulls.",
        metadata={"null_values": int(sum(bad.values())), "by_column": str(bad or "none")},
        **_at_fault(frame, frame[required].isna().any(axis=1), spec, bad),
    )


def check_key_unique(frame: pd.DataFrame, spec: TableSpec) -> Outcome:
    dupes = frame.duplicated(list(spec.key), keep=False)
    count = int(frame.duplicated(list(spec.key)).sum())
    return Outcome(
        "key_unique",
        count == 0,
        f"Each ({', '.join(spec.key)}) appears once.",
        metadata={
            "duplicate_rows": count,
            "sample": _sample(frame, dupes, list(spec.key)) if count else "none",
        },
        **_at_fault(frame, dupes, spec),
    )


def check_value_ranges(frame: pd.DataFrame, spec: TableSpec, start: date | None, end: date | None) -> Outcome:
    problems: dict[str, int] = {}
    columns: list[str] = []
    bad_rows = pd.Series(False, index=frame.index)
    for col in spec.columns:
        if col.minimum is None and col.maximum is None:
            continue
        values = frame[col.name]
        mask = pd.Series(False, index=frame.index)
        if col.minimum is not None:
            mask |= (values < col.minimum).fillna(False)
        if col.maximum is not None:
            mask |= (values > col.maximum).fillna(False)
        if mask.any():
            problems[col.name] = int(mask.sum())
            columns.append(col.name)
            bad_rows |= mask
    if spec.partition_column and start and end:
        days = frame[spec.partition_column]
        mask = (days < pd.Timestamp(start)) | (days >= pd.Timestamp(end))
        if mask.any():
            problems[f"{spec.partition_column} outside {start}..{end}"] = int(mask.sum())
            columns.append(spec.partition_column)
            bad_rows |= mask
    return Outcome(
        "values_in_range",
        not problems,
        f"Values of {spec.name} lie in their declared ranges and dates inside the partition.",
        metadata={"rows_out_of_range": int(bad_rows.sum()), "by_column": str(problems or "none")},
        **_at_fault(frame, bad_rows, spec, columns),
    )


def check_row_counts(frame: pd.DataFrame, spec: TableSpec, expected: dict[date, int]) -> Outcome:
    stored = frame[spec.partition_column].dt.date.value_counts().to_dict() if len(frame) else {}
    days = sorted(set(stored) | set(expected))
    diffs = {
        d.isoformat(): (int(stored.get(d, 0)), int(expected.get(d, 0)))
        for d in days
        if stored.get(d, 0) != expected.get(d, 0)
    }
    return Outcome(
        "row_count_matches_source",
        not diffs,
        f"Rows per day of {spec.name} equal what the source holds for that day.",
        metadata={
            "rows": int(len(frame)),
            "source_rows": int(sum(expected.values())),
            "days_differing": len(diffs),
            "differences (stored, source)": str(dict(list(diffs.items())[:SAMPLE]) or "none"),
        },
        days=tuple(date.fromisoformat(d) for d in diffs),
    )


def check_every_day_has_rows(frame: pd.DataFrame, spec: TableSpec, days: list[date]) -> Outcome:
    present = set(frame[spec.partition_column].dt.date.unique()) if len(frame) else set()
    empty = [d.isoformat() for d in days if d not in present]
    return Outcome(
        "every_day_has_rows",
        not empty,
        f"Upstream delivered {spec.name} rows for every day; an empty day is stored as empty.",
        blocking=False,
        warn_only=True,
        metadata={"empty_days": len(empty), "days": ", ".join(empty[:SAMPLE]) or "none"},
    )


def evaluate_daily_batch(
    frame: pd.DataFrame, spec: TableSpec, start: date, end: date, expected: dict[date, int], days: list[date]
) -> list[Outcome]:
    return [
        check_schema(frame, spec),
        check_keys_not_null(frame, spec),
        check_key_unique(frame, spec),
        check_value_ranges(frame, spec, start, end),
        check_row_counts(frame, spec, expected),
        check_every_day_has_rows(frame, spec, days),
    ]


def evaluate_reference(frame: pd.DataFrame, spec: TableSpec) -> list[Outcome]:
    return [
        check_schema(frame, spec),
        check_keys_not_null(frame, spec),
        check_key_unique(frame, spec),
        check_value_ranges(frame, spec, None, None),
    ]


DAILY_CHECKS = [
    ("columns_and_types", True),
    ("required_columns_not_null", True),
    ("key_unique", True),
    ("values_in_range", True),
    ("row_count_matches_source", True),
    ("every_day_has_rows", False),
]
REFERENCE_CHECKS = DAILY_CHECKS[:4]


def refusal_report(
    table: str, partitions: list[str], origins: list[str], refused: list[Outcome]
) -> tuple[str, dict[str, str]]:
    """Why a staged window is not stored: partition, the files behind each failed blocking check
    and a few of its rows, as a description and as metadata (the operator's first questions)."""
    window = window_of(partitions)
    where = f"{table} {window}" if window else table
    lines = [f"{where}: not stored (the stored rows are unchanged); blocking check(s) failed:"]
    metadata = {"partition": window or "none (whole table)"}
    metadata["failed_checks"] = ", ".join(o.name for o in refused)
    for outcome in refused:
        days = [d.isoformat() for d in outcome.days] or partitions
        files = _files_of(origins, days)
        facts = ", ".join(f"{k}={v}" for k, v in outcome.metadata.items() if k not in ("sample", "details"))
        on = f" on {_span(days)}" if days else ""
        lines.append(f"- {outcome.name}{on} ({files}): {outcome.description} {facts}")
        if outcome.metadata.get("details") not in (None, "none"):
            lines.append(f"  {outcome.metadata['details']}")
        metadata[f"{outcome.name} files"] = files
        if outcome.rows is not None and len(outcome.rows):
            sample = outcome.rows.head(SAMPLE).to_string(index=False)
            lines.append(f"  offending rows ({min(SAMPLE, len(outcome.rows))} of {len(outcome.rows)}):")
            lines += [f"    {line}" for line in sample.splitlines()]
            metadata[f"{outcome.name} offending rows"] = sample
    return "\n".join(lines), metadata


def _files_of(origins: list[str], days: list[str]) -> str:
    """The delivered files of these days (a source without day files: all its origins)."""
    files = [o for o in dict.fromkeys(origins) if any(d in o for d in days)] or list(dict.fromkeys(origins))
    if len(files) > SAMPLE:
        return f"{', '.join(files[:SAMPLE])} and {len(files) - SAMPLE} more"
    return ", ".join(files) or "no file"


def _span(days: list[str]) -> str:
    if len(days) <= SAMPLE:
        return ", ".join(days)
    return f"{days[0]}..{days[-1]} ({len(days)} days)"
