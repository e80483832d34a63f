"""``ml-platform``: console commands around the platform, in the environment `make dev` gives the
UI (``ml_platform/local_env.py``): the same instance, warehouse and tracking store.

``ml-platform dagster ...`` and ``ml-platform dg ...`` run Dagster's CLIs in that environment.
"""

import argparse
import sys
from datetime import date
from pathlib import Path

from ml_platform import local_env
from ml_platform.config import SettingsError, load_settings

# Dagster's own CLIs, run in the platform's environment with their arguments untouched.
TOOLS = ("dagster", "dg")


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from exc


def _migrate_warehouse(args) -> int:
    """Exit 0 when every table and day matches, 1 on a mismatch, 2 on a refused argument."""
    import os

    from ml_platform.resources import lake_migration as lm
    from ml_platform.resources.warehouse_engines import LAKE_DATA_ENV_VAR, WAREHOUSE_ENV_VAR, WarehouseError

    try:
        if args.source is None and os.environ.get(WAREHOUSE_ENV_VAR, "").startswith("ducklake:"):
            raise lm.MigrationError(
                f"{WAREHOUSE_ENV_VAR} is already a lake: name the DuckDB file with --from"
            )
        lake = lm.check_target(args.to, args.data_path or os.environ.get(LAKE_DATA_ENV_VAR))
        source = lm.check_source(
            args.source or load_settings().warehouse, "--from" if args.source else WAREHOUSE_ENV_VAR
        )
        report = lm.migrate(source, lake, replace=args.replace, verify_only=args.verify_only, log=print)
    except WarehouseError as exc:  # a refused argument or table, or an unreachable lake
        print(f"ml-platform migrate-warehouse: {exc}", file=sys.stderr)
        return 2
    print(report.render())
    for check in report.failures:
        print(f"ml-platform migrate-warehouse: MISMATCH {check.fault()}", file=sys.stderr)
    return 1 if report.failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ml-platform", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    land = sub.add_parser("land", help="write days of the packaged 2013 data into a landing directory")
    land.add_argument("--start", type=_date, required=True, help="first day, YYYY-MM-DD")
    land.add_argument("--days", type=int, default=1, help="how many days (default 1)")
    land.add_argument(
        "--to", type=Path, default=None, help="landing root (default: ML_PLATFORM_LANDING_ROOT)"
    )
    land.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    land.add_argument("--no-reference", action="store_true", help="skip planes/airports/airlines")
    land.add_argument(
        "--intraday",
        action="store_true",
        help="land each day's schedule and its 24 UTC hours of departures, arrivals, observations",
    )
    lineage = sub.add_parser(
        "lineage", help="trace a flight's prediction to its model, training window and files"
    )
    lineage.add_argument("flight_id", help="e.g. 20130125-UA-1545-EWR-0515")
    lineage.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub.add_parser("check", help="materialize a sample day on a throwaway instance; fail on a blocking check")
    for tool in TOOLS:
        sub.add_parser(tool, help=f"run `{tool} ...` on the instance the UI shows", add_help=False)
    migrate = sub.add_parser(
        "migrate-warehouse",
        help="copy the DuckDB warehouse file into a DuckLake, then verify every table and day",
    )
    migrate.add_argument("--to", required=True, help="the lake: ducklake:postgres:<libpq parameters>")
    migrate.add_argument(
        "--data-path", default=None, help="the lake's data directory (default: ML_PLATFORM_LAKE_DATA_PATH)"
    )
    migrate.add_argument(
        "--from", dest="source", default=None, help="the DuckDB file (default: ML_PLATFORM_WAREHOUSE)"
    )
    migrate.add_argument("--replace", action="store_true", help="replace tables the lake already holds")
    migrate.add_argument("--verify-only", action="store_true", help="compare without copying")
    return parser


def _lineage(args) -> int:
    import json

    from dagster import DagsterInstance

    from ml_platform.lineage import LineageError, render, trace_prediction
    from ml_platform.resources import build_resources
    from ml_platform.resources.warehouse import WarehouseError

    settings = load_settings()
    # A lake is opened to find out; a missing file is not created by opening it read-only.
    if not settings.warehouse_is_lake and not settings.warehouse_path.exists():
        print(
            f"ml-platform lineage: no warehouse at {settings.warehouse_path}: materialize the day's "
            "predictions first (or set ML_PLATFORM_WAREHOUSE / ML_PLATFORM_DATA_DIR)",
            file=sys.stderr,
        )
        return 2
    resources = build_resources(settings)
    with DagsterInstance.get() as instance:
        try:
            trace = trace_prediction(args.flight_id, resources["warehouse"], resources["mlflow"], instance)
        except (LineageError, WarehouseError) as exc:
            print(f"ml-platform lineage: {exc}", file=sys.stderr)
            return 2
    print(json.dumps(trace, indent=2, default=str) if args.json else render(trace))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TOOLS:
        return local_env.exec_tool(argv[0], argv[1:])
    if argv and argv[0] == "check":
        from ml_platform import ci_check

        return ci_check.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        # A missing or malformed setting is a usage error that names it, not a traceback.
        local_env.apply()
        if args.command == "migrate-warehouse":
            return _migrate_warehouse(args)
        if args.command == "land":
            from ml_platform.ingestion.landing import land_days, land_intraday

            root = args.to or load_settings().landing_root
            if args.intraday:
                land_intraday(args.start, args.days, root, args.format)
            else:
                land_days(args.start, args.days, root, args.format, reference=not args.no_reference)
        if args.command == "lineage":
            return _lineage(args)
    except (SettingsError, local_env.MissingSetting, ValueError) as exc:
        print(f"ml-platform {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
