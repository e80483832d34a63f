"""The warehouse IO manager on small frames, through real Dagster runs, on both engines (conftest's
``where``/``seeded``: a DuckDB file and a DuckLake): range replacement, atomic (rolled back)
failures, identifier validation and DATE filtering; the file's own lock and SQL binding apart."""

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from dagster import (
    AssetIn,
    AssetKey,
    HourlyPartitionsDefinition,
    InMemoryIOManager,
    IOManagerDefinition,
    TimeWindow,
    asset,
    materialize,
)
from dagster._core.storage.db_io_manager import TablePartitionDimension, TableSlice
from pandas.testing import assert_frame_equal

from ml_platform.ingestion.source import PackagedSource
from ml_platform.keys import RAW_DEPARTURES
from ml_platform.resources.warehouse import (
    AtomicDuckDbClient,
    WarehouseError,
    connect,
    ident,
    scope_of,
    select_statement,
)
from ml_platform_tests import lake_support as both
from ml_platform_tests.lake_support import (
    D1,
    D2,
    D3,
    PARTS,
    RANGE_END,
    RANGE_START,
    by_day,
    failure_message,
    readings,
    stored,
    write,
)

# --- replacing partitions ------------------------------------------------------------------------


def test_a_range_write_replaces_the_range_only(seeded, instance):
    for day, values in ((D1, [1]), (D2, [2]), (D3, [3])):
        assert write(seeded, instance, readings(day, values), partition=day.isoformat()).success
    frame = pd.concat([readings(D2, [20, 21]), readings(D3, [30])], ignore_index=True)
    result = write(seeded, instance, frame, partition="2013-01-02", last="2013-01-03")
    assert result.success
    events = result.get_asset_materialization_events()
    assert {m.partition for m in events} == {"2013-01-02", "2013-01-03"}
    for event in events:
        # Each partition's event must not claim the whole window's rows as its own.
        metadata = event.materialization.metadata
        assert "dagster/partition_row_count" not in metadata
        assert metadata["window_row_count"].value == 3
    assert by_day(seeded) == {D1: [1], D2: [20, 21], D3: [30]}


def test_an_unpartitioned_table_is_replaced_whole(where, instance):

    def reference(frame):
        @asset(key=AssetKey(["scratch", "codes"]))
        def _codes() -> pd.DataFrame:
            return frame

        return materialize([_codes], resources={"io_manager": where.io_manager()}, instance=instance)

    reference(pd.DataFrame({"code": ["a", "b"], "n": [1, 2]}))
    result = reference(pd.DataFrame({"code": ["c"], "n": [3]}))
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["dagster/row_count"].value == 1
    assert stored(where, "scratch.codes").to_dict("list") == {"code": ["c"], "n": [3]}


# --- failures roll back --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        pytest.param(readings(D1, [9]).assign(surprise=1), "surprise", id="unknown-column"),
        pytest.param(readings(D1, [9]).astype({"value": object}).assign(value="nine"), "nine", id="no-cast"),
        pytest.param(readings(D1, [9, -1]), "CHECK constraint", id="constraint-violated-mid-insert"),
        pytest.param(readings(D1, [9, None]), "NOT NULL", id="null-violated-mid-insert"),
        pytest.param(readings(D2, [9]), "outside the partition window", id="rows-of-another-day"),
        pytest.param(readings(D1, [9]).drop(columns=["reading_date"]), "partition column", id="no-day"),
    ],
)
def test_a_failed_write_leaves_the_partition_as_it_was(seeded, instance, broken, message):
    """On either engine (conftest's ``seeded``: the file, and a DuckLake)."""
    if message == "CHECK constraint" and seeded.data_path:
        pytest.skip("a DuckLake enforces no CHECK constraint")
    assert both.write(seeded, instance, readings(D1, [1, 2, 3]), partition="2013-01-01").success
    assert both.write(seeded, instance, readings(D2, [10]), partition="2013-01-02").success
    before = both.stored(seeded)

    result = both.write(seeded, instance, broken, partition="2013-01-01")
    assert not result.success
    assert message in failure_message(result)
    # The delete of 2013-01-01 ran before the failing insert; the rollback undid it.
    assert_frame_equal(both.stored(seeded), before)
    assert both.by_day(seeded) == {D1: [1, 2, 3], D2: [10]}


def test_a_failed_first_write_creates_nothing(where, instance):
    broken = readings(D1, [1]).assign(**{"bad name": 1})
    assert not write(where, instance, broken, partition="2013-01-01", key=("fresh", "readings")).success
    with where.warehouse().connection(read_only=True) as conn:
        tables = conn.execute(
            "select table_schema, table_name from information_schema.tables"
            " where table_catalog = current_database()"
        ).fetchall()
    assert tables == []


# --- identifiers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["flight_date", "_x", "Readings2", "a" * 63])
def test_plain_identifiers_are_quoted(name):
    assert ident(name) == f'"{name}"'


@pytest.mark.parametrize(
    "name",
    ['a"b', "a b", "1a", "a;drop table x", "", "a.b", "a" * 64, "tëmp", "a-b", "x\n", "date(x)"],
)
def test_identifiers_that_are_not_plain_names_are_refused(name):
    with pytest.raises(WarehouseError, match="not a valid"):
        ident(name)


@pytest.mark.parametrize(
    ("frame", "metadata"),
    [
        pytest.param(
            readings(D1, [9]).assign(**{'x"; drop table scratch.readings; --': 1}),
            None,
            id="column-name",
        ),
        pytest.param(readings(D1, [9]), {"partition_expr": "reading_date or 1=1"}, id="partition-expr"),
        pytest.param(
            readings(D1, [9]), {"partition_expr": "reading_date", "schema": "scratch; drop"}, id="schema"
        ),
    ],
)
def test_a_write_with_an_unsafe_identifier_is_refused(seeded, instance, frame, metadata):
    assert write(seeded, instance, readings(D1, [1]), partition="2013-01-01").success
    before = stored(seeded)
    result = write(seeded, instance, frame, partition="2013-01-01", metadata=metadata)
    assert not result.success
    assert "is not a valid table, schema or column name" in failure_message(result)
    assert_frame_equal(stored(seeded), before)


# --- reading partitions back ---------------------------------------------------------------------


def test_partitions_are_read_back_by_their_date_column(seeded, instance):
    frame = pd.concat([readings(D1, [1]), readings(D2, [2, 3]), readings(D3, [4])], ignore_index=True)
    assert write(seeded, instance, frame, partition="2013-01-01", last="2013-01-03").success
    seen: list[pd.DataFrame] = []

    @asset(
        key=AssetKey(["scratch", "readings"]),
        partitions_def=PARTS,
        metadata={"partition_expr": "reading_date"},
    )
    def upstream() -> pd.DataFrame:
        raise AssertionError("not materialized in this test")

    @asset(
        partitions_def=PARTS,
        ins={"rows": AssetIn(key=AssetKey(["scratch", "readings"]))},
        io_manager_key="memory",
    )
    def downstream(rows: pd.DataFrame) -> int:
        seen.append(rows)
        return len(rows)

    resources = {
        "io_manager": seeded.io_manager(),
        "memory": IOManagerDefinition.hardcoded_io_manager(InMemoryIOManager()),
    }
    for partition, last, expected in (("2013-01-02", None, [2, 3]), ("2013-01-02", "2013-01-03", [2, 3, 4])):
        result = materialize(
            [upstream.to_source_asset(), downstream],
            resources=resources,
            instance=instance,
            partition_key=None if last else partition,
            tags={RANGE_START: partition, RANGE_END: last} if last else {},
        )
        assert result.success
        assert seen[-1]["value"].tolist() == expected
        assert list(seen[-1].columns) == ["reading_date", "value", "label"]


def test_select_statements_bind_the_window_as_dates():
    window = TablePartitionDimension(
        partition_expr="reading_date",
        partitions=PARTS.time_window_for_partition_key("2013-01-02"),
    )
    table_slice = TableSlice(
        table="readings", schema="scratch", partition_dimensions=[window], columns=["value"]
    )
    sql, params = select_statement(table_slice)
    assert params == [D2, D3]
    assert sql == (
        'select "value" from "scratch"."readings" '
        'where "reading_date" >= ? and "reading_date" < ? order by all'
    )
    shown = AtomicDuckDbClient.get_select_statement(table_slice)
    assert "DATE '2013-01-02'" in shown and "DATE '2013-01-03'" in shown
    hour = TablePartitionDimension(
        partition_expr="reading_date",
        partitions=TimeWindow(datetime(2013, 1, 2, 6, tzinfo=UTC), datetime(2013, 1, 3, tzinfo=UTC)),
    )
    with pytest.raises(WarehouseError, match="not a day boundary"):
        select_statement(TableSlice(table="readings", schema="scratch", partition_dimensions=[hour]))


# --- one writer at a time ------------------------------------------------------------------------


def test_connect_waits_for_a_writer_in_another_process(tmp_path):
    path = str(tmp_path / "warehouse.duckdb")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('locked', flush=True); "
            "time.sleep(float(sys.argv[2]))",
            path,
            "2",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WarehouseError, match="cannot open warehouse"):
            connect(path, timeout=0.3)
        started = time.monotonic()
        conn = connect(path, timeout=30)
        conn.close()
        assert time.monotonic() - started > 0.5
    finally:
        holder.wait(timeout=30)


# --- hourly partitions on a TIMESTAMPTZ column ---------------------------------------------------

HOURS = HourlyPartitionsDefinition(start_date="2013-06-01-00:00", end_date="2013-06-02-00:00", timezone="UTC")


def _hourly(where, instance, frame, partition, last=None):
    """``frame`` as raw/departures (its declared TIMESTAMPTZ ``event_hour``) on UTC hours."""

    @asset(key=RAW_DEPARTURES, partitions_def=HOURS, metadata={"partition_expr": "event_hour"})
    def departures() -> pd.DataFrame:
        return frame

    return materialize(
        [departures],
        resources={"io_manager": where.io_manager()},
        instance=instance,
        partition_key=None if last else partition,
        tags={RANGE_START: partition, RANGE_END: last} if last else {},
        raise_on_error=False,
    )


def _departures(hour: int, rows: int) -> pd.DataFrame:
    start = datetime(2013, 6, 1, hour, tzinfo=UTC)
    frame = PackagedSource().read_hours("departures", start, start + timedelta(hours=1)).frame
    return frame.head(rows)


def _stored_hours(where) -> dict[int, int]:
    with where.warehouse().connection(read_only=True) as conn:
        rows = conn.execute(
            "select extract(hour from event_hour at time zone 'UTC'), count(*) from raw.departures group by 1"
        ).fetchall()
    return {int(h): int(n) for h, n in rows}


def test_an_hourly_timestamptz_partition_is_replaced_alone(where, instance):
    for hour, rows in ((13, 3), (14, 4), (15, 5)):
        assert _hourly(where, instance, _departures(hour, rows), f"2013-06-01-{hour:02d}:00").success
    result = _hourly(where, instance, _departures(14, 2), "2013-06-01-14:00")
    assert result.success
    (event,) = result.get_asset_materialization_events()
    assert event.materialization.metadata["dagster/partition_row_count"].value == 2
    assert _stored_hours(where) == {13: 3, 14: 2, 15: 5}
    both_hours = pd.concat([_departures(14, 1), _departures(15, 1)], ignore_index=True)
    assert _hourly(where, instance, both_hours, "2013-06-01-14:00", "2013-06-01-15:00").success
    assert _stored_hours(where) == {13: 3, 14: 1, 15: 1}
    with where.warehouse().connection(read_only=True) as conn:
        kind = conn.execute(
            "select data_type from information_schema.columns"
            " where table_schema = 'raw' and table_name = 'departures' and column_name = 'event_hour'"
        ).fetchone()[0]
    assert kind == "TIMESTAMP WITH TIME ZONE"


def test_rows_outside_the_hour_are_refused_by_the_writer(where, instance):
    assert _hourly(where, instance, _departures(14, 2), "2013-06-01-14:00").success
    result = _hourly(where, instance, _departures(15, 2), "2013-06-01-14:00")
    assert not result.success
    assert "event_hour outside the partition window" in failure_message(result)
    assert _stored_hours(where) == {14: 2}


def test_hourly_select_statements_bind_utc_instants():
    window = TablePartitionDimension(
        partition_expr="event_hour", partitions=HOURS.time_window_for_partition_key("2013-06-01-14:00")
    )
    table_slice = TableSlice(table="departures", schema="raw", partition_dimensions=[window])
    _, params = select_statement(table_slice)
    assert params == [datetime(2013, 6, 1, 14, tzinfo=UTC), datetime(2013, 6, 1, 15, tzinfo=UTC)]
    assert "TIMESTAMPTZ '2013-06-01T14:00:00+00:00'" in AtomicDuckDbClient.get_select_statement(table_slice)
    assert scope_of(table_slice).days == (datetime(2013, 6, 1).date(),)
