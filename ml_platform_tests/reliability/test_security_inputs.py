"""Security against untrusted input: SQL never formats a value it has not validated (partition
keys, identifiers, dbt variables and model names are refused before they reach it); the landing
zone is never left, whatever links point out of it."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path
from unittest import mock

import dagster as dg
import duckdb
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ml_platform
from ml_platform.automation.landing_scan import load_cursor
from ml_platform.config import REPO_ROOT
from ml_platform.definitions import build_definitions
from ml_platform.ingestion.landing import land_days
from ml_platform.ingestion.source import LandingSource, SourceError
from ml_platform.partitions import day_of
from ml_platform.resources import build_resources
from ml_platform.resources.mlflow import MlflowTracking
from ml_platform.resources.warehouse import WarehouseError, ident
from ml_platform_tests.ml_support import raw_daily_assets
from ml_platform_tests.reliability.support import platform, scalar

# --- SQL ---------------------------------------------------------------------------------------------

SQL_CALLS = {"execute", "query", "sql", "executemany"}
# A formatted SQL string may interpolate only quoted identifiers and literals (``QUOTING``), names assigned
# from them, and the declared schema's DDL.
SAFE_NAMES = {"target", "cols", "sql"}
# Quoting functions: a validated identifier (``ident``), or a string literal for the statements
# that take no parameters (``literal``, ATTACH).
QUOTING = {"ident", "literal"}
# SQLAlchemy Core statements bind every value they carry.
STATEMENT_BUILDERS = {"insert", "update", "delete", "select"}


def _is_statement_builder(node: ast.expr) -> bool:
    """``Table.insert()``, ``Table.insert().returning(...)`` and the like."""
    while isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        if node.func.attr in STATEMENT_BUILDERS:
            return True
        node = node.func.value
    return False


def _formatted_sql_problems() -> list[str]:
    problems = []
    package = Path(ml_platform.__file__).parent
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call) and getattr(node.func, "attr", None) in SQL_CALLS and node.args
            ):
                continue
            sql = node.args[0]
            where = f"{path.relative_to(package.parent)}:{node.lineno}"
            if isinstance(sql, ast.Constant):
                continue
            if (isinstance(sql, ast.Name) and sql.id in SAFE_NAMES) or _is_statement_builder(sql):
                continue
            if not isinstance(sql, ast.JoinedStr):
                problems.append(f"{where}: SQL is built as {type(sql).__name__}")
                continue
            for part in sql.values:
                if not isinstance(part, ast.FormattedValue):
                    continue
                value = part.value
                ok = (
                    (isinstance(value, ast.Call) and getattr(value.func, "id", None) in QUOTING)
                    or (isinstance(value, ast.Name) and value.id in SAFE_NAMES)
                    or (isinstance(value, ast.Call) and getattr(value.func, "attr", None) == "ddl_columns")
                )
                if not ok:
                    problems.append(f"{where}: formats {ast.unparse(value)} into SQL")
    return problems


@given(st.text())
@settings(deadline=None)  # a DuckDB connection per example: its time says nothing here
def test_a_quoted_literal_is_read_back_as_exactly_its_text(text):
    """``literal`` is what lets a statement without parameters (ATTACH) carry a path or a
    connection string: whatever the text, DuckDB reads it back unchanged, never as SQL."""
    from ml_platform.resources.warehouse_engines import literal

    text = text.replace("\x00", "")  # DuckDB strings hold no NUL
    with duckdb.connect() as conn:
        assert conn.execute(f"select {literal(text)}").fetchall() == [(text,)]


def test_every_sql_statement_binds_or_validates_what_it_includes(tmp_path, record):
    """Static: SQL formats only validated identifiers; dynamic: injection attempts are refused."""
    problems = _formatted_sql_problems()
    refused = []
    for name in ['x"; drop table raw.flights; --', "raw.flights", "a b", "1=1"]:
        with pytest.raises(WarehouseError, match="not a valid"):
            ident(name)
        refused.append(f"identifier {name!r}")
    with pytest.raises(ValueError, match="is not a day"):
        day_of("2013-01-01' or '1'='1")
    refused.append("partition key in day_of")
    with pytest.raises(ValueError):
        MlflowTracking(tracking_uri="sqlite:///x.db", registered_model_name="m' or name like '%")
    refused.append("registered model name used in an MLflow filter")

    with platform(tmp_path) as (env, settings, instance):
        resources = build_resources(settings)
        assert dg.materialize(
            raw_daily_assets(settings), resources=resources, instance=instance, partition_key="2013-01-01"
        )
        before = int(scalar(env.warehouse, "select count(*) from raw.flights"))
        with pytest.raises(Exception, match="(?i)partition"):
            dg.materialize(
                raw_daily_assets(settings),
                resources=resources,
                instance=instance,
                partition_key="2013-01-01'; delete from raw.flights; --",
            )
        refused.append("partition key outside the partition set")
        assert int(scalar(env.warehouse, "select count(*) from raw.flights")) == before
        injected = "2013-01-01' or 1=1 --"
        # The window reaches dbt as --vars, from Dagster and by hand alike.
        dbt = subprocess.run(
            [
                str(Path(sys.executable).parent / "dbt"),
                "compile",
                "--vars",
                json.dumps({"min_date": injected, "max_date": "2013-01-02"}),
                "--select",
                "flight_features",
            ],
            cwd=REPO_ROOT / "dbt_project",
            env={**os.environ, "ML_PLATFORM_WAREHOUSE": str(env.warehouse)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert dbt.returncode != 0 and "is not a YYYY-MM-DD date" in dbt.stdout + dbt.stderr
        refused.append("dbt window var")
    record(
        fault="partition key, identifier, dbt variable and model-name injection attempts; SQL audit",
        expected="every attempt refused before reaching SQL; no SQL formats an unvalidated value",
        observed=f"refused: {', '.join(refused)}; formatted-SQL audit: {problems or 'clean'}",
        bad_input=True,
        clear_error=not problems,
    )
    assert problems == []


# --- the landing root ---------------------------------------------------------------------------------


def test_the_landing_sensor_and_source_never_open_a_file_outside_the_root(tmp_path, record):
    """Links out of the root (a file, a folder, a relative ``..``) are refused without a read."""
    with platform(tmp_path, "landing") as (env, settings, instance):
        root, outside = env.landing, tmp_path / "outside"
        land_days(date(2013, 1, 1), 1, root, echo=lambda _: None)
        land_days(date(2013, 1, 2), 2, outside, reference=False, echo=lambda _: None)
        (root / "flights" / "2013-01-02.parquet").symlink_to(outside / "flights" / "2013-01-02.parquet")
        (root / "flights" / "2013-01-03.parquet").symlink_to(
            Path("..") / ".." / "outside" / "flights" / "2013-01-03.parquet"
        )
        (root / "weather").rename(tmp_path / "weather-moved")
        (root / "weather").symlink_to(outside / "weather", target_is_directory=True)
        opened: list[str] = []
        listening = [True]

        def audit(event, args):  # audit hooks cannot be removed: this one goes quiet after the test
            if listening[0] and event == "open" and args and isinstance(args[0], str | Path):
                opened.append(str(args[0]))

        sys.addaudithook(audit)
        real_read_parquet = pd.read_parquet

        def read_parquet(path, *args, **kwargs):
            opened.append(str(path))
            return real_read_parquet(path, *args, **kwargs)

        defs = build_definitions(settings)
        with mock.patch("pandas.read_parquet", read_parquet):
            with dg.build_sensor_context(
                instance=instance, definitions=defs, resources=defs.resources
            ) as context:
                result = defs.get_sensor_def("landing_sensor")(context)
            runs = [
                dg.materialize(
                    raw_daily_assets(settings),
                    resources=build_resources(settings),
                    instance=instance,
                    partition_key=day,
                    raise_on_error=False,
                )
                for day in ("2013-01-02", "2013-01-03")
            ]
        listening[0] = False
        recording = list(opened)
        states = load_cursor(result.cursor)
        refused = {rel: s.problem for rel, s in states.items() if s.status == "rejected"}
        outside_reads = [p for p in recording if Path(p).resolve().is_relative_to(outside.resolve())]
        assert not result.run_requests
        assert all("outside the landing root" in p for p in refused.values()) and len(refused) >= 4, refused
        assert all(not r.success for r in runs)
        with pytest.raises(SourceError, match="outside the landing root"):
            LandingSource(root=str(root)).resolve("../outside/flights/2013-01-02.parquet")
        assert outside_reads == []
    record(
        fault="links out of the landing root: file symlink, relative '..' link, symlinked table folder",
        expected="sensor and runs refuse them; no file outside the root is ever opened",
        observed=f"{len(refused)} files refused by the sensor, both runs failed, "
        f"{len(recording)} files opened, none outside the root",
        bad_input=True,
        clear_error=True,
    )
