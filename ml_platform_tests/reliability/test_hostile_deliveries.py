"""Hostile landing deliveries that used to slip through, each a plain regression case: a file
missing a column inside a range, an empty delivery for a day upstream fills, and content that
cannot be what upstream meant. Every one is refused naming the file and the fault, alone and
inside a range of days (the same message both ways), and the landing sensor reports it before any
run: its day waits while good days go on.
"""

from __future__ import annotations

import gzip
import io
import shutil
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from ml_platform.automation.landing_scan import load_cursor
from ml_platform.definitions import build_definitions
from ml_platform.ingestion.landing import land_days
from ml_platform.ingestion.source import LandingSource, PackagedSource, SourceError

DAYS = [date(2013, 5, 6) + timedelta(days=i) for i in range(3)]
BAD = DAYS[1]


def _day(table: str, day: date = BAD) -> pd.DataFrame:
    return _packaged_day(table, day).copy()


@lru_cache(maxsize=8)
def _packaged_day(table: str, day: date) -> pd.DataFrame:
    return PackagedSource().read_days(table, day, day + timedelta(days=1)).frame


def _csv(frame: pd.DataFrame, **options) -> bytes:
    return frame.to_csv(index=False, **options).encode()


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _with(frame: pd.DataFrame, column: str, row: int, value) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[row, column] = value
    return frame


def _edit_line(text: bytes, line: int, column: str, value: str) -> bytes:
    lines = text.decode().split("\n")
    header = lines[0].split(",")
    fields = lines[line].split(",")
    fields[header.index(column)] = value
    lines[line] = ",".join(fields)
    return "\n".join(lines).encode()


F = "flights"
# name, table, file suffix, content, what the refusal says (after "<file>: ")
REFUSED = [
    (
        "arr_delay delivered under another name",
        F,
        "csv",
        lambda: _csv(_day(F).rename(columns={"arr_delay": "arrival_delay"})),
        "flights is missing column(s) arr_delay",
    ),
    (
        "header and no rows for a day upstream fills",
        F,
        "csv",
        lambda: _csv(_day(F).iloc[:0]),
        "no rows (upstream fills this day; add {root}/empty/flights/2013-05-07 if it is really empty)",
    ),
    (
        "Parquet with no rows for a day upstream fills",
        "weather",
        "parquet",
        lambda: _parquet(_day("weather").iloc[:0]),
        "no rows (upstream fills this day; add {root}/empty/weather/2013-05-07 if it is really empty)",
    ),
    (
        "nulls written NA",
        F,
        "csv",
        lambda: _csv(_day(F), na_rep="NA"),
        "is not a number (a null is an empty field)",
    ),
    (
        "a tail number written NA",
        F,
        "parquet",
        lambda: _parquet(_with(_day(F), "tailnum", 4, "NA")),
        "column tailnum: 'NA' in row 5 is a null written as text",
    ),
    ("semicolons between fields", F, "csv", lambda: _csv(_day(F), sep=";"), "delimiter is ';', expected ','"),
    (
        "gzip content named .csv",
        F,
        "csv",
        lambda: gzip.compress(_csv(_day(F))),
        "gzip-compressed content in a .csv file",
    ),
    ("Parquet content named .csv", F, "csv", lambda: _parquet(_day(F)), "Parquet content in a .csv file"),
    (
        "CSV text named .parquet",
        F,
        "parquet",
        lambda: _csv(_day(F)),
        "unreadable parquet file: CSV text in a .parquet file",
    ),
    (
        "UTF-16 text",
        F,
        "csv",
        lambda: _day(F).to_csv(index=False).encode("utf-16"),
        "text is UTF-16 (or holds NUL bytes), expected UTF-8",
    ),
    (
        "Latin-1 text",
        "weather",
        "csv",
        lambda: _day("weather").assign(origin="ÉWR").to_csv(index=False).encode("latin-1"),
        "text is not UTF-8: byte 0xc9 on line 2",
    ),
    (
        "arr_delay missing on every row",
        F,
        "parquet",
        lambda: _parquet(_day(F).assign(arr_delay=np.nan)),
        "column arr_delay: every value missing",
    ),
    (
        "temperature missing on every row",
        "weather",
        "parquet",
        lambda: _parquet(_day("weather").assign(temp=np.nan)),
        "column temp: every value missing",
    ),
    (
        "a carrier not in the airlines",
        F,
        "parquet",
        lambda: _parquet(_with(_day(F), "carrier", 7, "ZZ")),
        "carrier 'ZZ' is not in raw/airlines (1 row(s), first in row 8)",
    ),
    (
        "an origin not in the airports",
        "weather",
        "parquet",
        lambda: _parquet(_with(_day("weather"), "origin", 2, "XXX")),
        "origin 'XXX' is not in raw/airports",
    ),
    (
        "a lower-case destination code",
        F,
        "parquet",
        lambda: _parquet(_with(_day(F), "dest", 3, "mia")),
        "column dest: 'mia' in row 4 is not a code of the form [A-Z]{3}",
    ),
    (
        "a flight number that overflows 64 bits",
        F,
        "csv",
        lambda: _edit_line(_csv(_day(F)), 3, "flight", "99999999999999999999"),
        "column 'flight' of flights does not convert to BIGINT: 99999999999999999999 in row 3 overflows",
    ),
    (
        "an infinite delay",
        F,
        "parquet",
        lambda: _parquet(_with(_day(F), "dep_delay", 0, np.inf)),
        "column dep_delay: inf in row 1 is not a finite number",
    ),
    (
        "a departure at 13:75",
        F,
        "parquet",
        lambda: _parquet(_with(_day(F), "dep_time", 0, 1375.0)),
        "column dep_time: 1375 in row 1 is not a time of day hhmm",
    ),
    (
        "a negative humidity",
        "weather",
        "parquet",
        lambda: _parquet(_with(_day("weather"), "humid", 0, -3.0)),
        "column humid: -3 in row 1 is outside 0..100",
    ),
    (
        "dates written month/day/year",
        F,
        "csv",
        lambda: _csv(_day(F).assign(flight_date=_day(F).flight_date.dt.strftime("%m/%d/%Y"))),
        "'05/07/2013' in row 1 is not a date written YYYY-MM-DD",
    ),
    (
        "instants without their UTC offset",
        F,
        "csv",
        lambda: _csv(_day(F).assign(time_hour=_day(F).time_hour.dt.tz_localize(None))),
        "is not a timestamp with its UTC offset",
    ),
    (
        "instants an hour off",
        "weather",
        "parquet",
        lambda: _parquet(_day("weather").assign(time_hour=_day("weather").time_hour + pd.Timedelta(hours=1))),
        "row(s) have time_hour that is not weather_date at hour in America/New_York",
    ),
    (
        "a year that disagrees with the day",
        F,
        "parquet",
        lambda: _parquet(_with(_day(F), "year", 2, 2014)),
        "1 row(s) have year/month/day that disagree with flight_date (first in row 3)",
    ),
    (  # found by the fuzzer: the local-hour rule failed on a day column with no usable value
        "the day derived from a year missing on every row",
        F,
        "csv",
        lambda: _csv(_day(F).drop(columns=["flight_date"]).assign(year=None)),
        "null values in required column(s) flight_date (",
    ),
    (
        "a column twice in the header",
        F,
        "csv",
        lambda: _csv(pd.concat([_day(F), _day(F)[["carrier"]]], axis=1)),
        "column(s) carrier appear more than once in the header",
    ),
    (
        "a CSV cut off after its last field",
        F,
        "csv",
        lambda: _csv(_day(F))[:-1],
        "the last line has no line ending; the file is truncated",
    ),
]


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile") / "landing"
    land_days(DAYS[0], len(DAYS), root, echo=lambda _: None)
    return root


def _deliver(root: Path, table: str, suffix: str, content: bytes) -> Path:
    for old in (root / table).glob(f"{BAD.isoformat()}.*"):
        old.unlink()
    path = root / table / f"{BAD.isoformat()}.{suffix}"
    path.write_bytes(content)
    return path


def _restore(root: Path, table: str) -> None:
    for old in (root / table).glob(f"{BAD.isoformat()}.*"):
        old.unlink()
    (root / table / f"{BAD.isoformat()}.parquet").write_bytes(_parquet(_day(table)))


def _refusal(source: LandingSource, table: str, start: date, end: date) -> str:
    with pytest.raises(SourceError) as err:
        source.read_days(table, start, end)
    return str(err.value)


@pytest.mark.parametrize(("name", "table", "suffix", "content", "says"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_delivery_that_cannot_be_right_is_refused_alone_and_in_a_range(
    landing, name, table, suffix, content, says, record
):
    """Refused naming the file and the fault, with the same message alone and inside a range."""
    path = _deliver(landing, table, suffix, content())
    source = LandingSource(root=str(landing))
    try:
        alone = _refusal(source, table, BAD, BAD + timedelta(days=1))
        in_range = _refusal(source, table, DAYS[0], DAYS[-1] + timedelta(days=1))
    finally:
        _restore(landing, table)
    expected = f"{path}: " + says.replace("{root}", str(landing))
    assert alone.startswith(expected) or (alone.startswith(f"{path}: ") and says in alone), alone
    assert in_range == alone
    record(
        fault=f"landing file: {name}",
        expected="refused naming the file and the fault, alone and inside a three-day range",
        observed=alone.replace(str(landing), "<landing>"),
        bad_input=True,
        clear_error=True,
    )


ACCEPTED = [
    ("UTF-8 with a byte-order mark", "csv", lambda f: f.to_csv(index=False).encode("utf-8-sig")),
    (
        "instants written with the New York offset",
        "csv",
        lambda f: _csv(f.assign(time_hour=f.time_hour.dt.tz_convert("America/New_York"))),
    ),
    (
        "text dictionary-encoded",
        "parquet",
        lambda f: _parquet(f.assign(carrier=f.carrier.astype("category"))),
    ),
    (
        "whole numbers written as floats",
        "csv",
        lambda f: _csv(f.astype({"year": "float64", "flight": "float64"})),
    ),
    ("the day derived from year/month/day", "csv", lambda f: _csv(f.drop(columns=["flight_date"]))),
]


@pytest.mark.parametrize(("name", "suffix", "content"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_a_different_but_exact_encoding_is_stored_as_a_clean_delivery(landing, name, suffix, content, record):
    """Content that means exactly the clean rows reads as the clean delivery, alone and in a range."""
    clean = _day(F)
    _deliver(landing, F, suffix, content(clean))
    source = LandingSource(root=str(landing))
    try:
        alone = source.read_days(F, BAD, BAD + timedelta(days=1)).frame
        in_range = source.read_days(F, DAYS[0], DAYS[-1] + timedelta(days=1)).frame
    finally:
        _restore(landing, F)
    assert_frame_equal(alone, clean, check_exact=True)
    assert_frame_equal(in_range[in_range.flight_date == pd.Timestamp(BAD)].reset_index(drop=True), clean)
    record(
        fault=f"landing file: {name}",
        expected="read exactly as the clean delivery",
        observed=f"{len(alone)} rows identical to the clean delivery, alone and in a range",
    )


def test_an_empty_day_is_stored_only_once_upstream_declares_it(landing, record):
    """An empty delivery is refused until the marker says the day really has no rows."""
    path = _deliver(landing, "weather", "csv", _csv(_day("weather").iloc[:0]))
    source = LandingSource(root=str(landing))
    marker = source.empty_marker("weather", BAD)
    try:
        refused = _refusal(source, "weather", DAYS[0], DAYS[-1] + timedelta(days=1))
        assert refused == f"{path}: no rows (upstream fills this day; add {marker} if it is really empty)"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        batch = source.read_days("weather", DAYS[0], DAYS[-1] + timedelta(days=1))
    finally:
        marker.unlink(missing_ok=True)
        _restore(landing, "weather")
    assert sorted(batch.frame.weather_date.dt.date.unique()) == [DAYS[0], DAYS[2]]
    record(
        fault="landing file: an empty delivery replacing a full day, then declared empty",
        expected="refused until upstream's marker declares the day empty; then stored as empty",
        observed=f"{refused.replace(str(landing), '<landing>')} | with the marker: "
        f"{len(batch.frame)} rows for the other two days, none for {BAD}",
        bad_input=True,
        clear_error=True,
    )


def test_the_year_end_without_weather_replays_and_reads(tmp_path, record):
    """2013-12-31 has no weather upstream: the replay lands it declared empty, and it reads."""
    root = tmp_path / "landing"
    land_days(date(2013, 12, 30), 2, root, echo=lambda _: None)
    source = LandingSource(root=str(root))
    weather = source.read_days("weather", date(2013, 12, 30), date(2014, 1, 1)).frame
    packaged = PackagedSource().read_days("weather", date(2013, 12, 30), date(2014, 1, 1)).frame
    assert_frame_equal(weather, packaged, check_exact=True)
    assert (root / "empty" / "weather" / "2013-12-31").exists()
    assert not (root / "empty" / "flights").exists()
    record(
        fault="the real empty day: no weather upstream for 2013-12-31",
        expected="landed with its marker and read as an empty day",
        observed=f"{len(weather)} weather rows for 2013-12-30..31, as packaged; "
        "marker empty/weather/2013-12-31",
    )


# --- the landing sensor sees what the run will see -----------------------------------------------


def _tick(defs, instance, cursor=None):
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
    ) as context:
        return defs.get_sensor_def("landing_sensor")(context)


def _ranges(result) -> list[tuple[str, str]]:
    return [
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in (result.run_requests or [])
    ]


def test_the_sensor_refuses_what_the_run_would_and_good_days_go_on(landing_settings, instance, record):
    """A file missing a column in the middle of five days: the sensor names it and requests the
    good days around it as their own ranges, which read; the corrected file is requested next."""
    root = landing_settings.landing_root
    first = date(2013, 6, 3)
    land_days(first, 5, root, echo=lambda _: None)
    bad = first + timedelta(days=2)
    (root / "flights" / f"{bad}.parquet").unlink()
    path = root / "flights" / f"{bad}.csv"
    path.write_bytes(_csv(_day(F, bad).rename(columns={"arr_delay": "arrival_delay"})))
    defs = build_definitions(landing_settings)
    result = _tick(defs, instance)
    assert _ranges(result) == [
        (str(first), str(first + timedelta(days=1))),
        (str(bad + timedelta(days=1)), str(first + timedelta(days=4))),
    ]
    state = load_cursor(result.cursor)[f"flights/{path.name}"]
    source = LandingSource(root=str(root))
    run_says = _refusal(source, F, bad, bad + timedelta(days=1))
    assert (
        state.status == "rejected"
        and state.problem == run_says == f"{path}: flights is missing column(s) arr_delay"
    )
    for start, end in _ranges(result):  # what those runs will read
        source.read_days(F, date.fromisoformat(start), date.fromisoformat(end) + timedelta(days=1))
    # Nothing new but the refused file: the skip reason names it.
    again = _tick(defs, instance, result.cursor)
    assert not again.run_requests
    path.unlink()
    land_days(bad, 1, root, reference=False, echo=lambda _: None)
    fixed = _tick(defs, instance, again.cursor)
    assert _ranges(fixed) == [(str(bad), str(bad))]
    record(
        fault="landing sensor: a file the run would refuse, between good days",
        expected="reported naming the file; the good days requested around it; the corrected file requested",
        observed=f"requested {_ranges(result)}; refused: {state.problem.replace(str(root), '<landing>')}; "
        f"after the fix requested {_ranges(fixed)}",
        bad_input=True,
        clear_error=True,
    )


def test_the_sensor_names_refused_files_in_its_skip_reason(landing_settings, instance, record, capfd):
    """Only refused files: nothing requested, and the skip reason names each file and fault."""
    root = landing_settings.landing_root
    day = date(2013, 6, 10)
    land_days(day, 1, root, echo=lambda _: None)
    path = root / "flights" / f"{day}.csv"
    (root / "flights" / f"{day}.parquet").unlink()
    path.write_bytes(_csv(_day(F, day).iloc[:0]))
    result = _tick(build_definitions(landing_settings), instance)
    assert not result.run_requests
    reason = result.skip_reason.skip_message
    says = f"flights/{day}.csv: {path}: no rows (upstream fills this day"
    assert says in reason and "each day waits for a corrected file" in reason, reason
    assert f"WARNING - landing file skipped: {says}" in capfd.readouterr().err
    record(
        fault="landing sensor: only refused files",
        expected="skip reason naming each refused file and its fault",
        observed=reason.replace(str(root), "<landing>"),
        bad_input=True,
        clear_error=True,
    )


def test_the_sensor_refuses_a_day_delivered_in_two_formats(landing_settings, instance, record):
    """Parquet and CSV for the same day: both refused by the sensor, not only by the run; once one
    is removed, the day is requested."""
    root = landing_settings.landing_root
    day = date(2013, 6, 17)
    land_days(day, 1, root, echo=lambda _: None)
    parquet = root / "flights" / f"{day}.parquet"
    csv_path = root / "flights" / f"{day}.csv"
    csv_path.write_bytes(_csv(_day(F, day)))
    defs = build_definitions(landing_settings)
    result = _tick(defs, instance)
    assert not result.run_requests
    files = load_cursor(result.cursor)
    twice = f"{parquet} and {csv_path}: the same day was delivered twice"
    assert files[f"flights/{csv_path.name}"].problem == twice
    assert files[f"flights/{parquet.name}"].problem == twice
    assert _refusal(LandingSource(root=str(root)), F, day, day + timedelta(days=1)) == twice
    csv_path.unlink()
    fixed = _tick(defs, instance, result.cursor)
    assert _ranges(fixed) == [(str(day), str(day))]
    record(
        fault="landing sensor: one day delivered as Parquet and as CSV",
        expected="both files refused by the sensor; the day requested once one is removed",
        observed=f"{twice.replace(str(root), '<landing>')}; "
        f"after removing the CSV requested {_ranges(fixed)}",
        bad_input=True,
        clear_error=True,
    )


def test_the_sensor_takes_an_empty_day_once_declared(landing_settings, instance, record):
    """The marker changes the verdict of an unchanged file: the next tick judges it again."""
    root = landing_settings.landing_root
    day = date(2013, 6, 24)
    land_days(day, 1, root, echo=lambda _: None)
    empty = _csv(_day("weather", day).iloc[:0])
    (root / "weather" / f"{day}.parquet").unlink()
    (root / "weather" / f"{day}.csv").write_bytes(empty)
    defs = build_definitions(landing_settings)
    refused = _tick(defs, instance)
    assert not refused.run_requests
    marker = LandingSource(root=str(root)).empty_marker("weather", day)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    accepted = _tick(defs, instance, refused.cursor)
    assert _ranges(accepted) == [(str(day), str(day))]
    shutil.rmtree(marker.parent)
    record(
        fault="landing sensor: an empty day declared after it was refused",
        expected="refused, then requested on the tick after the marker appears",
        observed=f"first tick: {refused.skip_reason.skip_message.replace(str(root), '<landing>')[:200]}; "
        f"then requested {_ranges(accepted)}",
    )
