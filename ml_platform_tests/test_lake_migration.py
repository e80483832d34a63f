"""``ml-platform migrate-warehouse``: a warehouse file the platform built (raw tables, features and
predictions of two days) copied into a DuckLake over a throwaway PostgreSQL catalog; verified,
re-verified after the lake was damaged, rerun, and refused on bad arguments."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import hypothesis
import numpy as np
import pandas as pd
import pytest
from dagster import asset, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from hypothesis import HealthCheck
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal
from sklearn.dummy import DummyClassifier

from ml_platform.cli import main
from ml_platform.keys import PREDICTIONS
from ml_platform.ml.frames import DAY, feature_frame
from ml_platform.ml.training import score
from ml_platform.resources.lake_migration import (
    SOURCE,
    Column,
    MigrationError,
    Table,
    check_source,
    check_target,
    digests,
    migrate,
    open_both,
)
from ml_platform.resources.warehouse import WarehouseIOManager, transaction
from ml_platform_tests.conftest import local_platform
from ml_platform_tests.lake_support import PARTS, lake_catalog
from ml_platform_tests.ml_support import materialize_features

FIRST, LAST = "2013-01-01", "2013-01-02"


@pytest.fixture(scope="module")
def platform_file(tmp_path_factory) -> Path:
    """A warehouse file the platform wrote: raw and features of two days (its dbt audit views
    too), and predictions scored by a real (constant) classifier through the warehouse IO manager."""
    root = tmp_path_factory.mktemp("platform")
    with local_platform(root) as (settings, _, instance):
        assert materialize_features(settings, instance, FIRST, LAST).success
        with duckdb.connect(settings.warehouse, read_only=True) as conn:
            features = conn.execute("select * from features.flight_features").fetchdf()
        x = feature_frame(features)
        model = DummyClassifier(strategy="stratified", random_state=0).fit(x, np.arange(len(x)) % 2)

        @asset(key=PREDICTIONS, partitions_def=PARTS, metadata={"partition_expr": DAY})
        def predictions() -> pd.DataFrame:
            return score(model, features, 0.5, "3", "flight_delay")

        result = materialize(
            [predictions],
            resources={"io_manager": WarehouseIOManager(database=settings.warehouse)},
            instance=instance,
            tags={ASSET_PARTITION_RANGE_START_TAG: FIRST, ASSET_PARTITION_RANGE_END_TAG: LAST},
        )
        assert result.success
        return Path(settings.warehouse)


@pytest.fixture
def lake(tmp_path):
    with lake_catalog(tmp_path) as where:
        yield check_target(where.database, where.data_path)


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """``ml-platform migrate-warehouse ARGS`` in process: (exit code, stdout, stderr)."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("ML_PLATFORM_ENV", "local")

    def run(*args: str) -> tuple[int, str, str]:
        code = main(["migrate-warehouse", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def rows(conn, table: str, catalog: str) -> pd.DataFrame:
    return conn.execute(f"select * from {catalog}.{table} order by all").fetchdf()  # noqa: S608


def digest_of_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_platform_warehouse_is_copied_whole_and_verified_per_table_and_day(platform_file, lake, cli):
    before = digest_of_file(platform_file)
    # The catalog trusts this machine, so a password is accepted and unused: it must not show.
    to = f"{lake.url} password=not-for-eyes"
    code, out, err = cli("--from", str(platform_file), "--to", to, "--data-path", lake.data_path)
    assert (code, err) == (0, "")
    assert "every table and day matches" in out
    assert "not-for-eyes" not in out and "password=***" in out
    assert digest_of_file(platform_file) == before

    report = migrate(platform_file, lake, verify_only=True)
    assert report.failures == []
    tables = {c.table for c in report.checks}
    assert {
        "raw.flights",
        "raw.weather",
        "raw.planes",
        "features.flight_features",
        "serving.predictions",
    } <= tables
    days = {(c.table, str(c.day)) for c in report.checks if c.day}
    for table in ("raw.flights", "raw.weather", "features.flight_features", "serving.predictions"):
        assert {(table, FIRST), (table, LAST)} <= days
    conn = open_both(platform_file, lake)
    try:
        for table in sorted(tables):
            source = rows(conn, table, SOURCE)
            assert len(source) > 0 or table.startswith("features_staging"), table
            assert_frame_equal(rows(conn, table, "lake"), source, check_dtype=True, obj=table)
    finally:
        conn.close()
    assert report.views_skipped  # dbt's audit views stay behind, and the report says so
    assert "views not copied" in out


def test_a_row_deleted_or_changed_in_the_lake_is_named_by_table_and_day(platform_file, lake, cli):
    migrate(platform_file, lake)
    conn = lake.connect()
    try:
        flight_rows = conn.execute(
            "select count(*) from raw.flights where flight_date = ?", [LAST]
        ).fetchone()[0]
        (victim,) = conn.execute(
            "select flight_id from features.flight_features where flight_date = ? order by flight_id limit 1",
            [LAST],
        ).fetchone()
        key = "concat_ws('-', carrier, flight, origin, sched_dep_time)"  # one flight of the day
        conn.execute(
            f"delete from raw.flights where flight_date = ? and {key} ="  # noqa: S608
            f" (select min({key}) from raw.flights where flight_date = ?)",
            [LAST, LAST],
        )
        conn.execute(
            "update features.flight_features set distance = distance + 1 where flight_id = ?", [victim]
        )
        conn.execute("alter table raw.airlines add column alliance VARCHAR")
    finally:
        conn.close()

    code, out, err = cli(
        "--from", str(platform_file), "--to", lake.url, "--data-path", lake.data_path, "--verify-only"
    )
    assert code == 1
    assert (
        f"MISMATCH raw.flights {LAST}: {flight_rows} row(s) in the file, {flight_rows - 1} in the lake" in err
    )
    assert f"MISMATCH features.flight_features {LAST}: same row count, different rows" in err
    assert "MISMATCH raw.airlines: columns differ" in err and "('alliance', 'VARCHAR')" in err
    assert f"raw.flights {FIRST}" not in err and "raw.weather" not in err
    assert "2 days" in out and "MISMATCH" in out


def test_a_rerun_refuses_or_replaces_and_never_duplicates(platform_file, lake):
    empty = migrate(platform_file, lake, verify_only=True)
    assert empty.failures == empty.checks and {c.note for c in empty.checks} == {"missing in the lake"}
    first = migrate(platform_file, lake)
    counts = {c.table: c.target_rows for c in first.checks if c.day is None}
    with pytest.raises(MigrationError, match=r"already holds .*raw\.flights.*--replace"):
        migrate(platform_file, lake)
    again = migrate(platform_file, lake, replace=True)
    assert again.failures == []
    assert {c.table: c.target_rows for c in again.checks if c.day is None} == counts


def test_types_a_lake_cannot_store_are_refused_before_anything_is_written(tmp_path, lake):
    path = tmp_path / "typed.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("create schema odd")
        conn.execute("create type mood as enum ('calm', 'late')")
        conn.execute("create table odd.fine (n BIGINT)")
        conn.execute("create table odd.moods (feeling mood, trio INTEGER[3])")
        conn.execute("insert into odd.moods values ('late', [1, 2, 3])")
    empty, spaced = tmp_path / "empty.duckdb", tmp_path / "spaced.duckdb"
    duckdb.connect(str(empty)).close()
    with pytest.raises(MigrationError, match="empty.duckdb: the file holds no tables"):
        migrate(check_source(empty), lake)
    with duckdb.connect(str(spaced)) as conn:
        conn.execute('create table "two words" ("a-b" INTEGER, fine INTEGER)')
    with pytest.raises(MigrationError) as refused:
        migrate(check_source(spaced), lake)
    assert "'a-b' (in main.two words), 'two words' (in main.two words)" in str(refused.value)
    with pytest.raises(MigrationError) as refused:
        migrate(check_source(path), lake)
    assert "odd.moods.feeling (ENUM" in str(refused.value)
    assert "odd.moods.trio (INTEGER[3])" in str(refused.value)
    conn = lake.connect()
    try:
        assert (
            conn.execute("select count(*) from duckdb_tables() where database_name = 'lake'").fetchone()[0]
            == 0
        )
    finally:
        conn.close()


def test_a_file_a_writer_holds_is_refused_by_name(tmp_path, lake):
    """A running platform holds the file's write lock: the copy waits for no one and says so."""
    path = tmp_path / "busy.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(
            MigrationError, match=r"--from .*busy\.duckdb: cannot open it read-only.*stop the"
        ):
            migrate(check_source(path), lake)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)


HOLD_WRITE_LOCK = """
import sys, duckdb
conn = duckdb.connect(sys.argv[1])
conn.execute("create table t (n BIGINT)")
print("holding", flush=True)
sys.stdin.read()
"""


def test_bad_arguments_are_refused_by_name_and_no_password_is_shown(tmp_path, cli, monkeypatch):
    lake_url = "ducklake:postgres:dbname=mlp_absent host=127.0.0.1 user=postgres password=s3cret"
    text = tmp_path / "notes.duckdb"
    text.write_text("not a database, despite the name\n")
    data = str(tmp_path / "lake")
    monkeypatch.delenv("ML_PLATFORM_LAKE_DATA_PATH", raising=False)
    valid = tmp_path / "valid.duckdb"
    duckdb.connect(str(valid)).close()  # a DuckDB file without tables
    cases = {
        ("--from", str(tmp_path / "missing.duckdb"), "--to", lake_url, "--data-path", data): "--from",
        ("--from", str(text), "--to", lake_url, "--data-path", data): "not a DuckDB database file",
        ("--from", lake_url, "--to", lake_url, "--data-path", data): "not a lake",
        ("--from", str(valid), "--to", str(tmp_path / "w.duckdb"), "--data-path", data): "--to",
        ("--from", str(valid), "--to", "ducklake:sqlite:x.db", "--data-path", data): "--to",
        ("--to", lake_url): "--data-path",
    }
    for args, named in cases.items():
        code, out, err = cli(*args)
        assert code == 2, args
        assert named in err, (args, err)
        assert "s3cret" not in out + err
    code, out, err = cli("--from", str(valid), "--to", lake_url, "--data-path", data)
    assert code == 2 and "cannot open warehouse ducklake:postgres:" in err and "password=***" in err
    assert "s3cret" not in out + err
    monkeypatch.setenv("ML_PLATFORM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ML_PLATFORM_WAREHOUSE", str(tmp_path / "absent.duckdb"))
    code, _, err = cli("--to", lake_url, "--data-path", data)
    assert code == 2 and "ML_PLATFORM_WAREHOUSE" in err and "absent.duckdb: no such file" in err
    monkeypatch.setenv("ML_PLATFORM_WAREHOUSE", lake_url)
    code, out, err = cli("--to", lake_url, "--data-path", data)
    assert code == 2 and "already a lake: name the DuckDB file with --from" in err
    assert "s3cret" not in out + err


# --- the digest: equal on both sides exactly when the row multisets are equal ---------------------

COLUMNS = (
    Column("s1", "VARCHAR", True),
    Column("s2", "VARCHAR", True),
    Column("n", "BIGINT", True),
    Column("x", "DOUBLE", True),
    Column("b", "BOOLEAN", True),
    Column("d", "DATE", True),
    Column("ts", "TIMESTAMP WITH TIME ZONE", True),
)
SAMPLE = Table("sample", "rows", COLUMNS, "d")
# Few distinct values, so duplicates and near-duplicates are frequent.
VALUES = st.tuples(
    st.sampled_from([None, "", "a", "b", "EWR"]),
    st.sampled_from([None, "", "a", "b"]),
    st.sampled_from([None, 0, 1, -1, 2**62]),
    st.sampled_from([None, 0.0, -0.0, 0.1, 1e300, -2.5]),
    st.sampled_from([None, True, False]),
    st.sampled_from([None, date(2013, 1, 1), date(2013, 1, 2)]),
    st.sampled_from(
        [None, datetime(2013, 1, 1, 5, tzinfo=UTC), datetime(2013, 1, 1, 5, 0, 0, 1, tzinfo=UTC)]
    ),
)


@st.composite
def table_pairs(draw):
    """Rows of a table (with duplicates) and of its copy: the same multiset reordered, or one row
    lost or doubled, or every copy of one row replaced by another row (which may by chance give
    the same multiset again)."""
    rows = draw(st.lists(VALUES, max_size=5))
    if rows:
        rows += draw(st.lists(st.sampled_from(rows), max_size=3))
    copy = draw(st.permutations(rows))
    change = draw(st.sampled_from(["none", "drop", "double", "replace"]))
    if rows and change != "none":
        at = draw(st.integers(0, len(copy) - 1))
        if change == "drop":
            copy = copy[:at] + copy[at + 1 :]
        elif change == "double":
            copy = [*copy, copy[at]]
        else:
            other = draw(VALUES)
            copy = [other if row == copy[at] else row for row in copy]
    return rows, copy


@pytest.fixture
def both_sides(tmp_path, lake):
    """One connection with a writable DuckDB file (as the migration's source) and the lake."""
    conn = lake.connect()
    conn.execute(f"attach '{tmp_path / 'sample.duckdb'}' as {SOURCE}")
    for catalog in (SOURCE, "lake"):
        conn.execute(f"create schema {catalog}.sample")
        conn.execute(
            f"create table {SAMPLE.at(catalog)} ({', '.join(f'{c.name} {c.type}' for c in COLUMNS)})"
        )
    yield conn
    conn.close()


def test_digests_agree_exactly_when_the_row_multisets_agree(both_sides):
    conn = both_sides

    @hypothesis.settings(
        max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @hypothesis.given(table_pairs())
    def check(pair):
        for catalog, rows in zip((SOURCE, "lake"), pair, strict=True):
            with transaction(conn):
                conn.execute(f"delete from {SAMPLE.at(catalog)}")  # noqa: S608
                if rows:
                    conn.executemany(f"insert into {SAMPLE.at(catalog)} values (?, ?, ?, ?, ?, ?, ?)", rows)  # noqa: S608
        source, lake = (digests(conn, catalog, SAMPLE) for catalog in (SOURCE, "lake"))
        same = Counter(pair[0]) == Counter(pair[1])
        assert (source == lake) == same, (pair, source, lake)
        per_day = {
            d: Counter(r for r in pair[0] if r[5] == d) == Counter(r for r in pair[1] if r[5] == d)
            for d in set(source) | set(lake)
        }
        assert all((source.get(d) == lake.get(d)) == agree for d, agree in per_day.items())

    check()
