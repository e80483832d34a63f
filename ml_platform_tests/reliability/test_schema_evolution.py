"""Schema evolution: upstream adds a column, or sends the declared ones in another order.

The path (``ingestion/schemas.py``: ``conform``): the declared schema is the contract. An unknown
column is dropped with a warning that names the file and the column; columns are matched by name,
reordered to the declaration, and stored by name (``insert ... by name``), never by position.
Adopting a new column is a change to the declaration (a migration), not something data can do.
"""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg
import duckdb
import pandas as pd
from pandas.testing import assert_frame_equal

from ml_platform.ingestion.landing import land_days
from ml_platform.ingestion.schemas import FLIGHTS
from ml_platform.ingestion.source import PackagedSource, write_frame_atomically
from ml_platform.keys import RAW_FLIGHTS
from ml_platform.resources import build_resources
from ml_platform.resources.warehouse import WarehouseIOManager
from ml_platform_tests.ml_support import raw_daily_assets
from ml_platform_tests.reliability.support import partition, platform

DAY = date(2013, 4, 2)


def _day(frame_day: date) -> pd.DataFrame:
    return PackagedSource().read_days("flights", frame_day, frame_day + timedelta(days=1)).frame


def test_a_new_upstream_column_in_the_middle_is_ignored_by_name_with_a_warning(tmp_path, record):
    """Upstream inserts a column mid-file and reorders the rest: stored exactly as a clean file."""
    with platform(tmp_path, "landing") as (env, settings, instance):
        land_days(DAY, 2, env.landing, echo=lambda _: None)
        resources = build_resources(settings)
        assert dg.materialize(
            raw_daily_assets(settings), resources=resources, instance=instance, partition_key=str(DAY)
        )
        clean = partition(env.warehouse, "raw.flights", "flight_date", str(DAY))

        evolved = _day(DAY)
        columns = list(reversed(evolved.columns))
        evolved = evolved[columns]
        # Same dtype as its neighbour: stored by position, it would slide into that column.
        evolved.insert(5, "taxi_out", evolved["dep_delay"] + 7.0)
        path = env.landing / "flights" / f"{DAY}.parquet"
        write_frame_atomically(evolved, path)

        result = dg.materialize(
            raw_daily_assets(settings), resources=resources, instance=instance, partition_key=str(DAY)
        )
        assert result.success
        stored = partition(env.warehouse, "raw.flights", "flight_date", str(DAY))
        assert_frame_equal(stored, clean)
        warnings = [
            e.user_message
            for e in instance.all_logs(result.run_id)
            if e.level >= 30 and "taxi_out" in (e.user_message or "")
        ]
        assert warnings == [f"{path}: ignored unknown column(s) taxi_out not declared for flights"]
    record(
        fault="upstream adds column taxi_out mid-file and reverses the column order",
        expected="stored exactly as a clean delivery; a warning names the file and the column",
        observed=f"{len(stored)} rows identical to the clean delivery; warning: {warnings[0]}",
        bad_input=True,
        clear_error=True,
    )


def test_a_frame_in_another_column_order_is_stored_by_name(tmp_path, instance, record):
    """The IO manager inserts by name: a reordered frame lands in the right columns."""
    database = str(tmp_path / "warehouse.duckdb")
    frame = _day(DAY)
    reordered = frame[list(reversed(frame.columns))]
    parts = dg.DailyPartitionsDefinition(start_date="2013-01-01", end_date="2014-01-01", timezone="UTC")

    def store(key: list[str], value: pd.DataFrame):
        @dg.asset(key=key, partitions_def=parts, metadata={"partition_expr": "flight_date"})
        def _asset() -> pd.DataFrame:
            return value

        return dg.materialize(
            [_asset],
            resources={"io_manager": WarehouseIOManager(database=database)},
            instance=instance,
            partition_key=str(DAY),
        )

    # A declared table (created from the declaration), an undeclared one (created from the first
    # frame's order, then written again in the reverse order) and a reference in the clean order.
    assert store(RAW_FLIGHTS.path, reordered).success
    assert store(["scratch", "flights"], frame).success
    assert store(["scratch", "flights"], reordered).success
    assert store(["scratch", "reference"], frame).success
    with duckdb.connect(database, read_only=True) as conn:
        tables = {
            name: conn.execute(f"select * from {name} order by all").fetchdf()  # noqa: S608 - constants
            for name in ("raw.flights", "scratch.flights", "scratch.reference")
        }
    reference = tables.pop("scratch.reference")
    assert list(reference.columns) == FLIGHTS.column_names and len(reference) == len(frame)
    for stored in tables.values():
        assert_frame_equal(stored, reference)
    record(
        fault="frame delivered with its columns in reverse order",
        expected="stored by column name into the declared layout",
        observed=f"{len(frame)} rows stored by name in raw.flights and an undeclared table",
    )
