"""Child process of the suite: materialize platform assets in this process, so that a fault
point (``ML_PLATFORM_KILL_AT``) or the dbt fault kills the very process that writes.

    python -m ml_platform_tests.reliability.run_assets --select raw/flights,raw/weather \
        --partition 2013-01-02 [--last 2013-01-03] [--dbt-kill-at-insert]

The instance is the one of ``$DAGSTER_HOME``; exit code 0 when the run succeeded, 1 when it
failed, -9 (as seen by the parent) when a fault killed it.
"""

import argparse
import json
import sys

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--select", required=True, help="comma-separated asset keys (a/b)")
    parser.add_argument("--partition")
    parser.add_argument("--last", help="last partition of a range run starting at --partition")
    parser.add_argument("--dbt-kill-at-insert", action="store_true")
    parser.add_argument("--tags", default="{}")
    parser.add_argument("--run-config", default="{}")
    args = parser.parse_args(argv)

    import dagster as dg

    from ml_platform.config import load_settings
    from ml_platform.definitions import build_definitions
    from ml_platform.resources import build_resources
    from ml_platform_tests.reliability.dbt_fault import faulty_dbt

    settings = load_settings()
    resources = build_resources(settings)
    if args.dbt_kill_at_insert:
        resources["dbt"] = faulty_dbt("kill_at_insert")
    defs = build_definitions(settings)
    tags = json.loads(args.tags)
    if args.last:
        tags.update({RANGE_START: args.partition, RANGE_END: args.last})
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize(
            [*defs.assets, *defs.asset_checks],
            selection=[dg.AssetKey.from_user_string(key) for key in args.select.split(",")],
            resources=resources,
            instance=instance,
            partition_key=None if args.last else args.partition,
            tags=tags,
            run_config=json.loads(args.run_config),
            raise_on_error=False,
        )
        print(f"run {result.run_id} {'succeeded' if result.success else 'failed'}", flush=True)
        return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
