"""Mean weekly AUC of the point-in-time feature regimes over 2013: the whole year's raw intraday
tables from the packaged data, both dbt models built in one window, then the weekly
walk-forward (cutoffs 2013-02-01..2013-12-24, as the backtest asset) for each regime, training
window and gradient-boosting setting.

    nice .venv/bin/python -m benchmarks.pit_auc --db /tmp/pit.duckdb --windows 28,56,91 \\
        --params explore,tuned --out benchmarks/results/pit_auc.md

Fits run on one thread each; ``--jobs`` runs that many cases at once (one per core).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path

PARAMS = {
    "explore": {"learning_rate": 0.1, "max_iter": 150},
    "tuned": {"learning_rate": 0.05, "max_iter": 500, "min_samples_leaf": 80, "l2_regularization": 1.0},
    # The tuned regularization at a third of the rounds: what a shared 2-core machine affords.
    "tuned200": {"learning_rate": 0.1, "max_iter": 200, "min_samples_leaf": 80, "l2_regularization": 1.0},
}
FIRST_CUTOFF, LAST_CUTOFF = date(2013, 2, 1), date(2013, 12, 24)
YEAR = (date(2013, 1, 1), date(2014, 1, 1))


def build(db: Path, nowcast_hours: int) -> dict[str, float]:
    from ml_platform_tests import pit_support

    started = time.perf_counter()
    pit_support.write_raw(db, pit_support.raw_days(*YEAR))
    raw = time.perf_counter() - started
    pit_support.build_models(db, *YEAR, nowcast_hours=nowcast_hours)
    return {"raw_seconds": raw, "dbt_seconds": time.perf_counter() - started - raw}


def case(db: str, regime_name: str, window_days: int, params_name: str) -> dict:
    import pandas as pd

    from ml_platform.ml import regimes
    from ml_platform.ml.training import walk_forward
    from ml_platform_tests import pit_support

    regime = regimes.REGIMES[regime_name]
    features = pit_support.read_features(Path(db), regime.table, read_only=True)
    started = time.perf_counter()
    weeks = walk_forward(
        features,
        lambda: regimes.hist_gradient_boosting(regime, **PARAMS[params_name]),
        FIRST_CUTOFF,
        LAST_CUTOFF,
        window_days,
        7,
        None,
        0.5,
        1,
        (regime.categorical, regime.numeric),
    )
    return {
        "regime": regime_name,
        "window_days": window_days,
        "params": params_name,
        "mean_auc": float(weeks.auc_weekly_retrain.mean()),
        "min_auc": float(weeks.auc_weekly_retrain.min()),
        "weeks": len(weeks),
        "wall_seconds": time.perf_counter() - started,
        "weekly": weeks.assign(week_start=pd.to_datetime(weeks.week_start).dt.strftime("%Y-%m-%d"))[
            ["week_start", "auc_weekly_retrain"]
        ].to_dict("records"),
    }


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def markdown(results: list[dict], built: dict, loads: list[str]) -> str:
    lines = [
        "# Point-in-time features: mean weekly AUC over 2013",
        "",
        "Weekly walk-forward (cutoffs 2013-02-01..2013-12-24, one week of holdout each), "
        "HistGradientBoosting retrained every week on the trailing window; features built by dbt "
        "(`day_ahead_features`, `nowcast_features`, h = 2) in one window over the whole year "
        "from the packaged data (`python -m benchmarks.pit_auc`). Fits single-threaded, under `nice`.",
        "",
        f"Build: raw tables {built.get('raw_seconds', float('nan')):.0f} s, "
        f"dbt {built.get('dbt_seconds', float('nan')):.0f} s.",
        "",
        "| regime | window (days) | params | mean weekly AUC | min weekly AUC | weeks | wall (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['regime']} | {r['window_days']} | {r['params']} | {r['mean_auc']:.4f} | "
            f"{r['min_auc']:.4f} | {r['weeks']} | {r['wall_seconds']:.0f} |"
        )
    lines += ["", "Params: " + json.dumps(PARAMS), "", "Load (`uptime`):", ""]
    lines += [f"- {line}" for line in loads]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True)
    parser.add_argument("--skip-build", action="store_true", help="the features in --db are current")
    parser.add_argument("--built", default="{}", help="with --skip-build: the build's timings (JSON)")
    parser.add_argument("--regimes", default="day_ahead,nowcast")
    parser.add_argument("--windows", default="28,56,91")
    parser.add_argument("--params", default="explore")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--nowcast-hours", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    loads = [f"start: {load()}"]
    built = json.loads(args.built) if args.skip_build else build(args.db, args.nowcast_hours)
    print(json.dumps(built), flush=True)
    cases = [
        (str(args.db), regime, int(window), params)
        for params in args.params.split(",")
        for regime in args.regimes.split(",")
        for window in args.windows.split(",")
    ]
    results = []
    # Spawned, not forked: a fork would inherit the in-process dbt build's open warehouse.
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for result in pool.map(case, *zip(*cases, strict=True)):
            weekly = result.pop("weekly")
            print(json.dumps(result), flush=True)
            results.append({**result, "weekly": weekly})
            loads.append(f"after {result['regime']}/{result['window_days']}/{result['params']}: {load()}")
    if args.out:
        args.out.write_text(markdown(results, built, loads))
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
