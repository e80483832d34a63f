"""Freshness: time-window policies (evaluated by the daemon) and, because those are not
partition-aware, time-partition freshness checks with their sensor for the daily assets."""

from datetime import timedelta

from dagster import (
    AssetSpec,
    FreshnessPolicy,
    SensorDefinition,
    build_sensor_for_freshness_checks,
    build_time_partition_freshness_checks,
)

from ml_platform.automation.conditions import CONDITIONS_BY_KEY
from ml_platform.automation.defaults import sensor_status
from ml_platform.config import Settings
from ml_platform.keys import CHAMPION_MODEL, FLIGHT_FEATURES, PREDICTIONS, RAW_DAILY

DAILY = FreshnessPolicy.time_window(fail_window=timedelta(hours=30), warn_window=timedelta(hours=26))
CHAMPION = FreshnessPolicy.time_window(fail_window=timedelta(days=8), warn_window=timedelta(days=7))

DAILY_KEYS = [*RAW_DAILY, FLIGHT_FEATURES, PREDICTIONS]
POLICY_BY_KEY = {**{k: DAILY for k in DAILY_KEYS}, CHAMPION_MODEL: CHAMPION}

# Each day's partition must be in by 09:00 UTC the next morning.
partition_freshness_checks = build_time_partition_freshness_checks(
    assets=DAILY_KEYS, deadline_cron="0 9 * * *"
)


def build_partition_freshness_sensor(settings: Settings) -> SensorDefinition:
    return build_sensor_for_freshness_checks(
        freshness_checks=partition_freshness_checks,
        minimum_interval_seconds=300,
        default_status=sensor_status(settings),
    )


def apply_policy(spec: AssetSpec) -> AssetSpec:
    """The platform-wide policy for one asset: its freshness window and automation condition."""
    attrs = {}
    if spec.key in POLICY_BY_KEY:
        attrs["freshness_policy"] = POLICY_BY_KEY[spec.key]
    if spec.key in CONDITIONS_BY_KEY:
        attrs["automation_condition"] = CONDITIONS_BY_KEY[spec.key]
    return spec.replace_attributes(**attrs) if attrs else spec
