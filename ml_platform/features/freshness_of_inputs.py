"""Skip the dbt build of a window whose inputs and code have not changed since its last build.

Per day, the fingerprint of ``flight_features`` combines the code versions of the dbt models with
the content hashes of that day's raw flights and weather and of the planes table (recorded by the
raw assets). It is stored on each feature partition's materialization; a window whose every day
matches its stored fingerprint needs no recompute.
"""

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from ml_platform.keys import FLIGHT_FEATURES, RAW_DAILY, RAW_PLANES
from ml_platform.versions import combine

FINGERPRINT = "input_fingerprint"


def _latest_metadata_by_partition(instance: DagsterInstance, key: AssetKey, partitions: list[str]) -> dict:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=partitions), limit=len(partitions) * 4
    ).records
    latest: dict[str, dict] = {}
    for record in records:  # newest first
        if record.partition_key not in latest:
            latest[record.partition_key] = record.asset_materialization.metadata
    return latest


def _text(metadata: dict | None, name: str) -> str | None:
    value = (metadata or {}).get(name)
    return getattr(value, "value", value)


def current_fingerprints(
    instance: DagsterInstance, code_version: str, partitions: list[str]
) -> dict[str, str]:
    """What each day's fingerprint would be if built now; days with unknown inputs are left out."""
    planes = instance.get_latest_materialization_event(RAW_PLANES)
    planes_hash = _text(planes.asset_materialization.metadata if planes else None, "content_hash")
    by_table = [_latest_metadata_by_partition(instance, key, partitions) for key in RAW_DAILY]
    out = {}
    for pk in partitions:
        hashes = [_text(table.get(pk), "content_hash") for table in by_table]
        if planes_hash and all(hashes):
            out[pk] = combine(code_version, planes_hash, *hashes)
    return out


def unchanged_window(instance: DagsterInstance, partitions: list[str], now: dict[str, str]) -> bool:
    """Whether every day of the window was last built from these fingerprints (``now``, from
    ``current_fingerprints``)."""
    if len(now) != len(partitions):
        return False
    stored = _latest_metadata_by_partition(instance, FLIGHT_FEATURES, partitions)
    return all(_text(stored.get(pk), FINGERPRINT) == now[pk] for pk in partitions)
