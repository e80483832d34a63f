"""The landing directory as upstream: the ``land`` command and what ``LandingSource`` reads and
refuses. A corrupted delivery stopped by the raw checks: ``test_landing_checks.py``."""

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from ml_platform.cli import main
from ml_platform.ingestion.schemas import DAILY_TABLES, FLIGHTS, REFERENCE_TABLES
from ml_platform.ingestion.source import (
    REFERENCE_DIR,
    LandingSource,
    PackagedSource,
    SourceError,
    day_of_file,
    read_day_file,
    write_frame_atomically,
)

JAN1, JAN2 = date(2013, 1, 1), date(2013, 1, 2)


def _next(day: date) -> date:
    return day + timedelta(days=1)


# --- the land command ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_land_command_writes_days_the_landing_source_reads_back_identically(tmp_path, fmt, capsys):
    root = tmp_path / "landing"
    # The year's end (2013-12-31 has no weather at all) and the autumn DST change (a local hour twice).
    assert main(["land", "--start", "2013-12-29", "--days", "3", "--to", str(root), "--format", fmt]) == 0
    assert main(["land", "--start", "2013-11-02", "--days", "2", "--to", str(root), "--format", fmt]) == 0
    assert "landed 2013-12-31 (3/3)" in capsys.readouterr().out

    days = [date(2013, 11, 2), date(2013, 11, 3), date(2013, 12, 29), date(2013, 12, 30), date(2013, 12, 31)]
    for table in DAILY_TABLES:
        assert sorted(p.name for p in (root / table).iterdir()) == [f"{d}.{fmt}" for d in days]
    assert sorted(p.name for p in (root / REFERENCE_DIR).iterdir()) == sorted(
        f"{t}.parquet" for t in REFERENCE_TABLES
    )

    landing, packaged = LandingSource(root=str(root)), PackagedSource()
    assert landing.available_days("flights") == days
    windows = [(d, _next(d)) for d in days] + [(date(2013, 11, 2), date(2013, 11, 4))]
    windows.append((date(2013, 12, 29), date(2014, 1, 1)))
    for table in DAILY_TABLES:
        for start, end in windows:
            landed, original = landing.read_days(table, start, end), packaged.read_days(table, start, end)
            assert len(original.frame) > 0 or (table, start) == ("weather", date(2013, 12, 31))
            assert_frame_equal(landed.frame, original.frame, check_exact=True)
            assert landed.warnings == []
            assert landing.row_counts(table, start, end) == packaged.row_counts(table, start, end)
    for table in REFERENCE_TABLES:
        assert_frame_equal(
            landing.read_reference(table).frame, packaged.read_reference(table).frame, check_exact=True
        )
    # The day without weather is delivered as an empty file, not left out.
    empty = landing.read_days("weather", date(2013, 12, 31), date(2014, 1, 1))
    assert len(empty.frame) == 0 and empty.origins == [str(root / "weather" / f"2013-12-31.{fmt}")]


@pytest.mark.parametrize(
    "args",
    [
        ["--start", "2013-01-01", "--days", "0"],
        ["--start", "2014-01-01", "--days", "1"],
        ["--start", "2013-12-31", "--days", "2"],
        ["--start", "2012-12-31", "--days", "1"],
    ],
)
def test_land_command_refuses_days_it_cannot_deliver(tmp_path, args, capsys):
    root = tmp_path / "landing"
    assert main(["land", *args, "--to", str(root)]) == 2
    assert capsys.readouterr().err.startswith("ml-platform land: ")
    assert not root.exists()


def test_land_command_defaults_to_the_configured_landing_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ML_PLATFORM_LANDING_ROOT", str(tmp_path / "configured"))
    assert main(["land", "--start", "2013-06-01", "--no-reference"]) == 0
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.parquet")) == [
        "configured/flights/2013-06-01.parquet",
        "configured/weather/2013-06-01.parquet",
    ]


def test_land_command_reports_a_bad_setting_without_a_traceback(monkeypatch, capsys):
    monkeypatch.setenv("ML_PLATFORM_ENV", "staging")
    assert main(["land", "--start", "2013-06-01"]) == 2
    assert "ML_PLATFORM_ENV='staging'" in capsys.readouterr().err


def test_land_command_rejects_a_malformed_date(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["land", "--start", "2013-02-30", "--to", str(tmp_path)])
    assert exit_.value.code == 2


# --- what LandingSource refuses ------------------------------------------------------------------


@pytest.fixture(scope="module")
def jan1_flights() -> pd.DataFrame:
    return PackagedSource().read_days("flights", JAN1, JAN2).frame


def _deliver(root: Path, frame: pd.DataFrame, day: date = JAN1, fmt: str = "parquet") -> Path:
    path = root / "flights" / f"{day.isoformat()}.{fmt}"
    write_frame_atomically(frame, path)
    return path


def _refused(source: LandingSource, *fragments: str, day: date = JAN1) -> str:
    with pytest.raises(SourceError) as err:
        source.read_days("flights", day, _next(day))
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_reads_a_good_delivery(tmp_path, jan1_flights):
    path = _deliver(tmp_path, jan1_flights)
    batch = LandingSource(root=str(tmp_path)).read_days("flights", JAN1, JAN2)
    assert_frame_equal(batch.frame, jan1_flights)
    assert batch.origins == [str(path)]


def test_refuses_paths_that_climb_out_of_the_root(tmp_path):
    root = tmp_path / "landing"
    root.mkdir()
    source = LandingSource(root=str(root))
    for relative in ("../secrets.parquet", "flights/../../secrets.parquet", "/etc/passwd"):
        with pytest.raises(SourceError, match="outside the landing root"):
            source.resolve(relative)
    with pytest.raises(SourceError, match="outside the landing root"):
        source.available_days("../landing2")


def test_refuses_a_day_file_symlinked_outside_the_root(tmp_path, jan1_flights):
    root = tmp_path / "landing"
    outside = tmp_path / "elsewhere" / "2013-01-01.parquet"
    write_frame_atomically(jan1_flights, outside)
    (root / "flights").mkdir(parents=True)
    (root / "flights" / "2013-01-01.parquet").symlink_to(outside)
    _refused(LandingSource(root=str(root)), "2013-01-01.parquet", "outside the landing root")


def test_refuses_a_table_folder_symlinked_outside_the_root(tmp_path, jan1_flights):
    root = tmp_path / "landing"
    root.mkdir()
    _deliver(tmp_path / "elsewhere", jan1_flights)
    (root / "flights").symlink_to(tmp_path / "elsewhere" / "flights", target_is_directory=True)
    _refused(LandingSource(root=str(root)), "flights/2013-01-01.parquet", "outside the landing root")


def test_follows_a_symlink_that_stays_inside_the_root(tmp_path, jan1_flights):
    archived = tmp_path / "archive" / "2013-01-01.parquet"
    write_frame_atomically(jan1_flights, archived)
    (tmp_path / "flights").mkdir()
    (tmp_path / "flights" / "2013-01-01.parquet").symlink_to(archived)
    batch = LandingSource(root=str(tmp_path)).read_days("flights", JAN1, JAN2)
    assert len(batch.frame) == 842
    # ... but only to a file named for the same day.
    renamed = archived.rename(archived.with_name("batch-17.parquet"))
    (tmp_path / "flights" / "2013-01-01.parquet").unlink()
    (tmp_path / "flights" / "2013-01-01.parquet").symlink_to(renamed)
    _refused(LandingSource(root=str(tmp_path)), str(renamed), "file name is not <YYYY-MM-DD>")


def test_refuses_an_empty_file(tmp_path):
    (tmp_path / "flights").mkdir()
    path = tmp_path / "flights" / "2013-01-01.parquet"
    path.write_bytes(b"")
    _refused(LandingSource(root=str(tmp_path)), str(path), "empty")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_refuses_a_truncated_file(tmp_path, jan1_flights, fmt):
    path = _deliver(tmp_path, jan1_flights, fmt=fmt)
    data = path.read_bytes()
    if fmt == "parquet":
        path.write_bytes(data[: len(data) // 2])
        _refused(LandingSource(root=str(tmp_path)), str(path), "unreadable parquet")
    else:
        # Cut in the middle of a row: half a CSV still parses, its last row just lacks fields
        # (which pandas would read as nulls). A cut exactly at a row boundary is undetectable in CSV.
        row_start = data.index(b"\n", len(data) // 2) + 1
        row_end = data.index(b"\n", row_start)
        path.write_bytes(data[: (row_start + row_end) // 2])
        _refused(LandingSource(root=str(tmp_path)), str(path), "field(s) but the header has 20", "truncated")


def test_refuses_rows_dated_outside_the_files_day(tmp_path, jan1_flights):
    path = _deliver(tmp_path, jan1_flights, day=JAN2)
    _refused(
        LandingSource(root=str(tmp_path)),
        str(path),
        "842 row(s)",
        "outside the file's day 2013-01-02",
        day=JAN2,
    )


def test_refuses_a_value_that_does_not_convert_naming_file_and_column(tmp_path, jan1_flights):
    frame = jan1_flights.astype({"distance": object})
    frame.loc[3, "distance"] = "far"
    path = _deliver(tmp_path, frame, fmt="csv")
    _refused(LandingSource(root=str(tmp_path)), str(path), "'distance'", "DOUBLE")


def test_refuses_a_file_without_any_day_column(tmp_path, jan1_flights):
    path = _deliver(tmp_path, jan1_flights.drop(columns=["flight_date", "year", "month", "day"]))
    _refused(LandingSource(root=str(tmp_path)), str(path), "missing column(s)", "flight_date")


def test_derives_the_day_column_from_year_month_day(tmp_path, jan1_flights):
    _deliver(tmp_path, jan1_flights.drop(columns=["flight_date"]), fmt="csv")
    batch = LandingSource(root=str(tmp_path)).read_days("flights", JAN1, JAN2)
    assert_frame_equal(batch.frame, jan1_flights, check_exact=True)


def test_warns_about_unknown_columns_naming_the_file(tmp_path, jan1_flights):
    path = _deliver(tmp_path, jan1_flights.assign(surprise=1))
    batch = LandingSource(root=str(tmp_path)).read_days("flights", JAN1, JAN2)
    assert list(batch.frame.columns) == list(jan1_flights.columns)
    assert batch.warnings == [f"{path}: ignored unknown column(s) surprise not declared for flights"]


def test_refuses_a_missing_day_and_a_day_delivered_twice(tmp_path, jan1_flights):
    source = LandingSource(root=str(tmp_path))
    _refused(source, "flights/2013-01-01", "no landed file")
    _deliver(tmp_path, jan1_flights)
    _deliver(tmp_path, jan1_flights, fmt="csv")
    _refused(source, "2013-01-01.parquet", "2013-01-01.csv", "delivered twice")


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("latest.parquet", "file name is not <YYYY-MM-DD>"),
        ("2013-1-5.parquet", "file name is not <YYYY-MM-DD>"),
        ("2013-01-01.json", "file name is not <YYYY-MM-DD>"),
        ("2013-02-30.csv", "not a calendar date"),
    ],
)
def test_refuses_file_names_that_are_not_days(tmp_path, jan1_flights, name, problem):
    stray = _deliver(tmp_path, jan1_flights).with_name(name)
    write_frame_atomically(jan1_flights, stray)
    for refuse in (day_of_file, lambda path: read_day_file(path, FLIGHTS, JAN1)):
        with pytest.raises(SourceError) as err:
            refuse(stray)
        assert str(err.value).startswith(f"{stray}: ") and problem in str(err.value)
    # Listing the deliveries skips such a file (and files being written), never the good days.
    (tmp_path / "flights" / ".2013-01-03.parquet.tmp").write_bytes(b"in progress")
    assert LandingSource(root=str(tmp_path)).available_days("flights") == [JAN1]


def test_refuses_a_file_named_for_another_day(tmp_path, jan1_flights):
    path = _deliver(tmp_path, jan1_flights)
    with pytest.raises(SourceError, match="named for another day than 2013-01-02"):
        read_day_file(path, FLIGHTS, JAN2)


# --- ranges: the days are conformed together, and a fault still names its file -------------------

RANGE = [date(2013, 1, d) for d in range(1, 5)]


@pytest.fixture(scope="module")
def range_days() -> dict[date, pd.DataFrame]:
    packaged = PackagedSource()
    return {d: packaged.read_days("flights", d, _next(d)).frame for d in RANGE}


def test_a_range_of_mixed_deliveries_reads_as_its_days_read_one_by_one(tmp_path, range_days):
    """CSV and Parquet, a day declared empty and a day deriving its date from year/month/day:
    the range equals its days read alone."""
    deliveries = {
        RANGE[0]: (range_days[RANGE[0]], "parquet"),
        RANGE[1]: (range_days[RANGE[1]].drop(columns=["flight_date"]), "csv"),
        RANGE[2]: (range_days[RANGE[2]].iloc[0:0], "parquet"),
        RANGE[3]: (range_days[RANGE[3]].assign(surprise=1), "csv"),
    }
    for day, (frame, fmt) in deliveries.items():
        _deliver(tmp_path, frame, day=day, fmt=fmt)
    source = LandingSource(root=str(tmp_path))
    marker = source.empty_marker("flights", RANGE[2])  # upstream says the empty day is really empty
    marker.parent.mkdir(parents=True)
    marker.touch()
    batch = source.read_days("flights", RANGE[0], _next(RANGE[-1]))
    one_by_one = [source.read_days("flights", d, _next(d)) for d in RANGE]
    assert_frame_equal(
        batch.frame, pd.concat([b.frame for b in one_by_one], ignore_index=True), check_exact=True
    )
    assert batch.origins == [o for b in one_by_one for o in b.origins]
    assert batch.warnings == [w for b in one_by_one for w in b.warnings] and len(batch.warnings) == 1


@pytest.mark.parametrize("fault", ["value", "missing_required", "other_day"])
def test_a_fault_in_one_day_of_a_range_names_that_days_file(tmp_path, range_days, fault):
    bad_day = RANGE[2]
    for day in RANGE:
        frame = range_days[day]
        if day == bad_day:
            if fault == "value":
                frame = frame.astype({"distance": object})
                frame.loc[5, "distance"] = "far"
            elif fault == "missing_required":
                frame = frame.copy()
                frame.loc[5, "carrier"] = None
            else:
                frame = range_days[RANGE[0]]
        _deliver(tmp_path, frame, day=day, fmt="csv" if day == bad_day else "parquet")
    expected = {
        "value": ("'distance'", "DOUBLE"),
        "missing_required": ("null values in required column(s) carrier (1)",),
        "other_day": ("outside the file's day 2013-01-03",),
    }[fault]
    with pytest.raises(SourceError) as err:
        LandingSource(root=str(tmp_path)).read_days("flights", RANGE[0], _next(RANGE[-1]))
    message = str(err.value)
    assert message.startswith(str(tmp_path / "flights" / "2013-01-03.csv")), message
    for fragment in expected:
        assert fragment in message, message
