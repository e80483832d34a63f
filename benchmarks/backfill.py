"""Year backfill of raw data and features: one single run, or one run per partition (sampled)."""

from __future__ import annotations

import time
from contextlib import ExitStack
from datetime import date, timedelta
from pathlib import Path

from benchmarks import support


def single_run(
    work: Path,
    storage: str = "sqlite",
    start: str = "2013-01-01",
    end: str = "2013-12-31",
    repeats: int = 1,
    engine: str = "file",
) -> dict:
    """Raw + features for [start, end] (inclusive) as one single-run backfill, ``repeats`` times in
    this process, each on a new instance and an empty warehouse, each after a warm-up.

    The reference tables (unpartitioned) get a run of their own first, as the platform's jobs
    do: selected into a ranged run, each would get a planned event per partition of the range.
    Both runs are timed; ``reference_seconds`` is the first. The last repeat's warehouse stays."""
    picked = support.selections()
    runs = []
    for i in range(repeats):
        with ExitStack() as stack:
            if engine == "lake":
                stack.enter_context(support.new_lake(work / f"lake-{i + 1}"))
            else:
                support.empty_warehouse()
            runs.append(_single(work / f"dagster_home-{i + 1}", storage, picked, start, end, engine))
    return {"runs": runs}


def _single(home: Path, storage: str, picked: dict, start: str, end: str, engine: str) -> dict:
    support.warm_up()
    with support.instance(home, storage) as inst:
        with support.PeakMemory() as peak:
            started, cpu = time.perf_counter(), support.cpu_seconds()
            assert support.materialize(inst, picked["references"]).success, "reference run failed"
            reference_seconds = time.perf_counter() - started
            result = support.materialize(inst, picked["daily_and_features"], start=start, end=end)
            seconds, cpu = time.perf_counter() - started, support.cpu_seconds() - cpu
            assert result.success, "backfill run failed"
        events = support.run_events(inst, result.run_id)
    return {
        "peak_rss_mb": peak.mb,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "reference_seconds": reference_seconds,
        "storage": storage,
        "engine": engine,
        "start": start,
        "end": end,
        **events,
    }


def sample_days(start: date, end: date, count: int) -> list[date]:
    """``count`` days spread evenly over [start, end]: every season, weekday and month end."""
    span = (end - start).days + 1
    return [start + timedelta(days=(i * span) // count) for i in range(count)]


def per_partition(
    work: Path, storage: str = "sqlite", count: int = 30, start: str = "2013-01-01", end: str = "2013-12-31"
) -> dict:
    """One run per day for a sample of days, as a per-partition backfill would launch them.

    The reference tables (unpartitioned) are materialized once first and timed apart."""
    days = sample_days(date.fromisoformat(start), date.fromisoformat(end), count)
    picked = support.selections()
    runs = []
    with support.instance(work / "dagster_home", storage) as inst:
        started = time.perf_counter()
        assert support.materialize(inst, picked["references"]).success
        reference_seconds = time.perf_counter() - started
        for day in days:
            support.warm_up()  # each daily run's worker is a fresh fork of a warmed-up server
            started, cpu = time.perf_counter(), support.cpu_seconds()
            result = support.materialize(inst, picked["daily_and_features"], partition_key=day.isoformat())
            seconds, cpu = time.perf_counter() - started, support.cpu_seconds() - cpu
            assert result.success, f"run for {day} failed"
            events = support.run_events(inst, result.run_id)
            runs.append(
                {
                    "day": day.isoformat(),
                    "seconds": seconds,
                    "cpu_seconds": cpu,
                    "events_total": events["events_total"],
                    "materializations": events["materializations"],
                    "step_seconds": events["step_seconds"],
                }
            )
    return {
        "storage": storage,
        "sample_days": len(days),
        "reference_seconds": reference_seconds,
        "runs": runs,
    }
