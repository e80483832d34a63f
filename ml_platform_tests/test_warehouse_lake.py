"""The warehouse IO manager on both engines (the DuckDB file and a DuckLake over a throwaway
PostgreSQL catalog), with the same assertions; then what only a lake allows: writers in several
processes at once, which must neither duplicate a day nor lose one, and a writer killed mid-commit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DailyPartitionsDefinition, asset, materialize
from pandas.testing import assert_frame_equal

from ml_platform.config import SettingsError, load_settings
from ml_platform.resources.warehouse import Warehouse, WarehouseError, WarehouseIOManager, WriteScope
from ml_platform.resources.warehouse_engines import COMMIT_ATTEMPTS, DuckLake, engine_for, redact

PARTS = DailyPartitionsDefinition(start_date="2013-01-01", end_date="2013-02-01", timezone="UTC")
D1, D2, D3 = date(2013, 1, 1), date(2013, 1, 2), date(2013, 1, 3)
TABLE = "scratch.readings"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
PG = {
    k: os.environ.get(f"PG{k.upper()}", d)
    for k, d in (("host", "127.0.0.1"), ("port", "5432"), ("user", "postgres"))
}


@dataclass(frozen=True)
class Where:
    """A warehouse: what ``ML_PLATFORM_WAREHOUSE`` and ``ML_PLATFORM_LAKE_DATA_PATH`` would hold."""

    database: str
    data_path: str | None = None

    def warehouse(self) -> Warehouse:
        return Warehouse(path=self.database, data_path=self.data_path)

    def io_manager(self) -> WarehouseIOManager:
        return WarehouseIOManager(database=self.database, data_path=self.data_path)


@contextmanager
def lake_catalog(tmp_path: Path) -> Iterator[Where]:
    """A lake on a new PostgreSQL database (dropped afterwards) and a data directory in tmp_path;
    skips where no PostgreSQL answers."""
    import psycopg2

    server = " ".join(f"{k}={v}" for k, v in PG.items())
    try:
        admin = psycopg2.connect(f"{server} dbname=postgres", connect_timeout=5)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL answers at {server} ({' '.join(str(exc).split())})")
    admin.autocommit = True
    name = f"mlp_lake_{uuid.uuid4().hex[:10]}"
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield Where(f"ducklake:postgres:dbname={name} {server}", str(tmp_path / "lake") + "/")
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture(params=["duckdb", "ducklake"])
def where(request, tmp_path) -> Iterator[Where]:
    """An empty warehouse on each engine."""
    if request.param == "duckdb":
        yield Where(str(tmp_path / "warehouse.duckdb"))
    else:
        with lake_catalog(tmp_path) as lake:
            yield lake


@pytest.fixture
def seeded(where) -> Where:
    """The warehouse with an empty scratch table whose day column is a DATE (constraints: NOT
    NULL only, the one a DuckLake enforces)."""
    with where.warehouse().connection() as conn:
        conn.execute("create schema scratch")
        conn.execute(
            f"create table {TABLE} (reading_date DATE NOT NULL, value BIGINT NOT NULL, label VARCHAR)"
        )
    return where


def readings(day: date, values: list, labels: list[str] | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "reading_date": pd.to_datetime([day] * len(values)),
            "value": pd.array(values, dtype="Int64"),
            "label": pd.array(labels or [f"{day:%d}-{v}" for v in values], dtype="string"),
        }
    )


def stored(where: Where, table: str = TABLE) -> pd.DataFrame:
    with where.warehouse().connection(read_only=True) as conn:
        return conn.execute(f"select * from {table} order by all").fetchdf()  # noqa: S608


def by_day(where: Where) -> dict[date, list[int]]:
    return {
        pd.Timestamp(d).date(): sorted(int(v) for v in group["value"])
        for d, group in stored(where).groupby("reading_date")
    }


def write(where: Where, instance, frame, *, partition, last=None):
    @asset(
        key=AssetKey(["scratch", "readings"]),
        partitions_def=PARTS,
        metadata={"partition_expr": "reading_date"},
    )
    def _readings() -> pd.DataFrame:
        return frame

    return materialize(
        [_readings],
        resources={"io_manager": where.io_manager()},
        instance=instance,
        partition_key=None if last else partition,
        tags={RANGE_START: partition, RANGE_END: last} if last else {},
        raise_on_error=False,
    )


def failure_message(result) -> str:
    (failure,) = result.get_step_failure_events()
    error = failure.step_failure_data.error
    return "\n".join(e.message for e in [error, *([error.cause] if error.cause else [])])


# --- the same behaviour on both engines ----------------------------------------------------------


def test_partitions_are_replaced_exactly_on_either_engine(seeded, instance):
    assert write(seeded, instance, readings(D1, [1, 2, 3]), partition="2013-01-01").success
    assert write(seeded, instance, readings(D2, [10, 20]), partition="2013-01-02").success
    again = write(seeded, instance, readings(D1, [7]), partition="2013-01-01")
    assert again.success
    (event,) = again.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["dagster/partition_row_count"].value == 1
    assert metadata["dagster/storage_kind"].value == engine_for(seeded.database, seeded.data_path).name
    assert by_day(seeded) == {D1: [7], D2: [10, 20]}

    frame = pd.concat([readings(D2, [21]), readings(D3, [30, 31])], ignore_index=True)
    assert write(seeded, instance, frame, partition="2013-01-02", last="2013-01-03").success
    assert by_day(seeded) == {D1: [7], D2: [21], D3: [30, 31]}

    assert write(seeded, instance, readings(D2, []), partition="2013-01-02").success
    assert by_day(seeded) == {D1: [7], D3: [30, 31]}


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        pytest.param(readings(D1, [9]).assign(surprise=1), "surprise", id="unknown-column"),
        pytest.param(readings(D1, [9, None]), "NOT NULL", id="constraint-violated-mid-insert"),
        pytest.param(readings(D2, [9]), "outside the partition window", id="rows-of-another-day"),
    ],
)
def test_a_failed_write_leaves_the_partition_as_it_was_on_either_engine(seeded, instance, broken, message):
    assert write(seeded, instance, readings(D1, [1, 2, 3]), partition="2013-01-01").success
    assert write(seeded, instance, readings(D2, [10]), partition="2013-01-02").success
    before = stored(seeded)
    result = write(seeded, instance, broken, partition="2013-01-01")
    assert not result.success
    assert message in failure_message(result)
    assert_frame_equal(stored(seeded), before)


def test_a_new_table_gets_a_date_day_column_on_either_engine(where, instance):
    frame = pd.concat([readings(D1, [1]), readings(D2, [2, 3])], ignore_index=True)
    assert write(where, instance, frame, partition="2013-01-01", last="2013-01-02").success
    assert write(where, instance, readings(D3, [4]), partition="2013-01-03").success
    with where.warehouse().connection(read_only=True) as conn:
        types = dict(
            conn.execute(
                "select column_name, data_type from information_schema.columns"
                " where table_catalog = current_database() and table_name = 'readings'"
            ).fetchall()
        )
    assert types["reading_date"] == "DATE"
    assert by_day(where) == {D1: [1], D2: [2, 3], D3: [4]}


# --- settings ------------------------------------------------------------------------------------


def test_a_lake_setting_is_validated_and_its_password_never_shown(monkeypatch, tmp_path):
    monkeypatch.setenv("ML_PLATFORM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ML_PLATFORM_WAREHOUSE", "ducklake:postgres:dbname=lake host=db password=s3cret")
    monkeypatch.delenv("ML_PLATFORM_LAKE_DATA_PATH", raising=False)
    with pytest.raises(SettingsError, match="ML_PLATFORM_LAKE_DATA_PATH") as refused:
        load_settings()
    assert "s3cret" not in str(refused.value)
    monkeypatch.setenv("ML_PLATFORM_WAREHOUSE", "ducklake:sqlite:password=s3cret")
    with pytest.raises(SettingsError, match="ML_PLATFORM_WAREHOUSE") as refused:
        load_settings()
    assert "s3cret" not in str(refused.value)
    monkeypatch.setenv("ML_PLATFORM_WAREHOUSE", "ducklake:postgres:dbname=lake host=db password=s3cret")
    monkeypatch.setenv("ML_PLATFORM_LAKE_DATA_PATH", str(tmp_path / "lake"))
    settings = load_settings()
    assert settings.warehouse_is_lake and settings.lake_data_path == f"{tmp_path / 'lake'}/"
    with pytest.raises(SettingsError, match="is a lake"):
        settings.warehouse_path  # noqa: B018
    lake = engine_for(settings.warehouse, settings.lake_data_path)
    assert isinstance(lake, DuckLake) and "s3cret" not in lake.describe()
    assert redact("dbname=x password='a b' user=y") == "dbname=x password=*** user=y"
    monkeypatch.delenv("ML_PLATFORM_WAREHOUSE")
    monkeypatch.delenv("ML_PLATFORM_LAKE_DATA_PATH")
    assert load_settings().warehouse == str((tmp_path / "warehouse.duckdb").resolve())


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


# --- the publish of a staged window, and what is rerun ---------------------------------------------


def test_a_staged_window_is_published_on_either_engine(where):
    from ml_platform.features.publish import Publication, publish

    warehouse = where.warehouse()
    with warehouse.connection() as conn:
        conn.execute("create schema stage")
        conn.execute("create table stage.t (day DATE NOT NULL, n BIGINT)")
        conn.execute(
            "insert into stage.t values (date '2013-01-01', 1), (date '2013-01-02', 2),"
            " (date '2013-01-02', 3)"
        )
    pub = Publication("stage", "pub", "t", "day")
    assert publish(warehouse, pub, D1, D3) == {"2013-01-01": 1, "2013-01-02": 2}
    with warehouse.connection() as conn:
        conn.execute("insert into stage.t values (date '2013-01-02', 9)")
    assert publish(warehouse, pub, D2, D3) == {"2013-01-02": 1}
    with warehouse.connection(read_only=True) as conn:
        assert conn.execute("select * from pub.t order by all").fetchall() == [(D1, 1), (D2, 9)]
        assert conn.execute("select count(*) from stage.t").fetchall() == [(0,)]


def test_only_a_commit_conflict_is_rerun(tmp_path):
    import duckdb

    with lake_catalog(tmp_path) as lake:
        warehouse = lake.warehouse()
        calls: list[int] = []

        def conflicting_once(conn):
            calls.append(1)
            conn.execute("create table if not exists t (n BIGINT)")
            if len(calls) == 1:
                raise duckdb.TransactionException(
                    "Failed to commit DuckLake transaction: Transaction conflict"
                )
            conn.execute("insert into t values (1)")
            return len(calls)

        assert warehouse.write(WriteScope("main.t"), conflicting_once) == 2
        with warehouse.connection(read_only=True) as conn:
            assert conn.execute("select * from t").fetchall() == [(1,)]

        def failing(conn):
            calls.append(1)
            raise duckdb.TransactionException("something else")

        calls.clear()
        with pytest.raises(duckdb.TransactionException, match="something else"):
            warehouse.write(WriteScope("main.t"), failing)
        assert len(calls) == 1


def test_a_day_locked_by_another_writer_is_waited_for_then_refused(tmp_path):
    with lake_catalog(tmp_path) as where:
        lake = engine_for(where.database, where.data_path)
        lake.lock_timeout = 0.3
        # Each locked() block is its own PostgreSQL session: the outer one is the other writer.
        with lake.locked(WriteScope(TABLE, (D2,))):
            with pytest.raises(WarehouseError, match=f"{TABLE} 2013-01-02: another writer held its lock"):
                with lake.locked(WriteScope(TABLE, (D1, D2))):
                    pass
            with lake.locked(WriteScope(TABLE, (D1, D3))):
                pass  # other days are free
        with lake.locked(WriteScope(TABLE, (D2,))):
            pass  # freed when the block ended
