"""The landing sensor sees what the run will see: a file the run would refuse is reported (log
and skip reason naming it) and its day waits for a corrected file, while the good days around it
are requested as their own ranges; a day delivered in two formats is refused by the sensor too;
an empty day is taken once upstream declares it empty.
"""

from __future__ import annotations

import shutil
from datetime import date, timedelta

import dagster as dg
import pytest

from ml_platform.automation.landing_scan import load_cursor
from ml_platform.definitions import build_definitions
from ml_platform.ingestion.landing import land_days
from ml_platform.ingestion.source import LandingSource, SourceError
from ml_platform_tests.reliability.hostile_deliveries import F, as_csv, day_frame


def _refusal(source: LandingSource, table: str, start: date, end: date) -> str:
    with pytest.raises(SourceError) as err:
        source.read_days(table, start, end)
    return str(err.value)


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
    path.write_bytes(as_csv(day_frame(F, bad).rename(columns={"arr_delay": "arrival_delay"})))
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
    path.write_bytes(as_csv(day_frame(F, day).iloc[:0]))
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
    csv_path.write_bytes(as_csv(day_frame(F, day)))
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
    empty = as_csv(day_frame("weather", day).iloc[:0])
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
