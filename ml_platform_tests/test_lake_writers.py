"""What only a lake allows: writers in several processes at once, which must neither duplicate a
day nor lose one, and a writer killed mid-commit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pandas as pd
import pytest
from pandas.testing import assert_frame_equal

from ml_platform.resources.warehouse_engines import COMMIT_ATTEMPTS
from ml_platform_tests.lake_support import (
    D2,
    TABLE,
    Where,
    lake_catalog,
    readings,
    stored,
    write,
)

# --- several writers of one lake at once ---------------------------------------------------------

# One writer process: materializes one day of scratch.readings through the IO manager, once the
# test says "go" (so that all writers start together). It holds its transaction open for a moment
# before the commit, so that writers without the day locks would overlap.
WRITER = textwrap.dedent(
    """
    import json, sys, time
    import pandas as pd
    from dagster import AssetKey, DailyPartitionsDefinition, DagsterInstance, asset, materialize
    from ml_platform import faults
    from ml_platform.resources.warehouse import WarehouseIOManager

    database, data_path, day, values, tag = sys.argv[1:6]
    reach = faults.reach
    faults.reach = lambda point: (time.sleep(0.3), reach(point))
    frame = pd.DataFrame({"reading_date": pd.to_datetime([day] * int(values)),
                          "value": pd.array(range(int(values)), dtype="Int64"),
                          "label": pd.array([tag] * int(values), dtype="string")})

    @asset(key=AssetKey(["scratch", "readings"]),
           partitions_def=DailyPartitionsDefinition(start_date="2013-01-01", end_date="2013-02-01"),
           metadata={"partition_expr": "reading_date"})
    def readings() -> pd.DataFrame:
        return frame

    print("ready", flush=True)
    sys.stdin.readline()
    result = materialize([readings], partition_key=day, instance=DagsterInstance.ephemeral(),
                         resources={"io_manager": WarehouseIOManager(database=database, data_path=data_path)},
                         raise_on_error=False)
    (event,) = result.get_asset_materialization_events() or [None]
    attempts = event.materialization.metadata["warehouse_commit_attempts"].value if event else None
    print(json.dumps({"success": result.success, "attempts": attempts}), flush=True)
    """
)


def writers(lake: Where, jobs: list[tuple[str, int, str]], env: dict | None = None) -> list[dict | int]:
    """Run one writer process per (day, rows, tag), all released at once; each one's result (or
    its exit status when it died)."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, lake.database, lake.data_path, day, str(n), tag],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        for day, n, tag in jobs
    ]
    try:
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        for proc in procs:
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            code = proc.returncode
            results.append(json.loads(out.strip().splitlines()[-1]) if code == 0 else code)
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


@pytest.fixture
def lake(tmp_path) -> Iterator[Where]:
    """A lake whose scratch table holds 100 rows on each of 2013-01-01..04."""
    with lake_catalog(tmp_path) as lake:
        with lake.warehouse().connection() as conn:
            conn.execute("create schema scratch")
            conn.execute(
                f"create table {TABLE} (reading_date DATE NOT NULL, value BIGINT NOT NULL, label VARCHAR)"
            )
            conn.execute(
                f"insert into {TABLE} select date '2013-01-01' + (range // 100)::int, range % 100, 'seed'"  # noqa: S608
                " from range(400)"
            )
        yield lake


def counts(lake: Where) -> dict[str, tuple[int, int, str]]:
    """Per day: rows, distinct values, and the tags (one writer's tag when the day is whole)."""
    with lake.warehouse().connection(read_only=True) as conn:
        rows = conn.execute(
            f"select strftime(reading_date, '%Y-%m-%d'), count(*), count(distinct value),"  # noqa: S608
            f" string_agg(distinct label, ',') from {TABLE} group by 1 order by 1"
        ).fetchall()
    return {day: (n, distinct, tags) for day, n, distinct, tags in rows}


def test_two_writers_of_the_same_new_day_leave_exactly_one_days_rows(lake):
    """Without the day lock both would commit (DuckLake sees no conflict between two inserts into
    a day that has no rows yet) and the day would hold both frames."""
    day = "2013-01-09"
    results = writers(lake, [(day, 200, "a"), (day, 200, "b")])
    assert [r["success"] for r in results] == [True, True]
    after = counts(lake)
    n, distinct, tags = after.pop(day)
    assert (n, distinct) == (200, 200) and tags in ("a", "b")
    assert after == {d: (100, 100, "seed") for d in ("2013-01-01", "2013-01-02", "2013-01-03", "2013-01-04")}


def test_four_writers_of_different_days_all_commit_exactly(lake):
    days = ["2013-01-01", "2013-01-02", "2013-01-03", "2013-01-04"]
    results = writers(lake, [(day, 50 + i, f"w{i}") for i, day in enumerate(days)])
    # Seeded days conflict at commit (a delete and inserts in one table); the losers are rerun.
    assert [r["success"] for r in results] == [True] * 4
    attempts = [r["attempts"] for r in results]
    print("commit attempts per writer:", attempts)
    assert all(isinstance(n, int) and 1 <= n <= COMMIT_ATTEMPTS for n in attempts)
    assert counts(lake) == {day: (50 + i, 50 + i, f"w{i}") for i, day in enumerate(days)}


def test_a_writer_killed_before_its_commit_leaves_the_previous_rows(lake, instance):
    before = stored(lake)
    (status,) = writers(
        lake, [("2013-01-02", 7, "killed")], env={"ML_PLATFORM_KILL_AT": "warehouse.before_commit"}
    )
    assert status == -9
    assert_frame_equal(stored(lake), before)
    # The catalog is readable and writable, and the killed writer's day lock died with it.
    assert write(lake, instance, readings(D2, [1, 2, 3], ["next"] * 3), partition="2013-01-02").success
    assert counts(lake)["2013-01-02"] == (3, 3, "next")
    kept = stored(lake).query("label != 'next'").reset_index(drop=True)
    assert_frame_equal(kept, before[before["reading_date"] != pd.Timestamp(D2)].reset_index(drop=True))
