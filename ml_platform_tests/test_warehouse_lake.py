"""The warehouse IO manager and the feature publish on both engines (the DuckDB file and a
DuckLake over a throwaway PostgreSQL catalog: conftest's ``where`` and ``seeded``), with the same
assertions; the lake settings; and what is rerun on a lake (test_lake_writers.py: several writer
processes at once; test_warehouse.py: failed writes on both engines)."""

from __future__ import annotations

import pandas as pd
import pytest

from ml_platform.config import SettingsError, load_settings
from ml_platform.resources.warehouse import WarehouseError, WriteScope
from ml_platform.resources.warehouse_engines import DuckLake, engine_for, redact
from ml_platform_tests.lake_support import (
    D1,
    D2,
    D3,
    TABLE,
    by_day,
    lake_catalog,
    readings,
    write,
)

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
    # The same frame twice: nothing is duplicated.
    assert write(seeded, instance, readings(D1, [7]), partition="2013-01-01").success
    assert by_day(seeded) == {D1: [7], D2: [10, 20]}

    frame = pd.concat([readings(D2, [21]), readings(D3, [30, 31])], ignore_index=True)
    assert write(seeded, instance, frame, partition="2013-01-02", last="2013-01-03").success
    assert by_day(seeded) == {D1: [7], D2: [21], D3: [30, 31]}

    assert write(seeded, instance, readings(D2, []), partition="2013-01-02").success
    assert by_day(seeded) == {D1: [7], D3: [30, 31]}


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
