"""Print the stale status of every asset (latest partition given) as JSON, as the UI computes it.

Run as ``python -m ml_platform_tests.stale_status PARTITION [REBUILD_START REBUILD_END]`` with
DAGSTER_HOME set. It loads the definitions of this process's environment (e.g. an edited dbt
project), so code changes show; with a rebuild window it first re-materializes the features there.
"""

import json
import sys

import dagster as dg
from dagster._utils.test.data_versions import get_stale_status_resolver

from ml_platform.definitions import build_definitions


def main(partition: str, rebuild: tuple[str, str] | None = None) -> None:
    defs = build_definitions()
    with dg.DagsterInstance.get() as instance:
        if rebuild:
            result = dg.materialize(
                [*defs.assets, *defs.asset_checks],
                selection=dg.AssetSelection.groups("features"),
                resources=defs.resources,
                instance=instance,
                tags={
                    "dagster/asset_partition_range_start": rebuild[0],
                    "dagster/asset_partition_range_end": rebuild[1],
                },
            )
            assert result.success
        resolver = get_stale_status_resolver(instance, list(defs.assets))
        out = {}
        for spec in defs.resolve_all_asset_specs():
            pk = partition if spec.partitions_def is not None else None
            out[spec.key.to_user_string()] = resolver.get_status(spec.key, pk).value
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], tuple(sys.argv[2:4]) if len(sys.argv) > 3 else None)
