"""The intraday feed end to end on real files, a real DuckDB warehouse and a real instance:
landed schedules and hours materialize as exactly ``intraday``'s slices, a bad hourly file is
refused naming the file and field with nothing stored changed, and the sensors request hours."""

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml_platform.config import Settings
from ml_platform.definitions import build_definitions
from ml_platform.ingestion import hourly, intraday
from ml_platform.ingestion.hourly_assets import build_intraday_assets
from ml_platform.ingestion.landing import land_hours, land_intraday
from ml_platform.ingestion.schemas import HOURLY_TABLES, SCHEDULE, conform
from ml_platform.ingestion.source import LandingSource, PackagedSource, SourceError, write_frame_atomically
from ml_platform.keys import RAW_HOURLY, RAW_SCHEDULE
from ml_platform.partitions import daily_partitions_for, hour_key, hourly_partitions_for
from ml_platform_tests.conftest import local_platform

DAY = date(2013, 6, 1)
BUSY = datetime(2013, 6, 1, 14, tzinfo=UTC)  # 10:00 in New York
QUIET = datetime(2013, 6, 1, 6, tzinfo=UTC)  # 02:00 in New York: nothing departs


@dataclass
class Platform:
    settings: Settings
    resources: dict
    instance: dg.DagsterInstance
    assets: list

    @property
    def root(self) -> Path:
        return self.settings.landing_root

    def materialize(self, keys, partition: str):
        return dg.materialize(
            self.assets,
            selection=keys,
            partition_key=partition,
            resources=self.resources,
            instance=self.instance,
            raise_on_error=False,
        )

    def stored(self, table: str, hour: datetime | None = None) -> pd.DataFrame:
        sql = f"select * from raw.{table}"  # noqa: S608 - the test's own table names
        params = []
        if hour is not None:
            sql, params = f"{sql} where event_hour = ?", [hour]
        with duckdb.connect(str(self.settings.warehouse_path), read_only=True) as conn:
            return conn.execute(f"{sql} order by all", params).fetchdf()


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Iterator[Platform]:
    """2013-06-01 landed (schedule and 24 hours); its schedule and two hours materialized."""
    with local_platform(tmp_path_factory.mktemp("intraday"), "landing") as (settings, resources, instance):
        land_intraday(DAY, 1, settings.landing_root, echo=lambda _: None)
        assets = build_intraday_assets(daily_partitions_for(settings), hourly_partitions_for(settings))
        found = Platform(settings, resources, instance, assets)
        assert found.materialize([RAW_SCHEDULE], DAY.isoformat()).success
        for hour in (BUSY, QUIET):
            assert found.materialize(list(RAW_HOURLY.values()), hour_key(hour)).success
        yield found


def _expected(table: str, hour: datetime) -> pd.DataFrame:
    """The hour as ``intraday`` slices it from the packaged year, conformed."""
    if table == "observations":
        rows = intraday.observations(hourly.packaged_weather(), hour)
    else:
        rows = getattr(intraday, table)(hourly.packaged_timed(), hour)
    return conform(rows, HOURLY_TABLES[table], origin="test")


def _rows(frame: pd.DataFrame) -> list[tuple]:
    """Rows as plain values (instants in UTC), whatever dtypes a reader gives them."""
    columns = []
    for name in frame.columns:
        values = frame[name]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        if pd.api.types.is_datetime64_any_dtype(values):
            columns.append([None if pd.isna(v) else v.isoformat() for v in values])
        elif pd.api.types.is_numeric_dtype(values):
            columns.append([None if pd.isna(v) else float(v) for v in values])
        else:
            columns.append([None if pd.isna(v) else str(v) for v in values])
    return sorted(zip(*columns, strict=True), key=repr)


def _same(stored: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(stored.columns) == list(expected.columns)
    assert _rows(stored) == _rows(expected)


@pytest.mark.parametrize("table", list(HOURLY_TABLES))
def test_an_hours_stored_rows_are_the_intraday_slice(platform, table):
    busy = platform.stored(table, BUSY)
    assert len(busy) > 0 and (busy["event_hour"] == pd.Timestamp(BUSY)).all()
    _same(busy, _expected(table, BUSY))
    _same(platform.stored(table, QUIET), _expected(table, QUIET))


def test_the_stored_schedule_is_the_days_plan(platform):
    stored = platform.stored("schedule")
    timed = hourly.packaged_timed()
    plan = intraday.schedule(timed[timed["flight_date"] == pd.Timestamp(DAY)])
    _same(stored, conform(plan, SCHEDULE, origin="test"))
    assert list(stored.columns) == intraday.SCHEDULE_COLUMNS


def test_a_quiet_hour_is_an_empty_file_that_stores_no_departures(platform):
    path = platform.root / "departures" / "2013-06-01T06.parquet"
    assert path.exists() and len(pd.read_parquet(path)) == 0
    assert len(platform.stored("departures", QUIET)) == 0


def test_hour_partitions_record_row_counts(platform):
    records = platform.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=RAW_HOURLY["departures"], asset_partitions=[hour_key(BUSY)]), limit=1
    ).records
    metadata = records[0].asset_materialization.metadata
    assert metadata["dagster/partition_row_count"].value == len(_expected("departures", BUSY))
    assert "2013-06-01T14.parquet" in metadata["source_files"].value


def _break(frame: pd.DataFrame, fault: str) -> pd.DataFrame:
    frame = frame.copy()
    if fault == "missing column":
        return frame.drop(columns=["dep_delay"])
    if fault == "value outside its domain":
        frame.loc[0, "dep_delay"] = 99999.0
    if fault == "event_hour of another hour":
        frame["event_hour"] = frame["event_hour"] + pd.Timedelta(hours=1)
    if fault == "event outside the hour":
        frame.loc[0, "dep_at"] = frame.loc[0, "dep_at"] + pd.Timedelta(hours=2)
    return frame


FAULTS = {
    "missing column": "departures is missing column(s) dep_delay",
    "value outside its domain": "column dep_delay: 99999 in row 1 is outside -1440..2880",
    "event_hour of another hour": "have event_hour other than the file's hour 2013-06-01T14:00Z",
    "event outside the hour": "have dep_at outside the file's hour 2013-06-01T14:00Z",
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_bad_hourly_file_is_refused_naming_file_and_field(platform, tmp_path, fault):
    good = platform.root / "departures" / "2013-06-01T14.parquet"
    landing = LandingSource(root=str(tmp_path))
    bad = tmp_path / "departures" / good.name
    write_frame_atomically(_break(pd.read_parquet(good), fault), bad)
    with pytest.raises(SourceError) as err:
        landing.read_hours("departures", BUSY, BUSY + timedelta(hours=1))
    assert str(err.value).startswith(f"{bad}: "), err.value
    assert FAULTS[fault] in str(err.value)


@pytest.mark.parametrize("fault", ["event outside the hour", "missing column"])
def test_a_refused_hour_changes_nothing_stored(platform, fault):
    good = platform.root / "departures" / "2013-06-01T14.parquet"
    original = good.read_bytes()
    before = platform.stored("departures")
    try:
        write_frame_atomically(_break(pd.read_parquet(good), fault), good)
        result = platform.materialize([RAW_HOURLY["departures"]], hour_key(BUSY))
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        message = str(failure.step_failure_data.error.message)
        assert str(good) in message and FAULTS[fault] in message
        pd.testing.assert_frame_equal(platform.stored("departures"), before)
    finally:
        good.write_bytes(original)


@pytest.fixture(scope="module")
def busy_hour() -> pd.DataFrame:
    return PackagedSource().read_hours("departures", BUSY, BUSY + timedelta(hours=1)).frame


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.data(),
    minutes=st.one_of(st.integers(-3 * 24 * 60, -1), st.integers(60, 3 * 24 * 60)),
    seconds=st.integers(0, 59),
)
def test_events_outside_their_hour_are_refused(busy_hour, tmp_path_factory, data, minutes, seconds):
    """Any departure moved out of [hour, hour + 1h) refuses the file naming it and dep_at; one
    moved inside the hour is accepted."""
    row = data.draw(st.integers(0, len(busy_hour) - 1))
    root = tmp_path_factory.mktemp("hour")
    path = root / "departures" / "2013-06-01T14.parquet"
    moved = busy_hour.copy()
    moved.loc[row, "dep_at"] = pd.Timestamp(BUSY) + pd.Timedelta(minutes=minutes, seconds=seconds)
    write_frame_atomically(moved, path)
    with pytest.raises(SourceError, match="dep_at outside the file's hour 2013-06-01T14:00Z") as err:
        LandingSource(root=str(root)).judge_hour_file("departures", path, BUSY)
    assert str(err.value).startswith(str(path))
    inside = busy_hour.copy()
    inside.loc[row, "dep_at"] = pd.Timestamp(BUSY) + pd.Timedelta(minutes=minutes % 60, seconds=seconds)
    write_frame_atomically(inside, path)
    assert len(LandingSource(root=str(root)).judge_hour_file("departures", path, BUSY).frame) == len(inside)


def test_hourly_file_names_are_utc_hours(tmp_path):
    landing = LandingSource(root=str(tmp_path))
    frame = PackagedSource().read_hours("departures", BUSY, BUSY + timedelta(hours=1)).frame
    for name, problem in [
        ("2013-06-01T24.parquet", "not a calendar date and hour"),
        ("2013-06-01-14.parquet", "file name is not <YYYY-MM-DD>T<HH>"),
    ]:
        write_frame_atomically(frame, tmp_path / "departures" / name)
        with pytest.raises(SourceError, match=problem):
            landing.judge_hour_file("departures", tmp_path / "departures" / name, BUSY)
    write_frame_atomically(frame, tmp_path / "departures" / "2013-06-01T15.parquet")
    with pytest.raises(SourceError, match="named for another hour than 2013-06-01T14"):
        landing.judge_hour_file("departures", tmp_path / "departures" / "2013-06-01T15.parquet", BUSY)


def test_a_missing_hour_is_named(tmp_path):
    land_hours(BUSY, 1, tmp_path)
    with pytest.raises(SourceError, match=r"departures/2013-06-01T15: no landed file"):
        LandingSource(root=str(tmp_path)).read_hours("departures", BUSY, BUSY + timedelta(hours=2))


def test_the_cli_lands_a_days_schedule_and_hours(tmp_path):
    from ml_platform.cli import main

    assert main(["land", "--start", "2013-06-01", "--intraday", "--to", str(tmp_path), "--no-reference"]) == 0
    assert (tmp_path / "schedule" / "2013-06-01.parquet").exists()
    for table in HOURLY_TABLES:
        assert len(list((tmp_path / table).glob("2013-06-01T*.parquet"))) == 24
    assert not (tmp_path / "flights").exists()


# --- sensors ------------------------------------------------------------------------------------


def _tick(sensor, instance, defs, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
    )
    return sensor(context), context


def test_the_landing_sensor_requests_the_hours_and_tables_that_arrived(landing_settings, instance):
    defs = build_definitions(landing_settings)
    sensor = defs.get_sensor_def("intraday_landing_sensor")
    root = landing_settings.landing_root
    land_hours(BUSY, 2, root)  # 14:00 and 15:00
    (root / "schedule").mkdir()
    write_frame_atomically(
        PackagedSource().read_days("schedule", DAY, DAY + timedelta(days=1)).frame,
        root / "schedule" / "2013-06-01.parquet",
    )
    first, context = _tick(sensor, instance, defs)
    requested = {
        (r.job_name, r.partition_key, tuple(k.path[-1] for k in r.asset_selection))
        for r in first.run_requests
    }
    assert requested == {
        ("ingest_schedule", "2013-06-01", ("schedule",)),
        ("ingest_hours", "2013-06-01-14:00", ("departures", "arrivals", "observations")),
        ("ingest_hours", "2013-06-01-15:00", ("departures", "arrivals", "observations")),
    }
    # The requested hour runs as the sensor asked: its job, partition and tables.
    (hour_request,) = [r for r in first.run_requests if r.partition_key == "2013-06-01-14:00"]
    run = defs.resolve_job_def(hour_request.job_name).execute_in_process(
        partition_key=hour_request.partition_key,
        asset_selection=hour_request.asset_selection,
        instance=instance,
        tags=hour_request.tags,
    )
    assert run.success
    assert {m.partition for m in run.get_asset_materialization_events()} == {"2013-06-01-14:00"}
    again, _ = _tick(sensor, instance, defs, first.cursor)
    assert not again.run_requests  # nothing new
    # A corrected arrivals file of 15:00 requests that hour for arrivals alone; a bad one waits.
    arrivals = root / "arrivals" / "2013-06-01T15.parquet"
    frame = pd.read_parquet(arrivals)
    write_frame_atomically(frame.iloc[:-1], arrivals)
    bad = root / "departures" / "2013-06-01T16.parquet"
    write_frame_atomically(
        _break(pd.read_parquet(root / "departures" / "2013-06-01T14.parquet"), "event_hour of another hour"),
        bad,
    )
    later, _ = _tick(sensor, instance, defs, first.cursor)
    assert [(r.partition_key, [k.path[-1] for k in r.asset_selection]) for r in later.run_requests] == [
        ("2013-06-01-15:00", ["arrivals"])
    ]
    restarted, _ = _tick(sensor, instance, defs)
    keys = {r.run_key for r in restarted.run_requests}
    assert {r.run_key for r in first.run_requests if r.partition_key != "2013-06-01-15:00"} <= keys


def test_the_replay_lands_hour_by_hour_with_each_schedule_first(landing_settings, instance):
    defs = build_definitions(landing_settings)
    sensor = defs.get_sensor_def("intraday_replay_sensor")
    root = landing_settings.landing_root
    cursor = "2013-05-31T22"
    for expected in ("2013-05-31T23", "2013-06-01T00", "2013-06-01T01"):
        _, context = _tick(sensor, instance, defs, cursor)
        assert context.cursor == expected
        cursor = context.cursor
        if expected == "2013-06-01T00":  # 2013-05-31T23 landed; the next day's plan not yet
            assert not (root / "schedule" / "2013-06-01.parquet").exists()
    assert (root / "schedule" / "2013-06-01.parquet").exists()
    assert sorted(p.name for p in (root / "departures").iterdir()) == [
        "2013-05-31T22.parquet",
        "2013-05-31T23.parquet",
        "2013-06-01T00.parquet",
    ]
    # The daily replay is a separate clock and lands days as before.
    assert not (root / "flights").exists()


def test_existing_jobs_leave_the_intraday_assets_alone(settings):
    defs = build_definitions(settings)
    intraday_keys = {RAW_SCHEDULE, *RAW_HOURLY.values()}
    graph = defs.resolve_asset_graph()
    for name in ("ingest_days", "retrain"):
        selected = set(defs.resolve_job_def(name).asset_layer.selected_asset_keys)
        assert not selected & intraday_keys, name
    assert set(defs.resolve_job_def("ingest_hours").asset_layer.selected_asset_keys) == set(
        RAW_HOURLY.values()
    )
    assert set(defs.resolve_job_def("ingest_schedule").asset_layer.selected_asset_keys) == {RAW_SCHEDULE}
    assert isinstance(graph.get(RAW_HOURLY["arrivals"]).partitions_def, dg.HourlyPartitionsDefinition)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_landed_hours_read_back_as_the_packaged_hours(tmp_path, fmt):
    """Quiet hours included (06:00 UTC: nothing departs), an empty file reads as no rows."""
    start = datetime(2013, 6, 1, 5, tzinfo=UTC)
    land_hours(start, 3, tmp_path, fmt)
    landing, packaged = LandingSource(root=str(tmp_path)), PackagedSource()
    for table in HOURLY_TABLES:
        got = landing.read_hours(table, start, start + timedelta(hours=3)).frame
        pd.testing.assert_frame_equal(
            got, packaged.read_hours(table, start, start + timedelta(hours=3)).frame
        )
        assert landing.hour_counts(table, start, start + timedelta(hours=3)) == packaged.hour_counts(
            table, start, start + timedelta(hours=3)
        )
    assert landing.available_hours("departures") == hourly.hours_between(start, start + timedelta(hours=3))


def test_an_empty_schedule_needs_upstreams_marker(tmp_path):
    frame = PackagedSource().read_days("schedule", DAY, DAY + timedelta(days=1)).frame
    path = tmp_path / "schedule" / "2013-06-01.parquet"
    write_frame_atomically(frame.head(0), path)
    landing = LandingSource(root=str(tmp_path))
    with pytest.raises(SourceError, match=r"2013-06-01.parquet: no rows .*empty/schedule/2013-06-01"):
        landing.read_days("schedule", DAY, DAY + timedelta(days=1))
    (tmp_path / "empty" / "schedule").mkdir(parents=True)
    (tmp_path / "empty" / "schedule" / "2013-06-01").write_text("no flights planned\n")
    assert landing.read_days("schedule", DAY, DAY + timedelta(days=1)).frame.empty


def test_a_schedule_whose_departure_instant_disagrees_with_its_hour_is_refused(tmp_path):
    frame = PackagedSource().read_days("schedule", DAY, DAY + timedelta(days=1)).frame
    path = tmp_path / "schedule" / "2013-06-01.parquet"
    write_frame_atomically(frame, path)
    landing = LandingSource(root=str(tmp_path))
    assert len(landing.read_days("schedule", DAY, DAY + timedelta(days=1)).frame) == len(frame)
    frame.loc[3, "sched_dep_at"] += pd.Timedelta(hours=1)
    write_frame_atomically(frame, path)
    with pytest.raises(SourceError, match=r"1 row\(s\) have sched_dep_at that is not time_hour \+ minute"):
        landing.judge_file("schedule", path, DAY)
