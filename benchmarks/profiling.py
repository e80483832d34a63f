"""Where the single-run year backfill spends its time: a pyinstrument profile of ``materialize``.

``python -m benchmarks.profiling [--storage sqlite|postgres] [--source packaged|landing]`` writes
``benchmarks/results/profile-<storage>.txt`` (call tree) and ``.json`` (time by category, and the
functions with the most own time), and prints them. The raw session is kept in the work
directory (``profile.pyisession``; ``pyinstrument --load`` renders it, e.g. as HTML). dbt runs
in a subprocess: its own work shows as waiting on its output inside the ``dbt_features`` step.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from benchmarks import support
from benchmarks.measure import run_child

RESULTS = Path(__file__).resolve().parent / "results"


def profile_single_run(
    work: Path, storage: str = "sqlite", out: str | None = None, interval: float = 0.005
) -> dict:
    from pyinstrument import Profiler

    out_base = Path(out) if out else RESULTS / f"profile-{storage}"
    support.warm_up()
    with support.instance(work / "dagster_home", storage) as inst:
        selection = support.selections()["raw_and_features"]
        profiler = Profiler(interval=interval)
        started = time.perf_counter()
        profiler.start()
        result = support.materialize(inst, selection, start="2013-01-01", end="2013-12-31")
        profiler.stop()
        seconds = time.perf_counter() - started
        assert result.success
        events = support.run_events(inst, result.run_id)
    out_base.parent.mkdir(parents=True, exist_ok=True)
    out_base.with_suffix(".txt").write_text(
        profiler.output_text(unicode=False, color=False, show_all=False, short_mode=False)
    )
    session = profiler.last_session
    session.save(work / "profile.pyisession")
    breakdown = breakdown_of(session)
    out_base.with_suffix(".json").write_text(
        json.dumps({"seconds": seconds, **breakdown, **events}, indent=2)
    )
    return {
        "seconds": seconds,
        "storage": storage,
        "profile": str(out_base.with_suffix(".txt")),
        "sample_count": session.sample_count,
        **breakdown,
        **events,
    }


# (category, test on the stack of frames from the root) in order of precedence: the first that
# matches takes the sample.
def _any(stack, function=None, path=None):
    return any((function is None or f[0] == function) and (path is None or path in f[1]) for f in stack)


def _event_log(stack) -> bool:
    return _any(stack, "handle_new_event") or _any(stack, "store_event")


_WAITS = {"_stream_stdout", "read", "readline", "readinto", "select", "poll", "wait", "_wait", "communicate"}
CATEGORIES = [
    (
        "dagster: event log writes, planned events",
        lambda s: _any(s, "_log_asset_planned_events") and _event_log(s),
    ),
    ("dagster: event log writes, run events", _event_log),
    ("dagster: building planned events", lambda s: _any(s, "_log_asset_planned_events")),
    (
        "dbt: subprocess running (waiting on its output)",
        lambda s: _any(s, path="dagster_dbt/") and s[-1][0] in _WAITS,
    ),
    ("dagster-dbt: turning dbt output into events", lambda s: _any(s, path="dagster_dbt/")),
    ("ours: raw assets, record_partition_lineage", lambda s: _any(s, "record_partition_lineage")),
    ("ours: raw assets, read + conform + checks", lambda s: _any(s, path="ml_platform/ingestion/")),
    (
        "ours: warehouse IO manager (DuckDB write)",
        lambda s: _any(s, path="ml_platform/resources/warehouse.py"),
    ),
    ("ours: other", lambda s: _any(s, path="ml_platform/")),
    ("imports", lambda s: _any(s, "_find_and_load")),
    ("dagster: other", lambda s: True),
]
DB_CALLS = {"commit", "close", "execute", "connect", "rollback", "Connection.commit", "Connection.close"}


def breakdown_of(session, top: int = 25) -> dict:
    """Seconds of the session by category, the event-log share spent in database calls, and
    the functions with the most own time."""
    by_category = dict.fromkeys((name for name, _ in CATEGORIES), 0.0)
    own: dict[str, float] = {}
    event_log_db = 0.0
    for identifiers, seconds in session.frame_records:
        stack = [tuple((ident.split("\x01")[0].split("\x00") + ["", ""])[:3]) for ident in identifiers]
        for name, test in CATEGORIES:
            if test(stack):
                by_category[name] += seconds
                break
        leaf = stack[-1]
        if _event_log(stack) and leaf[1] in ("", "<built-in>") and leaf[0].split(".")[-1] in DB_CALLS:
            event_log_db += seconds
        where = leaf[1].split("site-packages/")[-1].replace(str(support.REPO_ROOT) + "/", "")
        key = f"{leaf[0]} ({where}:{leaf[2]})"
        own[key] = own.get(key, 0.0) + seconds
    return {
        "duration": session.duration,
        "cpu_time": session.cpu_time,
        "by_category": {k: round(v, 2) for k, v in by_category.items()},
        "event_log_in_database_calls": round(event_log_db, 2),
        "top_own_time": {k: round(v, 2) for k, v in sorted(own.items(), key=lambda kv: -kv[1])[:top]},
    }


def analyze(session_path: Path) -> dict:
    """Re-read a saved session (``profile.pyisession`` in the work directory)."""
    from pyinstrument.session import Session

    return breakdown_of(Session.load(session_path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--source", choices=["packaged", "landing"], default="packaged")
    parser.add_argument("--landing-root", help="landing directory when --source landing")
    parser.add_argument("--work", type=Path, default=Path("/tmp") / f"ml_platform_profile_{os.getpid()}")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ML_PLATFORM_", "MLFLOW_", "DAGSTER_"))}
    data = args.work / "data"
    env.update(
        {
            "ML_PLATFORM_ENV": "local",
            "ML_PLATFORM_DATA_DIR": str(data),
            "MLFLOW_TRACKING_URI": f"sqlite:///{data / 'mlflow.db'}",
            "ML_PLATFORM_SOURCE": args.source,
        }
    )
    if args.landing_root:
        env["ML_PLATFORM_LANDING_ROOT"] = args.landing_root
    params = json.dumps({"storage": args.storage})
    result_path = args.work / "profile.json"
    run = run_child(
        [sys.executable, "-m", "benchmarks.child", "profile", str(args.work), str(result_path), params],
        env=env,
        log=args.work / "profile.log",
        result_path=result_path,
        cwd=support.REPO_ROOT,
    )
    if not run.ok:
        sys.exit(f"profiled run failed; see {run.log}")
    print(json.dumps({**run.result, "max_rss_mb": round(run.max_rss_mb)}, indent=2))


if __name__ == "__main__":
    main()
