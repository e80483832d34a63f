"""Warehouses on both engines for the tests: the DuckDB file and a DuckLake over a throwaway
PostgreSQL catalog, and a scratch table written through the IO manager."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
from dagster import AssetKey, DailyPartitionsDefinition, asset, materialize

from ml_platform.resources.warehouse import Warehouse, WarehouseIOManager
from ml_platform_tests.conftest import PG_SERVER, throwaway_database

PARTS = DailyPartitionsDefinition(start_date="2013-01-01", end_date="2013-02-01", timezone="UTC")
D1, D2, D3 = date(2013, 1, 1), date(2013, 1, 2), date(2013, 1, 3)
TABLE = "scratch.readings"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@dataclass(frozen=True)
class Where:
    """A warehouse: what ``ML_PLATFORM_WAREHOUSE`` and ``ML_PLATFORM_LAKE_DATA_PATH`` would hold."""

    database: str
    data_path: str | None = None

    def warehouse(self) -> Warehouse:
        return Warehouse(path=self.database, data_path=self.data_path)

    def io_manager(self) -> WarehouseIOManager:
        return WarehouseIOManager(database=self.database, data_path=self.data_path)


@contextmanager
def lake_catalog(tmp_path: Path) -> Iterator[Where]:
    """A lake on a new PostgreSQL database (dropped afterwards) and a data directory in tmp_path;
    skips where no PostgreSQL answers."""
    server = " ".join(f"{k}={v}" for k, v in PG_SERVER.items())
    with throwaway_database("mlp_lake") as name:
        yield Where(f"ducklake:postgres:dbname={name} {server}", str(tmp_path / "lake") + "/")


def readings(day: date, values: list, labels: list[str] | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "reading_date": pd.to_datetime([day] * len(values)),
            "value": pd.array(values, dtype="Int64"),
            "label": pd.array(labels or [f"{day:%d}-{v}" for v in values], dtype="string"),
        }
    )


def stored(where: Where, table: str = TABLE) -> pd.DataFrame:
    with where.warehouse().connection(read_only=True) as conn:
        return conn.execute(f"select * from {table} order by all").fetchdf()  # noqa: S608


def by_day(where: Where) -> dict[date, list[int]]:
    return {
        pd.Timestamp(d).date(): sorted(int(v) for v in group["value"])
        for d, group in stored(where).groupby("reading_date")
    }


def write(where: Where, instance, frame, *, partition, last=None, key=("scratch", "readings"), metadata=None):
    """Materialize ``frame`` as a daily-partitioned asset through the warehouse IO manager."""

    @asset(
        key=AssetKey(list(key)),
        partitions_def=PARTS,
        metadata=metadata if metadata is not None else {"partition_expr": "reading_date"},
    )
    def _readings() -> pd.DataFrame:
        return frame

    return materialize(
        [_readings],
        resources={"io_manager": where.io_manager()},
        instance=instance,
        partition_key=None if last else partition,
        tags={RANGE_START: partition, RANGE_END: last} if last else {},
        raise_on_error=False,
    )


def failure_message(result) -> str:
    (failure,) = result.get_step_failure_events()
    error = failure.step_failure_data.error
    return "\n".join(e.message for e in [error, *([error.cause] if error.cause else [])])
