"""Training and scoring: fit time per candidate, and the predictions asset against bare scoring."""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path

from benchmarks import support

CUTOFF = "2013-06-01"  # the default cutoff of training/training_set
CANDIDATES = ("logistic_regression", "hist_gradient_boosting", "random_forest")


def training_frames(warehouse_path: Path, cutoff: date, window_days: int, holdout_days: int):
    """The training set exactly as training/training_set builds it, read from a warehouse."""
    from ml_platform.ml.frames import split_training_set, training_windows
    from ml_platform.resources.warehouse import Warehouse
    from ml_platform.training.assets import read_features

    windows = training_windows(cutoff, window_days, holdout_days)
    features = read_features(Warehouse(path=str(warehouse_path)), windows["train"][0], windows["holdout"][1])
    frame = split_training_set(features, cutoff, window_days, holdout_days)
    return frame[frame.split == "train"], frame[frame.split == "holdout"]


def fit_candidates(train, repeats: int, candidates=CANDIDATES) -> dict:
    """Seconds of ``Pipeline.fit`` per candidate with its default hyperparameters."""
    from ml_platform.ml import models
    from ml_platform.ml.frames import feature_frame, labels

    x, y = feature_frame(train), labels(train)
    out, cpu_out = {}, {}
    for name in candidates:
        seconds, cpu = [], []
        for _ in range(repeats):
            model = getattr(models, name)()
            started, cpu_started = time.perf_counter(), time.process_time()
            model.fit(x, y)
            seconds.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
        out[name], cpu_out[name] = seconds, cpu
    return out, cpu_out


def training_and_scoring(work: Path, repeats: int = 3, score_days: int = 28) -> dict:
    """Features for the default window, candidate fits, one full training run (the champion), then
    the predictions asset over ``score_days`` days against ``predict_proba`` of the same model."""
    from ml_platform.config import load_settings

    settings = load_settings()
    cutoff = date.fromisoformat(CUTOFF)
    window, holdout = settings.training_window_days, settings.holdout_days
    first = cutoff - timedelta(days=window)
    last = cutoff + timedelta(days=holdout) - timedelta(days=1)
    out: dict = {"cutoff": CUTOFF, "window_days": window, "holdout_days": holdout}
    picked = support.selections()
    with support.instance(work / "dagster_home") as inst:
        started = time.perf_counter()
        assert support.materialize(
            inst, picked["raw_and_features"], start=first.isoformat(), end=last.isoformat()
        ).success
        out["features_seconds"] = time.perf_counter() - started

        train, hold = training_frames(settings.warehouse_path, cutoff, window, holdout)
        out["train_rows"], out["holdout_rows"] = len(train), len(hold)
        out["fit_seconds"], out["fit_cpu_seconds"] = fit_candidates(train, repeats)

        started = time.perf_counter()
        result = support.materialize(inst, picked["training"])
        out["training_run_seconds"] = time.perf_counter() - started
        assert result.success, "training run failed"
        out["training_run"] = support.run_events(inst, result.run_id)["step_seconds"]

        # Score the training window and holdout: the days a champion is known to have features for.
        score_first = last - timedelta(days=score_days - 1)
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            result = support.materialize(
                inst, picked["predictions"], start=score_first.isoformat(), end=last.isoformat()
            )
            seconds = time.perf_counter() - started
            assert result.success, "predictions run failed"
            meta = result.asset_materializations_for_node("serving__predictions")[-1].metadata
            runs.append(
                {
                    "run_seconds": seconds,
                    "rows": int(meta["rows"].value),
                    "scoring_rows_per_second": float(meta["scoring_rows_per_second"].value),
                    "step_seconds": support.run_events(inst, result.run_id)["step_seconds"],
                }
            )
        out["predictions_runs"] = runs
        # Each call takes tens of milliseconds: more repeats than the asset runs, for a stable median.
        out["bare"] = bare_scoring(settings, score_first, last + timedelta(days=1), max(repeats, 7))
    return out


def bare_scoring(settings, start: date, end: date, repeats: int) -> dict:
    """``predict_proba`` of the champion on a prepared frame of the same rows, measured as the asset
    is: each repeat loads the model version afresh, scores one row, then times its first full call.
    Later calls on the same object are faster (caches and allocator warm), so they are kept apart:
    ``warm_predict_proba_seconds``."""
    from ml_platform.ml.frames import feature_frame
    from ml_platform.resources import build_resources
    from ml_platform.resources.mlflow import CHAMPION
    from ml_platform.resources.warehouse import Warehouse
    from ml_platform.training.assets import read_features

    tracking = build_resources(settings)["mlflow"]
    version = tracking.version_for(CHAMPION)
    features = read_features(Warehouse(path=str(settings.warehouse_path)), start, end)
    x = feature_frame(features)
    first, warm, with_frame = [], [], []
    for _ in range(repeats):
        model = tracking.load_version(version.version)
        model.predict_proba(x.head(1))
        started = time.perf_counter()
        model.predict_proba(x)
        first.append(time.perf_counter() - started)
        started = time.perf_counter()
        model.predict_proba(x)
        warm.append(time.perf_counter() - started)
        started = time.perf_counter()
        model.predict_proba(feature_frame(features))
        with_frame.append(time.perf_counter() - started)
    return {
        "rows": len(x),
        "model_version": str(version.version),
        "model": version.tags.get("candidate", "unknown"),
        "predict_proba_seconds": first,
        "warm_predict_proba_seconds": warm,
        "feature_frame_and_predict_proba_seconds": with_frame,
    }
