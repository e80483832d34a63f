"""Bad landing files, each delivered for its own day next to a good weather file, and taken both
ways a file travels: the landing sensor's tick (which validates new files before requesting a
run) and a run of the raw assets for that day (which is what a manual or scheduled run does).

Each gives a clear error or failed blocking check naming the file and the problem; the day's
features are not built; the day ingested before is untouched; and once good files replace the
bad ones, the sensor requests those days and they ingest.

Unit-level refusals of ``LandingSource`` live in ``test_landing.py``; this is the end-to-end view.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from unittest import mock

import dagster as dg
import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

import ml_platform.ingestion.delivery as delivery_module
from ml_platform.automation.landing_scan import load_cursor
from ml_platform.definitions import build_definitions
from ml_platform.features.assets import MODEL_CODE_VERSIONS
from ml_platform.ingestion.assets import raw_reference_assets
from ml_platform.ingestion.landing import land_days
from ml_platform.ingestion.source import LandingSource, SourceError, write_frame_atomically
from ml_platform.keys import FLIGHT_FEATURES, RAW_DAILY
from ml_platform.resources import build_resources
from ml_platform_tests.ml_support import all_definitions
from ml_platform_tests.reliability.bad_deliveries import CASES, Case, deliver_weather, good_frame
from ml_platform_tests.reliability.support import partition, platform, scalar

BASE = date(2013, 2, 1)  # ingested before any bad file arrives
FEATURES = FLIGHT_FEATURES
RAW = list(RAW_DAILY)
INGEST = [*RAW, *MODEL_CODE_VERSIONS]


@dataclass
class World:
    env: object
    settings: object
    instance: dg.DagsterInstance
    defs: dg.Definitions
    cursor: str | None
    baseline: dict[str, pd.DataFrame]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-files")
    with platform(root, "landing") as (env, settings, instance):
        land_days(BASE, 1, env.landing, echo=lambda _: None)
        resources = build_resources(settings)
        assert dg.materialize(raw_reference_assets, resources=resources, instance=instance).success
        defs = build_definitions(settings)
        first, _ = tick(defs, instance, None)
        assert [
            r.partition_key or r.tags["dagster/asset_partition_range_start"] for r in first.run_requests
        ] == [BASE.isoformat()]
        assert ingest(instance, settings, BASE).success
        baseline = {
            "raw": partition(env.warehouse, "raw.flights", "flight_date", BASE.isoformat()),
            "features": partition(env.warehouse, "features.flight_features", "flight_date", BASE.isoformat()),
        }
        yield World(env, settings, instance, defs, first.cursor, baseline)


def tick(defs, instance, cursor):
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
    ) as context:
        return defs.get_sensor_def("landing_sensor")(context), context


def ingest(instance, settings, day: date, raise_on_error: bool = True):
    return dg.materialize(
        all_definitions(settings),
        selection=INGEST,
        resources=build_resources(settings),
        instance=instance,
        partition_key=day.isoformat(),
        raise_on_error=raise_on_error,
    )


def _clear(message: str, path: Path, case: Case) -> bool:
    return str(path.name) in message and all(p in message for p in case.problem)


def _run_error(result) -> str:
    messages = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            messages.append(error.message)
            error = error.cause
    return "\n".join(messages)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_delivery_is_refused_clearly_and_harms_nothing_else(world, case, record):
    """One bad landing file: sensor and raw run both name the file and the problem."""
    day = BASE + timedelta(days=case.offset)
    root = world.env.landing
    deliver_weather(root, day)
    path = case.deliver(root, day)

    # 1. The landing sensor's tick.
    result, _ = tick(world.defs, world.instance, world.cursor)
    world.cursor = result.cursor
    requested = {r.tags.get("dagster/asset_partition_range_start") for r in result.run_requests or []}
    files = load_cursor(result.cursor)
    state = files.get(f"flights/{path.name}")
    if case.stage in ("read", "absent"):
        assert day.isoformat() not in requested
        assert state is not None and state.status == "rejected", state
        sensor_says = state.problem
        assert _clear(sensor_says, path, case), sensor_says
    else:
        assert requested == {day.isoformat()}, requested
        assert state is not None and state.status == "ok"
        sensor_says = (
            f"requested {day} (unknown column ignored)"
            if case.stage == "warn"
            else f"requested {day} (the file reads; the blocking checks judge its rows)"
        )

    # 2. A run of the day: raw assets and the features built from them.
    run = ingest(world.instance, world.settings, day, raise_on_error=False)
    materialized = {m.asset_key for m in run.get_asset_materialization_events()}
    if case.stage == "warn":
        assert run.success
        warnings = [
            e.message
            for e in world.instance.all_logs(run.run_id)
            if e.level >= 30 and e.user_message and case.problem[0] in e.user_message
        ]
        assert warnings and str(path) in warnings[0], warnings
        stored = partition(world.env.warehouse, "raw.flights", "flight_date", day.isoformat())
        assert "gate_number" not in stored.columns and len(stored) == len(good_frame(day))
        run_says = warnings[0]
        clear = True
    elif case.stage == "check":
        assert not run.success
        evaluation = next(e for e in run.get_asset_check_evaluations() if e.check_name == case.check)
        assert not evaluation.passed
        # Audited before it is written: the day's rows were never stored.
        assert FEATURES not in materialized and RAW[0] not in materialized
        stored = scalar(world.env.warehouse, "select count(*) from raw.flights where flight_date = ?", [day])
        assert stored == 0
        run_says = " ".join(_run_error(run).splitlines()[:2])
        assert f"- {case.check} on {day} ({path})" in run_says, run_says
        assert any(p in run_says for p in case.problem), run_says
        clear = True
    else:
        assert not run.success
        assert FEATURES not in materialized and RAW[0] not in materialized
        run_says = _run_error(run)
        if case.stage == "absent":
            assert f"flights/{day.isoformat()}: no landed file" in run_says, run_says
        else:
            assert _clear(run_says, path, case), run_says
        clear = True

    # 3. Nothing else was touched; the day has no features.
    assert int(
        scalar(
            world.env.warehouse, "select count(*) from features.flight_features where flight_date = ?", [day]
        )
    ) == (len(good_frame(day)) if case.stage == "warn" else 0)
    assert_frame_equal(
        partition(world.env.warehouse, "raw.flights", "flight_date", BASE.isoformat()), world.baseline["raw"]
    )
    assert_frame_equal(
        partition(world.env.warehouse, "features.flight_features", "flight_date", BASE.isoformat()),
        world.baseline["features"],
    )
    record(
        fault=f"landing file: {case.name}",
        expected="clear error naming file and problem; other partitions untouched"
        if case.stage != "warn"
        else "ingested, unknown column ignored with a warning naming file and column",
        observed=f"sensor: {sensor_says} | run: {run_says.splitlines()[0] if run_says else ''}",
        bad_input=True,
        clear_error=clear,
    )


def test_a_file_that_changes_while_being_read_is_refused_then_read_again(world, record):
    """The file is replaced between the two stat calls around the read (deterministically)."""
    day = BASE + timedelta(days=13)
    root = world.env.landing
    deliver_weather(root, day)
    path = root / "flights" / f"{day}.parquet"
    write_frame_atomically(good_frame(day).iloc[:-1], path)  # a first, incomplete version
    real_read = delivery_module.read_file

    def read_then_replace(file, spec=None):
        frame = real_read(file, spec)
        if Path(file) == path:
            # Upstream writes the complete file while we were reading the previous one.
            write_frame_atomically(good_frame(day), path)
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
        return frame

    with mock.patch.object(delivery_module, "read_file", read_then_replace):
        result, _ = tick(world.defs, world.instance, world.cursor)
    state = load_cursor(result.cursor)[f"flights/{path.name}"]
    assert state.status == "rejected" and "changed while it was being read" in state.problem
    assert str(path) in state.problem
    write_frame_atomically(good_frame(day).iloc[:-1], path)
    with mock.patch.object(delivery_module, "read_file", read_then_replace):
        run = ingest(world.instance, world.settings, day, raise_on_error=False)
    run_says = _run_error(run)
    assert not run.success and "changed while it was being read" in run_says and str(path) in run_says
    # The next tick sees a changed file, validates it again and requests the day.
    again, _ = tick(world.defs, world.instance, result.cursor)
    world.cursor = again.cursor
    assert {r.tags.get("dagster/asset_partition_range_start") for r in again.run_requests or []} == {
        day.isoformat()
    }
    record(
        fault="landing file replaced while being read (between the size/mtime checks around the read)",
        expected="refused naming the file; the next sensor tick reads it again and requests the day",
        observed=f"sensor: {state.problem} | run: {run_says.splitlines()[0]} | next tick requested {day}",
        bad_input=True,
        clear_error=True,
    )


def test_good_files_replacing_the_bad_ones_go_through(world, record):
    """After the bad deliveries, upstream re-delivers good files: they are requested and ingest."""
    days = [BASE + timedelta(days=c.offset) for c in CASES]
    root = world.env.landing
    for folder in ("flights", "weather"):
        for path in (root / folder).iterdir():
            if path.name != f"{BASE}.parquet":
                path.unlink()
    land_days(days[0], len(days), root, reference=False, echo=lambda _: None)
    result, _ = tick(world.defs, world.instance, world.cursor)
    ranges = [
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in result.run_requests
    ]
    assert ranges == [(days[0].isoformat(), days[-1].isoformat())], ranges
    run = dg.materialize(
        all_definitions(world.settings),
        selection=INGEST,
        resources=build_resources(world.settings),
        instance=world.instance,
        tags=result.run_requests[0].tags,
    )
    assert run.success
    counts = world.env.warehouse
    expected = sum(len(good_frame(d)) for d in days)
    stored = int(
        scalar(
            counts,
            "select count(*) from features.flight_features where flight_date between ? and ?",
            [days[0], days[-1]],
        )
    )
    assert stored == expected
    assert LandingSource(root=str(root)).available_days("flights")[-1] == days[-1]
    with pytest.raises(SourceError, match="outside the landing root"):
        LandingSource(root=str(root)).resolve("flights/../../outside/x.parquet")
    record(
        fault="good files re-delivered after every bad one",
        expected="the sensor requests the days again and they ingest completely",
        observed=f"one range request {ranges[0][0]}..{ranges[0][1]}; {stored} feature rows "
        f"(expected {expected})",
    )
