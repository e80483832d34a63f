"""Property-based fuzzing of the landing reader: generated corrupted deliveries, alone and inside
ranges of days, read by ``LandingSource`` from real files and written to a real DuckDB warehouse
the way a raw run writes its window.

The invariant, for every delivery: either it is stored exactly as a correct reading of it, or it
is refused with a message naming the file; in both cases no other partition changes and a
refused day stays as it was. A range reads exactly as its days read one by one (the same rows,
or the same refusal of the first day at fault). Each delivery is drawn with the verdict it must
get (``landing_fuzz.py``), so a file that cannot be right and is stored fails the test too.

Profiles: deterministic and small by default (``make test``); ``HYPOTHESIS_PROFILE=fuzz`` draws
thousands of deliveries.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pandas as pd
import pytest
from dagster import TimeWindow
from dagster._core.storage.db_io_manager import TablePartitionDimension, TableSlice
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from ml_platform.ingestion.landing import land_days
from ml_platform.ingestion.schemas import DAILY_TABLES
from ml_platform.ingestion.source import EMPTY_DIR, LandingSource, SourceError
from ml_platform.resources.warehouse import AtomicDuckDbClient, AtomicPandasTypeHandler, ident
from ml_platform_tests.reliability.landing_fuzz import DAYS, Delivery, delivery

COMMON = dict(
    deadline=None,
    database=None,
    print_blob=True,
    # Choices come from a drawn seed (landing_fuzz.py): shrinking it finds nothing simpler, only
    # slower; the failing delivery's story is in the assertion message.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("landing", max_examples=100, derandomize=True, **COMMON)
# FUZZ_EXAMPLES shortens or lengthens a fuzz session; by default it draws 5,000 deliveries or more.
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "2300"))
settings.register_profile("fuzz", max_examples=FUZZ_EXAMPLES, **COMMON)
PROFILE = "fuzz" if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else "landing"
FUZZ_DELIVERIES = 5000 if "FUZZ_EXAMPLES" not in os.environ else 0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A landing root with reference tables, and a warehouse holding the clean days."""
    root = tmp_path_factory.mktemp("fuzz-landing")
    landing, database = root / "landing", str(root / "warehouse.duckdb")
    land_days(DAYS[0], len(DAYS), landing, echo=lambda _: None)
    source = LandingSource(root=str(landing))
    for table in DAILY_TABLES:
        batch = source.read_days(table, DAYS[0], DAYS[-1] + timedelta(days=1))
        store_window(database, table, batch.frame, DAYS[0], DAYS[-1] + timedelta(days=1))
    # Held open for the checks' queries (and so that each window's writer, in the same process,
    # finds the database already open rather than opening the file again).
    with duckdb.connect(database) as conn:
        yield SimpleNamespace(landing=landing, database=database, source=source, conn=conn)


def store_window(database: str, table: str, frame: pd.DataFrame, start: date, end: date) -> None:
    """What the IO manager does with a raw run's output: one transaction replacing the window."""
    spec = DAILY_TABLES[table]
    window = TimeWindow(pd.Timestamp(start).to_pydatetime(), pd.Timestamp(end).to_pydatetime())
    table_slice = TableSlice(
        table=table,
        schema="raw",
        partition_dimensions=[TablePartitionDimension(spec.partition_column, window)],
    )
    context = SimpleNamespace(resource_config={"database": database})
    client = AtomicDuckDbClient()
    with client.connect(context, table_slice) as conn:
        client.ensure_schema_exists(context, table_slice, conn)
        client.delete_table_slice(context, table_slice, conn)
        AtomicPandasTypeHandler().handle_output(context, table_slice, frame, conn)


def fingerprints(conn, table: str) -> dict[date, tuple[int, int]]:
    day = ident(DAILY_TABLES[table].partition_column)
    sql = f"select {day}, count(*), sum(hash(t)) from raw.{ident(table)} as t group by 1"  # noqa: S608
    return {d: (n, int(h)) for d, n, h in conn.execute(sql).fetchall()}


def assert_stored(conn, table: str, start: date, end: date, expected: pd.DataFrame, story: str) -> None:
    """The stored window holds exactly ``expected`` (as rows of the declared table: a scratch
    table of the same DDL takes the frame the way the warehouse does)."""
    spec = DAILY_TABLES[table]
    conn.execute(f"create or replace temp table expected ({spec.ddl_columns()})")
    conn.register("incoming_frame", expected)
    conn.execute("insert into expected by name select * from incoming_frame")
    conn.unregister("incoming_frame")
    day = ident(spec.partition_column)
    window = f"select * from raw.{ident(table)} where {day} >= ? and {day} < ?"  # noqa: S608
    sql = (
        f"select count(*) from (({window} except all select * from expected) "  # noqa: S608
        f"union all (select * from expected except all {window}))"
    )
    differing = conn.execute(sql, [start, end, start, end]).fetchone()[0]
    if differing:
        stored = conn.execute(f"{window} order by all", [start, end]).fetchdf()
        wanted = conn.execute("select * from expected order by all").fetchdf()
        assert_frame_equal(stored, wanted, obj=f"stored window\n{story}")
    assert not differing, story


def land(root: Path, d: Delivery) -> list[Path]:
    folder = root / d.table
    for old in folder.glob(f"{d.day.isoformat()}.*"):
        old.unlink()
    marker = root / EMPTY_DIR / d.table / d.day.isoformat()
    marker.unlink(missing_ok=True)
    if d.marker:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    paths = []
    for fmt, content in d.files.items():
        path = folder / f"{d.day.isoformat()}.{fmt}"
        path.write_bytes(content)
        paths.append(path)
    return paths


def read(source: LandingSource, table: str, start: date, end: date):
    try:
        return source.read_days(table, start, end), None
    except SourceError as exc:
        return None, str(exc)


def check_window(world, table: str, deliveries: list[Delivery], stats: Counter) -> None:
    start, end = deliveries[0].day, deliveries[-1].day + timedelta(days=1)
    paths = {d.day: land(world.landing, d) for d in deliveries}
    before = fingerprints(world.conn, table)
    batch, refusal = read(world.source, table, start, end)
    if len(deliveries) == 1:
        alone = [(batch, refusal)]
    elif refusal is not None:  # the day it names, alone
        alone = [
            read(world.source, table, d.day, d.day + timedelta(days=1)) if d.refuse else None
            for d in deliveries
        ]
    else:
        alone = [read(world.source, table, d.day, d.day + timedelta(days=1)) for d in deliveries]
    story = "\n".join(f"{d.day} refuse={d.refuse}: {'; '.join(d.steps)}" for d in deliveries)
    refused = [d for d in deliveries if d.refuse]
    if refusal is not None:
        # Refused naming the first day at fault, exactly as reading that day alone says.
        assert refused, f"a correct delivery was refused: {refusal}\n{story}"
        first = refused[0]
        assert any(refusal.startswith(str(p)) for p in paths[first.day]), f"{refusal}\n{story}"
        assert alone[deliveries.index(first)][1] == refusal, f"{refusal}\n{alone}\n{story}"
        assert fingerprints(world.conn, table) == before
        stats["refused windows"] += 1
        stats["refused deliveries"] += len(refused)
        stats["held back"] += len(deliveries) - len(refused)
        return
    assert not refused, f"stored a delivery that cannot be right\n{story}"
    expected = pd.concat([d.expected for d in deliveries], ignore_index=True)
    assert_frame_equal(batch.frame, expected, check_exact=True, obj=story)
    assert all(r[1] is None for r in alone)
    assert_frame_equal(
        pd.concat([r[0].frame for r in alone], ignore_index=True), batch.frame, check_exact=True
    )
    store_window(world.database, table, batch.frame, start, end)
    assert_stored(world.conn, table, start, end, expected, story)
    after = fingerprints(world.conn, table)
    outside = {d: v for d, v in after.items() if not start <= d < end}
    assert outside == {d: v for d, v in before.items() if not start <= d < end}
    stats["stored windows"] += 1
    stats["stored deliveries"] += len(deliveries)


def test_fuzzed_deliveries_are_stored_exactly_or_refused_naming_the_file(world, record):
    """Generated corrupted deliveries, alone and in ranges: stored exactly, or refused naming the
    file; nothing else changes."""
    stats: Counter = Counter()

    @settings(settings.get_profile(PROFILE))
    @given(st.data())
    def one_window(data):
        table = data.draw(st.sampled_from(sorted(DAILY_TABLES)))
        length = data.draw(st.integers(1, 4))
        first = data.draw(st.integers(0, len(DAYS) - length))
        deliveries = [delivery(data.draw, table, DAYS[first + i]) for i in range(length)]
        stats["windows"] += 1
        stats["deliveries"] += length
        stats["multi-day windows"] += length > 1
        check_window(world, table, deliveries, stats)

    started = time.perf_counter()
    one_window()
    elapsed = time.perf_counter() - started
    if PROFILE == "fuzz":
        assert stats["deliveries"] >= FUZZ_DELIVERIES, stats
    record(
        fault=f"fuzzed landing deliveries (profile {PROFILE}): renamed, dropped, duplicated, reordered and "
        "retyped columns; encodings, delimiters, compression, truncation, empty files; out-of-range and "
        "boundary values; null patterns; duplicated or missing rows; two formats for one day; alone "
        "and in ranges",
        expected="each stored exactly as a correct reading, or refused naming the file; no other "
        "partition changes; a range reads as its days one by one",
        observed=f"{stats['deliveries']} deliveries in {stats['windows']} windows "
        f"({stats['multi-day windows']} multi-day): {stats['stored deliveries']} stored exactly, "
        f"{stats['refused deliveries']} refused naming the file, {stats['held back']} correct ones "
        f"held back with a refused day of their range; other partitions unchanged; {elapsed:.0f}s",
        bad_input=True,
        clear_error=True,
    )
