"""Copy a DuckDB warehouse file into a DuckLake, then prove the copy.

One connection attaches the lake and the file (read-only), so both sides are read by the same
DuckDB with the same settings. Each table is copied in its own transaction: the lake shows it
whole or not at all. A table already in the lake is refused unless ``replace``, which drops and
rebuilds it in that same transaction; a rerun therefore never duplicates rows.

The proof, per table and per day of a day-partitioned table, is the row count and a digest: the
sum (as a 128-bit integer) of ``hash`` over each row's columns, in the file's column order. A sum
does not depend on row order and, unlike an XOR, counts duplicates. Both sides hash the same
column types (the lake's table is created with the file's, and verified to still have them), so
equal rows hash equally. Views are not copied: the platform's views are dbt's audit views,
rebuilt by its next run.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import duckdb

from ml_platform.resources.warehouse import IDENTIFIER, ident, table_exists
from ml_platform.resources.warehouse_engines import (
    LAKE_PREFIX,
    DuckLake,
    WarehouseError,
    literal,
    parse_location,
    redact,
    transaction,
)

SOURCE = "migration_source"  # the file's alias in the migration's connection
TARGET = "lake"
# A DuckDB database file carries this magic at this offset of its first block.
MAGIC, MAGIC_OFFSET = b"DUCK", 8
# Types the lake refuses at CREATE TABLE (DuckLake 0.x): enums, unions, bit strings, big
# integers beyond HUGEINT and fixed-size arrays.
UNSUPPORTED_TYPE = re.compile(r"\b(ENUM|UNION|BIT|BITSTRING|BIGNUM|VARINT)\b|\[\d+\]", re.IGNORECASE)
# A type written into CREATE TABLE: names, sizes and nesting only, never quotes or separators.
SAFE_TYPE = re.compile(r"[A-Za-z0-9_ (),\[\]]+")


class MigrationError(WarehouseError):
    """A migration was refused or failed; the message names the argument or the table."""


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: tuple[Column, ...]
    day: str | None  # the partition column of a day-partitioned table

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.name}"

    def at(self, catalog: str) -> str:
        return f"{ident(catalog)}.{ident(self.schema)}.{ident(self.name)}"


@dataclass(frozen=True)
class Check:
    """One verified unit: a table (``day`` None) or one day of it."""

    table: str
    day: date | None
    source_rows: int
    target_rows: int | None  # None: the lake lacks the table
    source_digest: int
    target_digest: int | None
    note: str = ""

    @property
    def ok(self) -> bool:
        return (
            not self.note
            and self.source_rows == self.target_rows
            and self.source_digest == self.target_digest
        )

    def fault(self) -> str:
        where = f"{self.table} {self.day}" if self.day else self.table
        if self.note:
            return f"{where}: {self.note}"
        if self.source_rows != self.target_rows:
            return f"{where}: {self.source_rows} row(s) in the file, {self.target_rows} in the lake"
        return f"{where}: same row count, different rows (digests differ)"


@dataclass
class Report:
    source: str
    target: str
    checks: list[Check] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    views_skipped: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def render(self) -> str:
        """The results as a table: every table, and every day that does not match."""
        head = ("table", "day", "rows (file)", "rows (lake)", "digest (file)", "lake", "result")
        rows = [head]
        days = Counter(c.table for c in self.checks if c.day is not None)
        for c in self.checks:
            if c.day is not None and c.ok:
                continue
            day = c.day.isoformat() if c.day else (f"{days[c.table]} days" if days[c.table] else "-")
            lake_digest = "same" if c.target_digest == c.source_digest else _short(c.target_digest)
            target_rows = "-" if c.target_rows is None else str(c.target_rows)
            result = "ok" if c.ok else "MISMATCH"
            rows.append(
                (c.table, day, str(c.source_rows), target_rows, _short(c.source_digest), lake_digest, result)
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"{self.source} -> {self.target}")
        if self.views_skipped:
            lines.append(f"views not copied (dbt rebuilds them): {len(self.views_skipped)}")
        failed = self.failures
        lines.append(f"{len(failed)} mismatch(es)" if failed else "every table and day matches")
        return "\n".join(lines)


def _short(digest: int | None) -> str:
    return "-" if digest is None else f"{digest % 2**48:012x}"


def check_source(path: str | Path, argument: str = "--from") -> Path:
    """The source file, or a ``MigrationError`` naming ``argument`` when it is no DuckDB file."""
    source = Path(path)
    if str(path).startswith("ducklake:"):
        raise MigrationError(f"{argument} {redact(str(path))}: the source must be a DuckDB file, not a lake")
    if not source.exists():
        raise MigrationError(f"{argument} {source}: no such file")
    if not source.is_file():
        raise MigrationError(f"{argument} {source}: not a file")
    with open(source, "rb") as handle:
        head = handle.read(MAGIC_OFFSET + len(MAGIC))
    if head[MAGIC_OFFSET:] != MAGIC:
        raise MigrationError(f"{argument} {source}: not a DuckDB database file")
    return source.resolve()


def check_target(url: str, data_path: str | None) -> DuckLake:
    """The lake of ``--to`` and ``--data-path``, or a ``MigrationError`` naming the argument."""
    if not url.startswith(LAKE_PREFIX):
        raise MigrationError(
            f"--to {redact(url)!r}: the target must be a lake, 'ducklake:postgres:<libpq parameters>'"
        )
    if not data_path:
        raise MigrationError("--data-path: a lake needs its data directory (absolute path)")
    if "://" not in data_path:
        data_path = str(Path(data_path).resolve())
    try:
        url, data_path = parse_location(url, data_path)
    except ValueError as exc:
        raise MigrationError(f"--to/--data-path: {exc}") from exc
    return DuckLake(url[len(LAKE_PREFIX) :], data_path)


def open_both(source: Path, lake: DuckLake) -> duckdb.DuckDBPyConnection:
    """A lake connection with the file attached read-only as ``SOURCE``."""
    conn = lake.connect()
    try:
        conn.execute(f"attach {literal(str(source))} as {ident(SOURCE)} (read_only)")
    except duckdb.Error as exc:
        conn.close()
        raise MigrationError(
            f"--from {source}: cannot open it read-only ({exc}); stop the platform's writers first"
        ) from exc
    return conn


def day_columns() -> set[str]:
    """Names of the day partition columns of the platform's tables (their ``partition_expr``)."""
    from ml_platform.features.assets import PARTITION_COLUMNS
    from ml_platform.ingestion.schemas import ALL_TABLES
    from ml_platform.ml.frames import DAY

    raw = {spec.partition_column for spec in ALL_TABLES.values() if spec.partition_column}
    return raw | set(PARTITION_COLUMNS.values()) | {DAY}


def tables_of(conn, catalog: str, days: set[str] | None = None) -> list[Table]:
    """Every base table of ``catalog`` with its columns in order."""
    days = day_columns() if days is None else days
    rows = conn.execute(
        "select schema_name, table_name, column_name, data_type, is_nullable from duckdb_columns()"
        " where database_name = ? and not internal order by schema_name, table_name, column_index",
        [catalog],
    ).fetchall()
    grouped: dict[tuple[str, str], list[Column]] = {}
    for schema, name, column, kind, nullable in rows:
        grouped.setdefault((schema, name), []).append(Column(column, kind, bool(nullable)))
    views = set(views_of(conn, catalog))
    tables = []
    for (schema, name), columns in grouped.items():
        if f"{schema}.{name}" in views:
            continue
        day = next((c.name for c in columns if c.name in days and c.type == "DATE"), None)
        tables.append(Table(schema, name, tuple(columns), day))
    return tables


def views_of(conn, catalog: str) -> list[str]:
    rows = conn.execute(
        "select schema_name, view_name from duckdb_views() where database_name = ? and not internal"
        " order by 1, 2",
        [catalog],
    ).fetchall()
    return [f"{s}.{v}" for s, v in rows]


def refuse_unsupported(tables: list[Table]) -> None:
    """Refuse, before anything is written, every column the lake cannot store and every name
    that is not a plain identifier (the copy's SQL quotes only those)."""
    names = sorted(
        {
            f"{name!r} (in {t.label})"
            for t in tables
            for name in (t.schema, t.name, *(c.name for c in t.columns))
            if not IDENTIFIER.fullmatch(name)
        }
    )
    if names:
        raise MigrationError(
            f"names that are not plain identifiers (letters, digits, _): {', '.join(names)}; "
            "rename them in the file and rerun"
        )
    bad = [
        f"{t.label}.{c.name} ({c.type})"
        for t in tables
        for c in t.columns
        if UNSUPPORTED_TYPE.search(c.type) or not SAFE_TYPE.fullmatch(c.type)
    ]
    if bad:
        raise MigrationError(
            "these columns cannot be copied into a DuckLake: "
            + ", ".join(bad)
            + "; cast them in the file (e.g. ENUM to VARCHAR, fixed arrays to lists) and rerun"
        )


def copy_table(conn, table: Table, replace: bool) -> int:
    """Copy ``table`` into the lake in one transaction (replacing it when ``replace``)."""
    # Names are validated identifiers; types passed ``SAFE_TYPE`` before anything is copied.
    cols = ", ".join(f"{ident(c.name)} {c.type}{'' if c.nullable else ' not null'}" for c in table.columns)
    target = table.at(TARGET)
    try:
        with transaction(conn):
            conn.execute(f"create schema if not exists {ident(TARGET)}.{ident(table.schema)}")
            if replace:
                conn.execute(f"drop table if exists {target}")
            conn.execute(f"create table {target} ({cols})")
            conn.execute(
                f"insert into {target} by name select * from "  # noqa: S608 - validated identifiers
                f"{ident(SOURCE)}.{ident(table.schema)}.{ident(table.name)}"
            )
            return conn.execute(f"select count(*) from {target}").fetchone()[0]  # noqa: S608
    except duckdb.Error as exc:
        raise MigrationError(
            f"{table.label}: not copied, the lake kept its previous state: {redact(str(exc))}"
        ) from exc


def digests(conn, catalog: str, table: Table) -> dict[date | None, tuple[int, int]]:
    """(rows, digest) of the table in ``catalog``, per day when it has a day column."""
    row_hash = f"hash({', '.join(ident(c.name) for c in table.columns)})"
    aggregate = f"count(*), coalesce(sum({row_hash}), 0)"
    if table.day is None:
        sql = f"select null, {aggregate} from {table.at(catalog)}"  # noqa: S608
    else:
        sql = f"select {ident(table.day)}, {aggregate} from {table.at(catalog)} group by 1"  # noqa: S608
    return {day: (int(n), int(digest)) for day, n, digest in conn.execute(sql).fetchall()}


def verify(conn, tables: list[Table]) -> list[Check]:
    """Row counts and digests of every table (and day) on both sides."""
    targets = {t.label: t for t in tables_of(conn, TARGET, set())}
    checks: list[Check] = []
    for table in tables:
        source = digests(conn, SOURCE, table)
        target = targets.get(table.label)
        if target is None:
            checks.append(_check(table.label, None, _total(source), None, "missing in the lake"))
            continue
        want = sorted((c.name, c.type) for c in table.columns)
        have = sorted((c.name, c.type) for c in target.columns)
        if want != have:
            note = f"columns differ: file {want}, lake {have}"
            checks.append(_check(table.label, None, _total(source), None, note))
            continue
        lake = digests(conn, TARGET, table)
        checks.append(_check(table.label, None, _total(source), _total(lake)))
        if table.day is not None:
            for day in sorted((set(source) | set(lake)) - {None}):  # NULL days count in the total
                checks.append(_check(table.label, day, source.get(day, (0, 0)), lake.get(day, (0, 0))))
    return checks


def _total(parts: dict) -> tuple[int, int]:
    return sum(n for n, _ in parts.values()), sum(d for _, d in parts.values())


def _check(label: str, day, source: tuple[int, int], lake: tuple[int, int] | None, note: str = "") -> Check:
    target_rows, target_digest = lake if lake is not None else (None, None)
    return Check(label, day, source[0], target_rows, source[1], target_digest, note)


def migrate(
    source: Path,
    lake: DuckLake,
    *,
    replace: bool = False,
    verify_only: bool = False,
    log: Callable[[str], None] | None = None,
) -> Report:
    """Copy every table of ``source`` into ``lake`` (unless ``verify_only``), then verify all."""
    conn = open_both(source, lake)
    try:
        tables = tables_of(conn, SOURCE)
        if not tables:
            raise MigrationError(f"--from {source}: the file holds no tables")
        report = Report(str(source), lake.describe(), views_skipped=views_of(conn, SOURCE))
        if not verify_only:
            refuse_unsupported(tables)
            present = [t.label for t in tables if table_exists(conn, t.schema, t.name)]
            if present and not replace:
                raise MigrationError(
                    f"the lake already holds {', '.join(present)}: rerun with --replace to replace "
                    "each table (atomically, one at a time), or --verify-only to compare them"
                )
            for table in tables:
                rows = copy_table(conn, table, replace)
                report.copied.append(table.label)
                if log:
                    log(f"copied {table.label}: {rows} row(s)")
        report.checks = verify(conn, tables)
        return report
    finally:
        conn.close()
