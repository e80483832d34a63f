"""Asset checks in CI: materialize a sample day of ingestion and features on a throwaway instance
and warehouse, and fail, naming the asset, partition and check, if any blocking check fails.

``python -m ml_platform.ci_check --day 2013-01-01`` (``make check`` runs it after validating the
definitions and compiling dbt). Every other setting comes from the environment as usual, so a
CI job can point it at a landing zone (``ML_PLATFORM_SOURCE=landing``) to check a delivery.

The warehouse is a throwaway of the kind ``ML_PLATFORM_WAREHOUSE`` names: a DuckDB file, or for
a lake a new PostgreSQL database on its catalog's server (the role needs CREATEDB), dropped
afterwards, with its data in the temporary directory: the configured lake is never written.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

from ml_platform.resources.warehouse_engines import LAKE_DATA_ENV_VAR, LAKE_PREFIX, WAREHOUSE_ENV_VAR, redact

GROUPS = ("ingestion", "features")


def failed_blocking_checks(result, day: date) -> list[str]:
    """One line per failed blocking check of the run: asset, partition, check and its metadata."""
    lines = []
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.passed or evaluation.severity.value != "ERROR":
            continue
        metadata = {k: getattr(v, "value", v) for k, v in (evaluation.metadata or {}).items()}
        lines.append(
            f"{evaluation.asset_key.to_user_string()} [{evaluation.partition or day}]: "
            f"blocking check {evaluation.check_name} failed {metadata}"
        )
    return lines


def run(day: date) -> int:
    import dagster as dg

    from ml_platform.config import load_settings
    from ml_platform.definitions import build_definitions

    with tempfile.TemporaryDirectory(prefix="ml-platform-check-") as work:
        # A throwaway warehouse and stores; the rest of the settings as the environment gives them.
        os.environ["ML_PLATFORM_DATA_DIR"] = work
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work}/mlflow.db")
        with throwaway_warehouse(work), dg.DagsterInstance.ephemeral() as instance:
            defs = build_definitions(load_settings())
            keys = dg.AssetSelection.groups(*GROUPS).resolve(defs.resolve_asset_graph())
            result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=instance,
                partition_key=day.isoformat(),
                asset_selection=list(keys),
                raise_on_error=False,
            )
    failures = failed_blocking_checks(result, day)
    for line in failures:
        print(f"ml-platform check: {line}", file=sys.stderr)
    if not result.success and not failures:
        for event in result.all_events:
            if event.is_step_failure:
                error = event.step_failure_data.error
                print(
                    f"ml-platform check: step {event.step_key} [{day}] failed: "
                    f"{error.message.strip() if error else ''}",
                    file=sys.stderr,
                )
    if result.success and not failures:
        print(f"ml-platform check: {', '.join(GROUPS)} of {day}: every blocking check passed")
        return 0
    return 1


class CheckSetupError(RuntimeError):
    """The check's own stores could not be set up; the message names the setting."""


@contextmanager
def throwaway_warehouse(work: str) -> Iterator[None]:
    """The environment names a new, empty warehouse while the block runs: a file under ``work``,
    or (the setting is a lake) a lake in a new database of the catalog's server."""
    url = os.environ.pop(WAREHOUSE_ENV_VAR, "")
    os.environ.pop(LAKE_DATA_ENV_VAR, None)
    if not url.startswith(LAKE_PREFIX):
        yield
        return
    import psycopg2
    from psycopg2.extensions import make_dsn

    from ml_platform.resources.warehouse import ident

    catalog = url[len(LAKE_PREFIX) :]
    name = f"ml_platform_check_{uuid.uuid4().hex[:10]}"
    admin = None
    try:
        admin = psycopg2.connect(catalog, connect_timeout=10)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f"create database {ident(name)}")
    except psycopg2.Error as exc:
        if admin is not None:
            admin.close()
        raise CheckSetupError(
            f"{WAREHOUSE_ENV_VAR}={redact(url)!r}: cannot create the check's throwaway catalog "
            f"database there: {redact(str(exc)).strip()}"
        ) from exc
    try:
        os.environ[WAREHOUSE_ENV_VAR] = LAKE_PREFIX + make_dsn(catalog, dbname=name)
        os.environ[LAKE_DATA_ENV_VAR] = os.path.join(work, "lake") + "/"
        yield
    finally:
        with admin.cursor() as cur:
            cur.execute(f"drop database if exists {ident(name)} with (force)")
        admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ml-platform check", description=__doc__.splitlines()[0])
    parser.add_argument("--day", default="2013-01-01", help="the partition to materialize (YYYY-MM-DD)")
    args = parser.parse_args(argv)
    try:
        day = date.fromisoformat(args.day)
    except ValueError:
        print(f"ml-platform check: --day {args.day!r} is not a date (YYYY-MM-DD)", file=sys.stderr)
        return 2
    try:
        return run(day)
    except CheckSetupError as exc:
        print(f"ml-platform check: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
