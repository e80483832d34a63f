"""The warehouse: a DuckDB file or a DuckLake (``warehouse_engines``), partitions replaced atomically.

``WarehouseIOManager`` extends dagster-duckdb's pandas IO manager where the stock one is unsafe:
the partition delete and insert run in one transaction (a crash leaves the old partition), rows
are inserted by column name (never by position), partition bounds are bound as DATE parameters
(never formatted into SQL), and table and column names are validated identifiers.

It builds on ``dagster._core.storage.db_io_manager``, the framework dagster-duckdb's own IO
managers are made of and the documented way to write a type handler for them: the one private
Dagster import outside ``ml_platform/runtime``, kept in step by the pinned dagster-duckdb.

Which engine holds the tables is the resource's configuration alone (``database``: a file path
or a ``ducklake:postgres:`` URL, with ``data_path`` for a lake); assets never see it. On a lake
each output write holds the advisory locks of its (table, day)s and is rerun on a commit conflict.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

import duckdb
import pandas as pd
from dagster import ConfigurableResource, InputContext, MetadataValue, OutputContext, TableColumn
from dagster import TableSchema as DagsterTableSchema
from dagster._core.storage.db_io_manager import DbClient, DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb.io_manager import DuckDBIOManager
from pydantic import Field

from ml_platform import faults
from ml_platform.ingestion.schemas import ALL_TABLES, TableSpec
from ml_platform.resources.warehouse_engines import (
    LOCK_RETRY_SECONDS,
    WAREHOUSE_ENV_VAR,
    Engine,
    WarehouseError,
    WriteScope,
    connect_file,
    engine_for,
    retrying,
    run_write,
    transaction,
)

__all__ = ["LOCK_RETRY_SECONDS", "WAREHOUSE_ENV_VAR", "WarehouseError", "WriteScope", "transaction"]

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Every asset that writes the warehouse runs in this pool; the instance limits it to one slot.
WAREHOUSE_POOL = "duckdb_warehouse"
T = TypeVar("T")


def ident(name: str) -> str:
    """Quote a validated SQL identifier; anything else is refused, never interpolated."""
    # fullmatch: with match, "$" would also accept a name followed by a newline.
    if not isinstance(name, str) or not IDENTIFIER.fullmatch(name):
        raise WarehouseError(f"{name!r} is not a valid table, schema or column name")
    return f'"{name}"'


connect = connect_file  # the file engine's connect, waiting for the file lock


def table_exists(conn, schema: str, table: str) -> bool:
    rows = conn.execute(
        "select count(*) from information_schema.tables"
        " where table_catalog = current_database() and table_schema = ? and table_name = ?",
        [schema, table],
    ).fetchall()
    return rows[0][0] > 0


def _window(table_slice: TableSlice) -> tuple[str, date, date] | None:
    """The partition column and the window's bounds: dates for a day column, aware UTC instants
    for a declared TIMESTAMPTZ one (hourly partitions: compared as instants, whatever the
    session's time zone)."""
    if not table_slice.partition_dimensions:
        return None
    if len(table_slice.partition_dimensions) != 1:
        raise WarehouseError(f"{table_slice.table}: only one partition dimension is supported")
    dim = table_slice.partition_dimensions[0]
    start, end = dim.partitions  # a TimeWindow
    if _instant_column(table_slice, dim.partition_expr):
        return dim.partition_expr, _as_utc(start), _as_utc(end)
    return dim.partition_expr, _as_date(start), _as_date(end)


# Derived tables partitioned by an instant (hourly), compared as UTC instants like a declared raw
# TIMESTAMPTZ column: (schema, table, partition column).
INSTANT_PARTITIONS = frozenset({("nowcast", "predictions", "as_of")})


def _instant_column(table_slice: TableSlice, column: str) -> bool:
    if (table_slice.schema, table_slice.table, column) in INSTANT_PARTITIONS:
        return True
    spec = _declared_spec(table_slice)
    return spec is not None and column in spec.column_names and spec.column(column).sql_type == "TIMESTAMPTZ"


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise WarehouseError(f"partition bound {value} has no time zone")
    return value.astimezone(UTC)


def _is_instant(bound: date) -> bool:
    return isinstance(bound, datetime)


def _as_date(value: datetime) -> date:
    if (value.hour, value.minute, value.second, value.microsecond) != (0, 0, 0, 0):
        raise WarehouseError(f"partition bound {value} is not a day boundary")
    return value.date()


def scope_of(table_slice: TableSlice) -> WriteScope:
    """The (table, days) a write of ``table_slice`` replaces."""
    table = f"{table_slice.schema}.{table_slice.table}"
    window = _window(table_slice)
    if window is None:
        return WriteScope(table)
    _, start, end = window
    if _is_instant(start):  # an hourly window holds the locks of the UTC days it touches
        start, end = start.date(), (end - timedelta(microseconds=1)).date() + timedelta(days=1)
    return WriteScope(table, tuple(start + timedelta(days=n) for n in range((end - start).days)))


def _engine(resource_config) -> Engine:
    return engine_for(resource_config["database"], resource_config.get("data_path"))


class AtomicDuckDbClient(DbClient):
    """Runs each output in one transaction: schema, delete of the slice and insert commit together."""

    @staticmethod
    @contextmanager
    def connect(context, table_slice: TableSlice) -> Iterator[duckdb.DuckDBPyConnection]:
        conn = _engine(context.resource_config).connect()
        try:
            with transaction(conn):
                yield conn
        finally:
            conn.close()

    @staticmethod
    def ensure_schema_exists(context, table_slice: TableSlice, connection) -> None:
        connection.execute(f"create schema if not exists {ident(table_slice.schema)}")

    @staticmethod
    def delete_table_slice(context, table_slice: TableSlice, connection) -> None:
        if not table_exists(connection, table_slice.schema, table_slice.table):
            return
        target = f"{ident(table_slice.schema)}.{ident(table_slice.table)}"
        window = _window(table_slice)
        if window is None:
            connection.execute(f"delete from {target}")  # noqa: S608 - validated identifiers
            return
        column, start, end = window
        connection.execute(
            f"delete from {target} where {ident(column)} >= ? and {ident(column)} < ?",  # noqa: S608
            [start, end],
        )

    @staticmethod
    def get_select_statement(table_slice: TableSlice) -> str:
        """For display in the UI; queries themselves bind their parameters."""
        sql, params = select_statement(table_slice)
        for p in params:
            kind = "TIMESTAMPTZ" if _is_instant(p) else "DATE"
            sql = sql.replace("?", f"{kind} '{p.isoformat()}'", 1)
        return sql

    @staticmethod
    def get_table_name(table_slice: TableSlice) -> str:
        return f"{table_slice.schema}.{table_slice.table}"


def select_statement(table_slice: TableSlice) -> tuple[str, list[date]]:
    cols = ", ".join(ident(c) for c in table_slice.columns) if table_slice.columns else "*"
    sql = f"select {cols} from {ident(table_slice.schema)}.{ident(table_slice.table)}"  # noqa: S608
    window = _window(table_slice)
    if window is None:
        return sql, []
    column, start, end = window
    return f"{sql} where {ident(column)} >= ? and {ident(column)} < ? order by all", [start, end]


def _declared_spec(table_slice: TableSlice) -> TableSpec | None:
    spec = ALL_TABLES.get(table_slice.table)
    return spec if spec is not None and table_slice.schema == "raw" else None


def _refuse_rows_outside(table_slice: TableSlice, obj: pd.DataFrame, column: str, start: date, end: date):
    """Only the window is deleted before the insert, so a row outside it would duplicate (or
    orphan) another partition's data: such a frame is refused as a whole."""
    name = f"{table_slice.schema}.{table_slice.table}"
    if column not in obj.columns:
        raise WarehouseError(f"{name}: frame lacks the partition column {column!r}")
    values = pd.to_datetime(obj[column])
    if values.dt.tz is not None:
        values = values.dt.tz_convert("UTC").dt.tz_localize(None)
    low, high = (
        pd.Timestamp(b).tz_convert("UTC").tz_localize(None) if _is_instant(b) else pd.Timestamp(b)
        for b in (start, end)
    )
    outside = values.isna() | (values < low) | (values >= high)
    if outside.any():
        raise WarehouseError(
            f"{name}: {int(outside.sum())} row(s) have {column} outside the partition window "
            f"{start.isoformat()}..{end.isoformat()} (or null); nothing was written"
        )


def _timestamp_day_column(table_slice: TableSlice, obj: pd.DataFrame) -> str | None:
    """A new table's partition column is a DATE, like every day column of the warehouse (partition
    windows are whole days; pandas would make it a TIMESTAMP)."""
    window = _window(table_slice)
    if window is None or _is_instant(window[1]):
        return None
    if not pd.api.types.is_datetime64_any_dtype(obj.get(window[0])):
        return None
    return window[0]


class AtomicPandasTypeHandler(DbTypeHandler[pd.DataFrame]):
    """Stores DataFrames by column name into tables with declared types."""

    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection):
        target = f"{ident(table_slice.schema)}.{ident(table_slice.table)}"
        for name in obj.columns:
            ident(str(name))
        spec = _declared_spec(table_slice)
        if not table_exists(connection, table_slice.schema, table_slice.table):
            if spec is not None:
                connection.execute(f"create table {target} ({spec.ddl_columns()})")
            else:
                # Cast while creating: a DuckLake alters a column's type only to a wider one.
                day = _timestamp_day_column(table_slice, obj)
                cols = f"* replace (cast({ident(day)} as date) as {ident(day)})" if day else "*"
                connection.register("incoming_frame", obj)
                connection.execute(f"create table {target} as select {cols} from incoming_frame limit 0")  # noqa: S608
                connection.unregister("incoming_frame")
        stored = [r[0] for r in connection.execute(f"describe {target}").fetchall()]  # noqa: S608
        unknown = [c for c in obj.columns if c not in stored]
        if unknown:
            raise WarehouseError(
                f"{table_slice.schema}.{table_slice.table}: frame has column(s) {', '.join(unknown)} "
                "that the stored table lacks; migrate the table or drop the columns"
            )
        window = _window(table_slice)
        if window is not None:
            _refuse_rows_outside(table_slice, obj, *window)
        if len(obj):
            connection.register("incoming_frame", obj)
            connection.execute(f"insert into {target} by name select * from incoming_frame")  # noqa: S608
            connection.unregister("incoming_frame")
        faults.reach("warehouse.before_commit")
        # Dagster records this metadata on every partition of the window: a count is only a
        # partition's row count when the window is one day; a longer window reports its total apart.
        rows = int(len(obj))
        if window is None:
            counts, extra = {"row_count": rows}, {}
        elif window[2] - window[1] == (timedelta(hours=1) if _is_instant(window[1]) else timedelta(days=1)):
            counts, extra = {"partition_row_count": rows}, {}
        else:
            counts, extra = {}, {"window_row_count": MetadataValue.int(rows)}
        schema = (
            spec.dagster_schema()
            if spec
            else DagsterTableSchema(
                columns=[TableColumn(name=str(n), type=str(t)) for n, t in obj.dtypes.items()]
            )
        )
        # Dagster's documented table metadata keys: the UI shows them as the row count and schema.
        table = {f"dagster/{name}": value for name, value in counts.items()}
        return {
            **table,
            "dagster/storage_kind": _engine(context.resource_config).name,
            "dagster/column_schema": schema,
            **extra,
        }

    def load_input(self, context: InputContext, table_slice: TableSlice, connection) -> pd.DataFrame:
        if table_slice.partition_dimensions and len(context.asset_partition_keys) == 0:
            return pd.DataFrame()
        if not table_exists(connection, table_slice.schema, table_slice.table):
            raise WarehouseError(
                f"{table_slice.schema}.{table_slice.table} does not exist yet; materialize "
                f"{context.asset_key.to_user_string()} first"
            )
        sql, params = select_statement(table_slice)
        return connection.execute(sql, params).fetchdf()

    @property
    def supported_types(self):
        return [pd.DataFrame]


class RetryingDbIOManager(DbIOManager):
    """Writes each output under its (table, day) locks, rerunning it whole on a commit conflict
    (a lake's); Dagster records the output's metadata only after the write committed. On a lake
    the metadata says how many attempts the commit took (``warehouse_commit_attempts``)."""

    def handle_output(self, context: OutputContext, obj: object) -> None:
        engine = _engine(context.resource_config)
        scope = scope_of(self._get_table_slice(context, context))
        attempts = 0
        with engine.locked(scope):
            for attempt in retrying(engine, scope, context.log.info):
                attempts += 1
                with attempt:
                    super().handle_output(context, obj)
        if engine.attempts() > 1:
            context.add_output_metadata({"warehouse_commit_attempts": attempts})


class WarehouseIOManager(DuckDBIOManager):
    """DuckDB pandas IO manager with atomic, by-name, parameterized partition writes."""

    data_path: str | None = Field(
        default=None, description="Data directory of a lake (``database`` a ducklake:postgres: URL)"
    )

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [AtomicPandasTypeHandler()]

    @staticmethod
    def default_load_type() -> type | None:
        return pd.DataFrame

    def create_io_manager(self, context) -> DbIOManager:
        return RetryingDbIOManager(
            db_client=AtomicDuckDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="WarehouseIOManager",
        )


class Warehouse(ConfigurableResource):
    """Direct access to the warehouse for checks, dbt and the CLI."""

    path: str = Field(description="Path of the DuckDB warehouse file, or a ducklake:postgres: URL")
    data_path: str | None = Field(default=None, description="Data directory of a lake")

    @property
    def engine(self) -> Engine:
        return engine_for(self.path, self.data_path)

    @contextmanager
    def connection(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        conn = self.engine.connect(read_only=read_only)
        try:
            yield conn
        finally:
            conn.close()

    def write(self, scope: WriteScope, body: Callable[[duckdb.DuckDBPyConnection], T], log=None) -> T:
        """``body`` in one transaction that replaces ``scope``, safe beside concurrent writers."""
        return run_write(self.engine, scope, body, log=log)

    def query(self, sql: str, params: Sequence | None = None) -> pd.DataFrame:
        with self.connection() as conn:
            return conn.execute(sql, list(params or [])).fetchdf()


def describe_frame(frame: pd.DataFrame, date_column: str | None = None, preview_rows: int = 5) -> dict:
    """Metadata a user wants on a table materialization: rows, date range and a preview."""
    meta: dict = {"rows": MetadataValue.int(int(len(frame)))}
    if date_column and len(frame):
        meta["date_range"] = MetadataValue.text(
            f"{frame[date_column].min():%Y-%m-%d} .. {frame[date_column].max():%Y-%m-%d}"
        )
    meta["preview"] = MetadataValue.md(
        frame.head(preview_rows).to_markdown(index=False) if len(frame) else "_empty_"
    )
    return meta
