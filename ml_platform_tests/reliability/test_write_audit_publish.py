"""Write-audit-publish: a window that fails a blocking check is never stored.

A good day is stored first (raw and features); then a bad version of it arrives, for every
blocking check of raw flights and weather and for a blocking dbt test of the features. Each run
fails naming the partition, the file and the check, the red check evaluation is recorded, and
the full content of every stored table is exactly as before (hashes of all rows, not counts).

Bad versions reach the checks through ``Tampered``: the landing reader's own rows, altered
before the checks see them, so each case tests the audit whatever the reader refuses first
(``test_bad_landing_files.py`` covers the files the reader refuses).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta

import dagster as dg
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ml_platform.features.assets import PUBLICATION
from ml_platform.ingestion.assets import raw_reference_assets
from ml_platform.ingestion.landing import land_days
from ml_platform.ingestion.quality import DAILY_CHECKS, evaluate_daily_batch, refusal_report
from ml_platform.ingestion.schemas import DAILY_TABLES
from ml_platform.ingestion.source import LandingSource, PackagedSource, SourceBatch
from ml_platform.keys import FLIGHT_FEATURES, RAW
from ml_platform.resources import build_resources
from ml_platform.resources.warehouse import connect, ident
from ml_platform.versions import FORCE_TAG
from ml_platform_tests.ml_support import dbt_features, raw_daily_assets
from ml_platform_tests.reliability.support import platform, query, scalar

BASE = date(2013, 3, 4)  # stored good before any bad version of it arrives
NEXT = BASE + timedelta(days=1)  # never stored: the ranged case's second day
BLOCKING = [name for name, blocking in DAILY_CHECKS if blocking]
AUDIT_SCHEMAS = (PUBLICATION.staged_schema, "features_audit")


@dataclass(frozen=True)
class Fault:
    """A bad version of one day's rows, and what upstream's own count of that day becomes."""

    says: str
    rows: Callable[[pd.DataFrame], pd.DataFrame]
    count: Callable[[int], int] = lambda n: n


def _absurd(column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def rows(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[[3, 9], column] = 1e9
        return frame

    return rows


def _nulls(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[[2, 5], "year"] = pd.NA
    return frame


def _beyond_the_features_range(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[[1, 4], "distance"] = 7000.0  # raw allows up to 10000 miles, the features 6000
    return frame


FAULTS = {
    "columns_and_types": Fault("hours delivered as floats", lambda f: f.astype({"hour": "float64"})),
    "required_columns_not_null": Fault("year missing in 2 rows", _nulls),
    "key_unique": Fault("every row twice", lambda f: pd.concat([f, f], ignore_index=True), lambda n: 2 * n),
    "values_in_range:flights": Fault("distance of 1e9 miles in 2 rows", _absurd("distance")),
    "values_in_range:weather": Fault("pressure of 1e9 mbar in 2 rows", _absurd("pressure")),
    "row_count_matches_source": Fault("3 rows lost between file and frame", lambda f: f.iloc[:-3]),
    "features_distance": Fault("distance of 7000 miles in 2 rows", _beyond_the_features_range),
}


class Tampered(LandingSource):
    """The landing source, with the rows of ``day`` of each table in ``faults`` replaced by that
    fault's version (``faults``: table -> name in ``FAULTS``)."""

    faults: dict[str, str]
    day: str

    def read_days(self, table: str, start: date, end: date) -> SourceBatch:
        batch = super().read_days(table, start, end)
        if table not in self.faults:
            return batch
        frame, column = batch.frame, DAILY_TABLES[table].partition_column
        mine = frame[column] == pd.Timestamp(self.day)
        bad = FAULTS[self.faults[table]].rows(frame[mine].reset_index(drop=True))
        if not (~mine).any():
            return SourceBatch(bad, batch.origins, batch.warnings)
        return SourceBatch(pd.concat([frame[~mine], bad], ignore_index=True), batch.origins, batch.warnings)

    def row_counts(self, table: str, start: date, end: date) -> dict[date, int]:
        counts = super().row_counts(table, start, end)
        day = date.fromisoformat(self.day)
        if table in self.faults and day in counts:
            counts[day] = FAULTS[self.faults[table]].count(counts[day])
        return counts


@dataclass
class World:
    env: object
    settings: object
    instance: dg.DagsterInstance
    assets: list
    stored: dict[str, tuple]  # the content of every stored table once the good day is in


def content(warehouse) -> dict[str, tuple]:
    """Per stored table (the audit schemas aside): its columns, its row count and the sum of its
    rows' hashes, an order-independent hash of its full content."""
    conn = connect(warehouse, read_only=True, timeout=60)
    try:
        tables = conn.execute(
            "select table_schema, table_name, string_agg(column_name || ' ' || data_type, ', ')"
            " from information_schema.columns group by all"
        ).fetchall()
        out = {}
        for schema, table, columns in tables:
            if schema not in AUDIT_SCHEMAS:
                sql = f"select count(*), sum(hash(t)::hugeint) from {ident(schema)}.{ident(table)} t"  # noqa: S608
                out[f"{schema}.{table}"] = (columns, *conn.execute(sql).fetchone())
        return out
    finally:
        conn.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with platform(tmp_path_factory.mktemp("wap"), "landing") as (env, settings, instance):
        land_days(BASE, 2, env.landing, echo=lambda _: None)
        assets = [*raw_daily_assets(settings), dbt_features(settings)]
        good = dg.materialize(
            [*raw_reference_assets, *assets],
            resources=build_resources(settings),
            instance=instance,
            partition_key=BASE.isoformat(),
        )
        assert good.success
        yield World(env, settings, instance, assets, content(env.warehouse))


def run(world: World, first: date, last: date | None = None, source=None, selection=None, tags=None):
    resources = {**build_resources(world.settings), **({"source": source} if source else {})}
    window = (
        {"partition_key": first.isoformat()}
        if last is None
        else {"tags": {"dagster/asset_partition_range_start": first.isoformat(),
                       "dagster/asset_partition_range_end": last.isoformat()}}
    )  # fmt: skip
    if tags:
        window["tags"] = {**window.get("tags", {}), **tags}
    return dg.materialize(
        world.assets,
        selection=selection,
        resources=resources,
        instance=world.instance,
        raise_on_error=False,
        **window,
    )


def refusal_of(result, step: str) -> dg.Failure:
    """The step's failure, checked to be a ``Failure`` that was not retried."""
    (failure,) = [e for e in result.get_step_failure_events() if e.step_key == step]
    retried = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert retried == []
    data = failure.step_failure_data.user_failure_data
    assert data is not None, failure.step_failure_data.error.message
    return data


def recorded(world: World, key: dg.AssetKey, check: str, result) -> bool:
    """The instance's latest execution of the check is this run's, and it failed."""
    check_key = dg.AssetCheckKey(key, check)
    latest = world.instance.event_log_storage.get_latest_asset_check_execution_by_key([check_key])
    record = latest[check_key]
    return record.run_id == result.run_id and record.status.value == "FAILED"


def fault_for(table: str, check: str) -> str:
    return f"{check}:{table}" if f"{check}:{table}" in FAULTS else check


@pytest.mark.parametrize("check", BLOCKING)
def test_a_window_failing_a_blocking_raw_check_is_never_stored(world, check, record):
    """A bad version of a stored day of raw flights and of raw weather, for each blocking check."""
    faults = {table: fault_for(table, check) for table in DAILY_TABLES}
    result = run(
        world, BASE, source=Tampered(root=str(world.env.landing), faults=faults, day=BASE.isoformat())
    )

    assert not result.success
    materialized = {m.asset_key for m in result.get_asset_materialization_events()}
    assert materialized == set()
    says = []
    for table in DAILY_TABLES:
        refusal = refusal_of(result, f"raw__{table}")
        path = world.env.landing / table / f"{BASE}.parquet"
        assert refusal.description.startswith(f"raw/{table} {BASE}: not stored")
        assert f"- {check} on {BASE} ({path})" in refusal.description, refusal.description
        assert refusal.metadata["partition"].value == BASE.isoformat()
        if check not in ("columns_and_types", "row_count_matches_source"):  # not about single rows
            assert "offending rows" in refusal.description and f"{check} offending rows" in refusal.metadata
        evaluation = next(
            e
            for e in result.get_asset_check_evaluations()
            if (e.asset_key, e.check_name) == (RAW[table], check)
        )
        assert not evaluation.passed and evaluation.description.endswith("Refused delivery, not stored.")
        assert recorded(world, RAW[table], check, result)
        says.append(refusal.description.splitlines()[1])
    assert content(world.env.warehouse) == world.stored
    record(
        fault=f"raw flights and weather of {BASE} re-delivered: "
        + "; ".join(f"{t}: {FAULTS[f].says}" for t, f in faults.items()),
        expected=f"{check} fails for both; the run names partition, file and check; every table unchanged",
        observed=" | ".join(says),
        bad_input=True,
        clear_error=True,
        rows_lost=0,
        rows_duplicated=0,
    )


def test_a_refused_range_stores_none_of_its_days(world, record):
    """Flights of two days in one run, the second bad: neither is stored, the failure names only
    that day's file."""
    source = Tampered(
        root=str(world.env.landing), faults={"flights": "values_in_range:flights"}, day=NEXT.isoformat()
    )
    result = run(world, BASE, NEXT, source=source, selection=[RAW["flights"], FLIGHT_FEATURES])

    refusal = refusal_of(result, "raw__flights")
    window = f"{BASE}..{NEXT}"
    assert refusal.description.startswith(f"raw/flights {window}: not stored")
    good, bad = (world.env.landing / "flights" / f"{d}.parquet" for d in (BASE, NEXT))
    assert f"- values_in_range on {NEXT} ({bad})" in refusal.description
    assert str(good) not in refusal.description
    assert refusal.metadata["partition"].value == window
    assert content(world.env.warehouse) == world.stored
    assert scalar(world.env.warehouse, "select count(*) from raw.flights where flight_date = ?", [NEXT]) == 0
    record(
        fault=f"range {window} with the second day's distances absurd",
        expected="the whole window refused; the failure names that day's file; stored days unchanged",
        observed=refusal.description.splitlines()[1],
        bad_input=True,
        clear_error=True,
        rows_lost=0,
    )


def test_a_features_run_after_the_refusals_builds_on_the_stored_rows(world, record):
    """A features-only run (forced) after the refused deliveries: identical features."""
    result = run(world, BASE, selection=[FLIGHT_FEATURES], tags={FORCE_TAG: "true"})
    assert result.success
    (event,) = [m for m in result.get_asset_materialization_events() if m.asset_key == FLIGHT_FEATURES]
    rows = event.materialization.metadata["dagster/partition_row_count"].value
    assert rows == scalar(
        world.env.warehouse, "select count(*) from raw.flights where flight_date = ?", [BASE]
    )
    assert content(world.env.warehouse) == world.stored
    record(
        fault="features-only run after every refused raw delivery",
        expected="built from the stored (good) raw rows: identical feature rows",
        observed=f"{rows} feature rows for {BASE}, every table's content hash unchanged",
    )


def test_a_window_failing_a_blocking_dbt_test_is_never_published(world, record):
    """Raw accepts distances up to 10000 miles, the features test allows 6000: the staged window
    fails its test and the published features keep their rows. Last: raw keeps the new rows."""
    source = Tampered(
        root=str(world.env.landing), faults={"flights": "features_distance"}, day=BASE.isoformat()
    )
    before = content(world.env.warehouse)
    result = run(world, BASE, source=source)

    assert not result.success
    refusal = refusal_of(result, "dbt_features")
    test = "between_flight_features_distance__6000__1"
    assert f"features/flight_features {BASE}: not published" in refusal.description
    assert f"- {test}: 2 failing row(s)" in refusal.description and "7000.0" in refusal.description
    assert "7000.0" in refusal.metadata[f"{test} failing rows"].value
    assert recorded(world, FLIGHT_FEATURES, test, result)
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == test]
    assert not evaluation.passed and evaluation.description == "Refused window, not published."
    after = content(world.env.warehouse)
    raw = after.pop("raw.flights")
    assert raw != before.pop("raw.flights")  # raw stored the rows it accepts
    assert after == before
    staged = query(world.env.warehouse, f"select max(distance) from {PUBLICATION.staged}").iloc[0, 0]  # noqa: S608
    assert staged == 7000.0  # the refused window, kept for inspection

    # A later features-only run builds on the same rows and is refused again.
    again = run(world, BASE, selection=[FLIGHT_FEATURES], tags={FORCE_TAG: "true"})
    assert not again.success and test in refusal_of(again, "dbt_features").description
    assert content(world.env.warehouse) == after | {"raw.flights": raw}
    record(
        fault=f"raw/flights {BASE}: {FAULTS['features_distance'].says} (valid raw, invalid features)",
        expected="dbt test fails on the staged window; nothing published, also by a later features run",
        observed=refusal.description.splitlines()[0] + " " + refusal.description.splitlines()[1],
        bad_input=True,
        clear_error=True,
        rows_lost=0,
        rows_duplicated=0,
    )


# --- the audit itself, on many bad versions ---------------------------------------------------


DAY = date(2013, 5, 6)
FRAMES = {t: PackagedSource().read_days(t, DAY, DAY + timedelta(days=1)).frame for t in DAILY_TABLES}
FILES = {t: f"landing/{t}/{DAY}.parquet" for t in DAILY_TABLES}


@st.composite
def bad_versions(draw):
    """A table's day with one of: rows duplicated, values outside their range, nulls in a
    required column, a column of another type; and the check that must fail."""
    table = draw(st.sampled_from(sorted(DAILY_TABLES)))
    spec, frame = DAILY_TABLES[table], FRAMES[table].copy()
    rows = draw(st.lists(st.integers(0, len(frame) - 1), min_size=1, max_size=12, unique=True))
    kind = draw(
        st.sampled_from(["key_unique", "values_in_range", "required_columns_not_null", "columns_and_types"])
    )
    if kind == "key_unique":
        frame = pd.concat([frame, frame.iloc[rows]], ignore_index=True)
    elif kind == "values_in_range":
        col = draw(st.sampled_from([c for c in spec.columns if c.maximum is not None]))
        excess = draw(st.integers(1, 10**6))
        frame.loc[rows, col.name] = col.maximum + excess
    elif kind == "required_columns_not_null":
        col = draw(
            st.sampled_from(
                [c.name for c in spec.columns if not c.nullable and c.name != spec.partition_column]
            )
        )
        frame.loc[rows, col] = None
    else:
        col = draw(st.sampled_from([c.name for c in spec.columns if c.pandas_dtype in ("Int64", "float64")]))
        frame = frame.astype({col: "float64" if frame[col].dtype == "Int64" else "Float64"})
    return table, frame, kind, len(rows)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad_versions())
def test_every_bad_version_is_refused_naming_day_file_check_and_rows(case):
    table, frame, kind, changed = case
    spec = DAILY_TABLES[table]
    outcomes = evaluate_daily_batch(frame, spec, DAY, DAY + timedelta(days=1), {DAY: len(frame)}, [DAY])
    refused = [o for o in outcomes if o.blocking and not o.passed]
    assert kind in {o.name for o in refused}
    description, metadata = refusal_report(f"raw/{table}", [DAY.isoformat()], [FILES[table]], refused)
    assert description.startswith(f"raw/{table} {DAY}: not stored")
    assert f"- {kind} on {DAY} ({FILES[table]})" in description
    outcome = next(o for o in refused if o.name == kind)
    if kind != "columns_and_types":
        at_fault = len(outcome.rows)
        assert at_fault == (2 * changed if kind == "key_unique" else changed)  # a copy and its original
        shown = min(5, at_fault)
        assert f"offending rows ({shown} of {at_fault})" in description
        assert len(metadata[f"{kind} offending rows"].splitlines()) == shown + 1  # and a header
