"""``ml-platform``: console commands around the platform."""

import argparse
import sys
from datetime import date
from pathlib import Path

from ml_platform.config import load_settings


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from exc


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
    lineage = sub.add_parser(
        "lineage", help="trace a flight's prediction to its model, training window and files"
    )
    lineage.add_argument("flight_id", help="e.g. 20130125-UA-1545-EWR-0515")
    lineage.add_argument("--json", action="store_true", help="print JSON instead of text")
    return parser


def _lineage(args) -> int:
    import json

    from dagster import DagsterInstance

    from ml_platform.lineage import LineageError, render, trace_prediction
    from ml_platform.resources import build_resources

    settings = load_settings()
    resources = build_resources(settings)
    with DagsterInstance.get() as instance:
        try:
            trace = trace_prediction(
                args.flight_id, str(settings.warehouse_path), resources["mlflow"], instance
            )
        except LineageError as exc:
            print(f"ml-platform lineage: {exc}", file=sys.stderr)
            return 2
    print(json.dumps(trace, indent=2, default=str) if args.json else render(trace))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "land":
        from ml_platform.ingestion.landing import land_days

        try:
            # Inside the try: a malformed setting (SettingsError) is a usage error, not a traceback.
            root = args.to or load_settings().landing_root
            land_days(args.start, args.days, root, args.format, reference=not args.no_reference)
        except ValueError as exc:
            print(f"ml-platform land: {exc}", file=sys.stderr)
            return 2
    if args.command == "lineage":
        return _lineage(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
