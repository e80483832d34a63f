"""The cost of the point-in-time regimes: one nowcast fit with the backtest's tuned parameters on
its 91-day window beside the served daily candidate's fit on its own window, and incremental
point-in-time feature builds (one day against 30 and 91 days; one day on a short raw history
against the same day on a long one, which shows a day reads only its look-back)."""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path

from benchmarks import support
from benchmarks.ml import CUTOFF, fit_candidates, training_frames

DAY = date(2013, 5, 31)  # the day built alone: the last before the training cutoff
LONG_HISTORY = date(2013, 2, 1)  # raw data from here: four months before the day
SHORT_HISTORY = date(2013, 5, 1)  # raw data from here: the look-back (28 days) and a little more


def case(work: Path, repeats: int = 3) -> dict:
    from ml_platform.config import load_settings

    settings = load_settings()
    cutoff = date.fromisoformat(CUTOFF)
    window, holdout = settings.training_window_days, settings.holdout_days
    out: dict = {"cutoff": CUTOFF}
    picked = support.selections()
    with support.instance(work / "dagster_home") as inst:
        first, last = cutoff - timedelta(days=window), cutoff + timedelta(days=holdout - 1)
        assert support.materialize(
            inst, picked["raw_and_features"], start=first.isoformat(), end=last.isoformat()
        ).success
    from ml_platform.keys import HGB

    train, _ = training_frames(settings.warehouse_path, cutoff, window, holdout)
    with support.PeakMemory() as peak:
        seconds, cpu = fit_candidates(train, repeats, (HGB.asset_name,))
    out["daily"] = {
        "window_days": window,
        "rows": len(train),
        "features": _daily_feature_count(),
        "fit_seconds": seconds[HGB.asset_name],
        "fit_cpu_seconds": cpu[HGB.asset_name],
        "peak_rss_mb": peak.mb,
    }
    out["builds"] = builds(work, repeats)
    out["nowcast"] = nowcast_fit(work / "long.duckdb", cutoff, repeats)
    return out


def _daily_feature_count() -> int:
    from ml_platform.ml.frames import CATEGORICAL, NUMERIC

    return len(CATEGORICAL) + len(NUMERIC)


def _timed(call) -> tuple[float, float]:
    started, cpu = time.perf_counter(), support.cpu_seconds()
    call()
    return time.perf_counter() - started, support.cpu_seconds() - cpu


def builds(work: Path, repeats: int) -> dict:
    """dbt builds (in process, as the asset runs them) of windows ending on ``DAY``."""
    from ml_platform_tests import pit_support

    end = DAY + timedelta(days=1)
    out: dict = {}
    for name, start in (("long", LONG_HISTORY), ("short", SHORT_HISTORY)):
        path = work / f"{name}.duckdb"
        pit_support.write_raw(path, pit_support.raw_days(start, end + timedelta(days=1)))
        pit_support.build_models(path, DAY, end)  # warm: dbt parses the project once per process
        runs = [_timed(lambda path=path: pit_support.build_models(path, DAY, end)) for _ in range(repeats)]
        out[f"one_day_{name}_history"] = {
            "seconds": [r[0] for r in runs],
            "cpu_seconds": [r[1] for r in runs],
        }
        out[f"one_day_{name}_history"]["rows"] = _rows(path, DAY, end)
    long = work / "long.duckdb"
    for days in (30, 91):
        runs = [_timed(lambda days=days: pit_support.build_models(long, end - timedelta(days=days), end))]
        out[f"days_{days}"] = {"seconds": [r[0] for r in runs], "cpu_seconds": [r[1] for r in runs]}
        out[f"days_{days}"]["rows"] = _rows(long, end - timedelta(days=days), end)
    return out


def _rows(path: Path, start: date, end: date) -> int:
    """Nowcast rows of the days [start, end) in the staged table."""
    import pandas as pd

    from ml_platform_tests import pit_support

    days = pd.to_datetime(pit_support.read_features(path, "nowcast_features").flight_date)
    return int(((days >= pd.Timestamp(start)) & (days < pd.Timestamp(end))).sum())


def nowcast_fit(path: Path, cutoff: date, repeats: int) -> dict:
    """Fits of the nowcast model with the backtest's default (tuned) parameters on the 91 days
    before the cutoff, just built into ``path``."""
    import pandas as pd

    from ml_platform.ml import regimes
    from ml_platform.ml.frames import LABEL, feature_frame, labels
    from ml_platform.monitoring.backtest import BacktestConfig
    from ml_platform_tests import pit_support

    defaults = {k: f.default for k, f in BacktestConfig.model_fields.items() if k.startswith("pit_")}
    params = {k.removeprefix("pit_"): v for k, v in defaults.items() if k != "pit_window_days"}
    features = pit_support.read_features(path, regimes.NOWCAST.table)
    start = pd.Timestamp(cutoff - timedelta(days=defaults["pit_window_days"]))
    days = pd.to_datetime(features.flight_date)
    train = features[(days >= start) & (days < pd.Timestamp(cutoff)) & features[LABEL].notna()]
    x = feature_frame(train, regimes.NOWCAST.categorical, regimes.NOWCAST.numeric)
    y = labels(train)
    seconds, cpu = [], []
    with support.PeakMemory() as peak:
        for _ in range(repeats):
            model = regimes.hist_gradient_boosting(regimes.NOWCAST, **params)
            took = _timed(lambda model=model: model.fit(x, y))
            seconds.append(took[0])
            cpu.append(took[1])
    return {
        "window_days": defaults["pit_window_days"],
        "params": params,
        "rows": len(train),
        "features": x.shape[1],
        "fit_seconds": seconds,
        "fit_cpu_seconds": cpu,
        "peak_rss_mb": peak.mb,
    }


def group(runner) -> None:
    """The figures of ``case`` (one process; the fits and builds repeat inside it)."""
    import statistics

    run = runner.child("pit_cost", "pit_cost", {"repeats": runner.plan.repeats}, timeout=3600)
    runner.clean("pit_cost")
    if not run.ok:
        return
    res = run.result
    daily, nowcast, builds_ = res["daily"], res["nowcast"], res["builds"]
    ratio = statistics.median(nowcast["fit_seconds"]) / statistics.median(daily["fit_seconds"])
    runner.figure(
        "fit_nowcast_tuned",
        f"Fit nowcast HGB, tuned, {nowcast['window_days']}-day window ({nowcast['rows']} rows, "
        f"{nowcast['features']} features)",
        nowcast["fit_seconds"],
        [run],
        cpu=nowcast["fit_cpu_seconds"],
        ratio_to_daily_hgb=round(ratio, 2),
        fit_peak_rss_mb=nowcast["peak_rss_mb"],
    )
    runner.figure(
        "fit_daily_hgb_reference",
        f"Fit daily hgb candidate, {daily['window_days']}-day window ({daily['rows']} rows, "
        f"{daily['features']} features)",
        daily["fit_seconds"],
        [run],
        cpu=daily["fit_cpu_seconds"],
        fit_peak_rss_mb=daily["peak_rss_mb"],
    )
    labels = {
        "one_day_long_history": "PIT features (dbt), one day, raw history of four months",
        "one_day_short_history": "PIT features (dbt), the same day, raw history of one month",
        "days_30": "PIT features (dbt), 30 days",
        "days_91": "PIT features (dbt), 91 days",
    }
    for key, label in labels.items():
        b = builds_[key]
        runner.figure(
            f"pit_build_{key}",
            f"{label} ({b['rows']} nowcast rows)",
            b["seconds"],
            [run],
            cpu=b["cpu_seconds"],
        )
