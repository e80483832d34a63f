"""Training and scoring: fit time per candidate, and the predictions asset against bare scoring."""

from __future__ import annotations

import time
from datetime import date, timedelta
from pathlib import Path

from benchmarks import support

CUTOFF = "2013-06-01"  # the default cutoff of training/training_set
SCORING_ROUNDS = 9


def training_frames(warehouse_path: Path, cutoff: date, window_days: int, holdout_days: int):
    """The training set exactly as training/training_set builds it, read from a warehouse."""
    from ml_platform.ml.frames import split_training_set, training_windows
    from ml_platform.resources.warehouse import Warehouse
    from ml_platform.training.assets import read_features

    windows = training_windows(cutoff, window_days, holdout_days)
    features = read_features(Warehouse(path=str(warehouse_path)), windows["train"][0], windows["holdout"][1])
    frame = split_training_set(features, cutoff, window_days, holdout_days)
    return frame[frame.split == "train"], frame[frame.split == "holdout"]


def fit_candidates(train, repeats: int, names: tuple[str, ...] | None = None) -> dict:
    """Seconds of ``Pipeline.fit`` per registered candidate (all, or those whose asset names are
    given) with its default hyperparameters, keyed by asset name."""
    from ml_platform.keys import CANDIDATES
    from ml_platform.ml.frames import feature_frame, labels

    x, y = feature_frame(train), labels(train)
    out, cpu_out = {}, {}
    for candidate in CANDIDATES:
        name = candidate.asset_name
        if names is not None and name not in names:
            continue
        seconds, cpu = [], []
        for _ in range(repeats):
            model = candidate.build()
            started, cpu_started = time.perf_counter(), time.process_time()
            model.fit(x, y)
            seconds.append(time.perf_counter() - started)
            cpu.append(time.process_time() - cpu_started)
        out[name], cpu_out[name] = seconds, cpu
    return out, cpu_out


def training_and_scoring(work: Path, repeats: int = 3, score_days: int = 91) -> dict:
    """Features for the default window, candidate fits, one full training run (the champion), then
    the predictions asset over ``score_days`` days against ``predict_proba`` of the same model."""
    from ml_platform.config import load_settings
    from ml_platform.keys import PREDICTIONS, op_name
    from ml_platform.versions import FORCE_TAG

    settings = load_settings()
    cutoff = date.fromisoformat(CUTOFF)
    window, holdout = settings.training_window_days, settings.holdout_days
    last = cutoff + timedelta(days=holdout) - timedelta(days=1)
    # Scored: the days up to the holdout's last (the champion's training window among them).
    score_first = last - timedelta(days=score_days - 1)
    first = min(cutoff - timedelta(days=window), score_first)
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

        # Unchanged inputs would let later runs reuse the first one's fits: each run forces them.
        out["training_run_seconds"], out["training_run"] = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            result = support.materialize(inst, picked["training"], tags={FORCE_TAG: "true"})
            out["training_run_seconds"].append(time.perf_counter() - started)
            assert result.success, "training run failed"
            out["training_run"].append(support.run_events(inst, result.run_id)["step_seconds"])

        # The asset and bare predict_proba take turns, so both see the process equally warm (each
        # round of either is faster than the one before it: caches, allocator, CPU clocks). A bare
        # measurement on each side of every asset run: the asset is compared with their mean.
        bare = BareScoring(settings, score_first, last + timedelta(days=1))
        bare.measure()
        runs = []
        for _ in range(max(repeats, SCORING_ROUNDS)):
            started = time.perf_counter()
            result = support.materialize(
                inst, picked["predictions"], start=score_first.isoformat(), end=last.isoformat()
            )
            seconds = time.perf_counter() - started
            assert result.success, "predictions run failed"
            meta = result.asset_materializations_for_node(op_name(PREDICTIONS))[-1].metadata
            runs.append(
                {
                    "run_seconds": seconds,
                    "rows": int(meta["rows"].value),
                    "scoring_rows_per_second": float(meta["scoring_rows_per_second"].value),
                    "step_seconds": support.run_events(inst, result.run_id)["step_seconds"],
                }
            )
            bare.measure()
        out["predictions_runs"] = runs
        out["bare"] = bare.result()
    return out


class BareScoring:
    """``predict_proba`` of the champion on the same rows, each round in the steps the asset takes
    before its timed part: read the rows from the warehouse, load the model version afresh, score
    one row; then the first full call is timed. Later calls on the same object are faster (caches
    and allocator warm), so they are kept apart: ``warm_predict_proba_seconds``."""

    def __init__(self, settings, start: date, end: date):
        from ml_platform.resources import build_resources
        from ml_platform.resources.mlflow import CHAMPION
        from ml_platform.resources.warehouse import Warehouse

        self.tracking = build_resources(settings)["mlflow"]
        self.version = self.tracking.version_for(CHAMPION)
        self.warehouse = Warehouse(path=str(settings.warehouse_path))
        self.window = (start, end)
        self.rows = 0
        self.first, self.warm, self.with_frame = [], [], []

    def measure(self) -> None:
        from ml_platform.ml.frames import feature_frame
        from ml_platform.training.assets import read_features

        features = read_features(self.warehouse, *self.window)
        x = feature_frame(features)
        self.rows = len(x)
        model = self.tracking.load_version(self.version.version)
        model.predict_proba(x.head(1))
        started = time.perf_counter()
        model.predict_proba(x)
        self.first.append(time.perf_counter() - started)
        started = time.perf_counter()
        model.predict_proba(x)
        self.warm.append(time.perf_counter() - started)
        started = time.perf_counter()
        model.predict_proba(feature_frame(features))
        self.with_frame.append(time.perf_counter() - started)

    def result(self) -> dict:
        return {
            "rows": self.rows,
            "model_version": str(self.version.version),
            "model": self.version.tags.get("candidate", "unknown"),
            "predict_proba_seconds": self.first,
            "warm_predict_proba_seconds": self.warm,
            "feature_frame_and_predict_proba_seconds": self.with_frame,
        }
