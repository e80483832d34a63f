"""Platform-wide policy, applied once at the root to every asset: freshness windows, automation
conditions, and owners and tags by domain (the asset's group)."""

from collections.abc import Callable
from datetime import timedelta

from dagster import AssetSpec, FreshnessPolicy

from ml_platform.automation.conditions import CONDITIONS_BY_KEY
from ml_platform.automation.freshness import DAILY_KEYS
from ml_platform.config import Settings
from ml_platform.keys import CHAMPION_MODEL, NOWCAST_CHAMPION

DAILY = FreshnessPolicy.time_window(fail_window=timedelta(hours=30), warn_window=timedelta(hours=26))
CHAMPION = FreshnessPolicy.time_window(fail_window=timedelta(days=8), warn_window=timedelta(days=7))

# Who answers for each domain's assets, and the tags to filter them by in the UI.
OWNERS_BY_GROUP = {
    "ingestion": ["team:data-engineering"],
    "features": ["team:data-engineering"],
    "intraday": ["team:data-engineering"],
    "training": ["team:ml"],
    "serving": ["team:ml"],
    "monitoring": ["team:ml"],
    "nowcast": ["team:ml"],
}


def build_policy(settings: Settings) -> Callable[[AssetSpec], AssetSpec]:
    """The policy for one asset. Wall-clock freshness windows for the daily assets only with
    open-ended partitions: on a year that ended in the past they would call every day stale (the
    data-clock checks in ``freshness.py`` judge those). Both champions' weekly window applies always."""
    policies = {CHAMPION_MODEL: CHAMPION, NOWCAST_CHAMPION: CHAMPION}
    if settings.partition_end is None:
        policies.update(dict.fromkeys(DAILY_KEYS, DAILY))

    def apply_policy(spec: AssetSpec) -> AssetSpec:
        attrs: dict = {}
        if spec.key in policies:
            attrs["freshness_policy"] = policies[spec.key]
        if spec.key in CONDITIONS_BY_KEY:
            attrs["automation_condition"] = CONDITIONS_BY_KEY[spec.key]
        if spec.group_name in OWNERS_BY_GROUP:
            attrs["owners"] = OWNERS_BY_GROUP[spec.group_name]
            attrs["tags"] = {**spec.tags, "domain": spec.group_name}
        return spec.replace_attributes(**attrs) if attrs else spec

    return apply_policy
