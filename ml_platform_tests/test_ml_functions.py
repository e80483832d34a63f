"""Plain ML functions on small frames: time-correct splits, the gate, metrics, drift, scoring."""

import os
from datetime import date

import numpy as np
import pandas as pd
import pytest

from ml_platform.ml import models
from ml_platform.ml.drift import build_profile, feature_psi
from ml_platform.ml.frames import CATEGORICAL, FEATURES, NUMERIC, feature_frame, labels, split_training_set
from ml_platform.ml.gate import decide
from ml_platform.ml.metrics import classification_metrics, expected_calibration_error
from ml_platform.ml.training import fit_and_evaluate, score


def synthetic_features(days: int = 20, per_day: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = days * per_day
    frame = pd.DataFrame(
        {
            "flight_id": [f"f{i}" for i in range(n)],
            "flight_date": np.repeat(pd.date_range("2013-03-01", periods=days), per_day),
            "carrier": rng.choice(["AA", "UA", "DL"], n),
            "origin": rng.choice(["EWR", "JFK", "LGA"], n),
            "dest": rng.choice(["ORD", "ATL", "LAX", "SFO"], n),
        }
    )
    for col in NUMERIC:
        frame[col] = rng.normal(size=n)
    frame["sched_dep_hour"] = rng.integers(5, 23, n).astype(float)
    # Late flights depend on hour and carrier, so a model has something to learn.
    logit = 0.25 * (frame.sched_dep_hour - 14) + (frame.carrier == "UA") * 1.0 - 0.5
    frame["arrived_late"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(object)
    frame.loc[frame.index % 17 == 0, "arrived_late"] = None  # cancelled: no label
    return frame


def test_split_is_time_correct_and_drops_unlabelled_rows():
    frame = synthetic_features()
    split = split_training_set(frame, date(2013, 3, 15), window_days=7, holdout_days=3)
    train = split[split.split == "train"]
    holdout = split[split.split == "holdout"]
    assert train.flight_date.max() < pd.Timestamp("2013-03-15")
    assert train.flight_date.min() == pd.Timestamp("2013-03-08")
    assert holdout.flight_date.min() == pd.Timestamp("2013-03-15")
    assert holdout.flight_date.max() == pd.Timestamp("2013-03-17")
    assert split.arrived_late.notna().all()
    expected = frame[(frame.flight_date >= "2013-03-08") & (frame.flight_date < "2013-03-18")]
    assert len(split) == int(expected.arrived_late.notna().sum())


def test_gate_promotes_only_above_floor_and_not_worse_than_champion():
    first = decide({"a": 0.70, "b": 0.72}, champion_auc=None, floor=0.65)
    assert first.promote and first.best == "b" and first.alias == "champion"
    worse = decide({"a": 0.70, "b": 0.71}, champion_auc=0.74, floor=0.65)
    assert not worse.promote and worse.alias == "challenger"
    assert any("0.7400" in r for r in worse.reasons)
    low = decide({"a": 0.60}, champion_auc=None, floor=0.65)
    assert not low.promote and any("below the floor" in r for r in low.reasons)
    with pytest.raises(ValueError, match="no candidate"):
        decide({"a": float("nan")}, champion_auc=None, floor=0.5)


def test_metrics_report_nan_auc_for_a_single_class_instead_of_guessing():
    m = classification_metrics([1, 1, 1], [0.2, 0.4, 0.9], threshold=0.5)
    assert np.isnan(m["roc_auc"])
    assert m["recall"] == pytest.approx(1 / 3)
    perfect = classification_metrics([0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8], threshold=0.5)
    assert perfect["roc_auc"] == 1.0 and perfect["precision"] == 1.0
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == pytest.approx(0.0, abs=1e-9)
    assert expected_calibration_error([0, 0], [0.9, 0.9]) == pytest.approx(0.9)


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift():
    frame = synthetic_features(days=10, per_day=200)
    profile = build_profile(frame, NUMERIC, CATEGORICAL)
    same = feature_psi(frame, profile)
    assert max(same.values()) < 0.01
    shifted = frame.assign(temp=frame.temp + 3, carrier="AA")
    drift = feature_psi(shifted, profile)
    assert drift["temp"] > 1.0 and drift["carrier"] > 1.0
    assert drift["distance"] < 0.01


@pytest.mark.parametrize(
    "builder", [models.logistic_regression, models.hist_gradient_boosting, models.random_forest]
)
def test_each_candidate_learns_and_scores_unseen_categories(builder):
    frame = synthetic_features(days=20, per_day=150)
    split = split_training_set(frame, date(2013, 3, 15), 14, 5)
    result = fit_and_evaluate(
        builder(), split[split.split == "train"], split[split.split == "holdout"], threshold=0.5
    )
    assert result.metrics["roc_auc"] > 0.65
    unseen = frame.head(3).assign(carrier="ZZ", dest=None)
    scored = score(result.model, unseen, 0.5, version="7", model_name="m")
    assert list(scored.columns) == [
        "flight_id",
        "flight_date",
        "late_probability",
        "predicted_late",
        "model_name",
        "model_version",
    ]
    assert scored.late_probability.between(0, 1).all() and (scored.model_version == "7").all()
    # Scoring skips the pipeline's own finiteness checks: the probabilities must still be exactly
    # what predict_proba gives, missing values included.
    with_gaps = frame.head(40).copy()
    with_gaps.loc[with_gaps.index[::3], ["temp", "visib"]] = np.nan
    expected = result.model.predict_proba(feature_frame(with_gaps))[:, 1]
    scored = score(result.model, with_gaps, 0.5, version="7", model_name="m")
    np.testing.assert_array_equal(scored.late_probability.to_numpy(), expected)
    assert scored.flight_id.tolist() == with_gaps.flight_id.tolist()


def test_missing_categories_reach_the_model_as_none_and_whole_strings_pass_unchanged():
    frame = synthetic_features(days=1).head(4)
    frame["carrier"] = pd.Series(["AA", np.nan, pd.NA, None], index=frame.index, dtype=object)
    frame["origin"] = pd.Series(["JFK", "LGA", "EWR", "JFK"], index=frame.index, dtype=object)
    x = feature_frame(frame)
    assert x["carrier"].tolist() == ["AA", None, None, None]
    assert x["origin"].tolist() == ["JFK", "LGA", "EWR", "JFK"]
    assert frame["carrier"].isna().sum() == 3  # the caller's frame is left as it was


def test_a_forest_fitted_on_several_threads_scores_exactly_like_one_fitted_on_one():
    frame = synthetic_features(days=10, per_day=100)
    frame = frame[frame.arrived_late.notna()]
    x, y = feature_frame(frame), labels(frame)
    parallel = models.fit(models.random_forest(n_estimators=24), x, y, threads=os.cpu_count() or 2)
    serial = models.random_forest(n_estimators=24).fit(x, y)
    assert parallel.get_params()["model__n_jobs"] == 1  # scored on one core: the same bits each call
    np.testing.assert_array_equal(parallel.predict_proba(x), serial.predict_proba(x))


class _ThreadProbe:
    """An estimator that records the thread pools it was fitted under."""

    def fit(self, x, y):
        from threadpoolctl import threadpool_info

        self.pools = {pool["user_api"]: pool["num_threads"] for pool in threadpool_info()}
        return self


@pytest.mark.parametrize("threads", [1, 2])
def test_a_fit_uses_no_more_threads_than_the_setting_allows(threads, monkeypatch):
    """Candidates fit at once on shared cores: a fit beyond its share only spins."""
    from sklearn.pipeline import Pipeline

    from ml_platform.config import load_settings
    from ml_platform.resources import build_resources

    monkeypatch.setenv("ML_PLATFORM_FIT_THREADS", str(threads))
    policy = build_resources(load_settings())["policy"]
    assert policy.fit_threads == threads
    probe = models.fit(Pipeline([("model", _ThreadProbe())]), [[0.0]], [0], policy.fit_threads)
    pools = probe.named_steps["model"].pools
    assert pools and all(n == threads for n in pools.values()), pools
    frame = synthetic_features(days=4)
    frame = frame[frame.arrived_late.notna()]
    fitted = models.fit(models.random_forest(n_estimators=10), feature_frame(frame), labels(frame), threads)
    assert fitted.get_params()["model__n_jobs"] == 1


def test_a_bad_thread_setting_is_refused_by_name(monkeypatch):
    from ml_platform.config import SettingsError, load_settings

    monkeypatch.setenv("ML_PLATFORM_FIT_THREADS", "0")
    with pytest.raises(SettingsError, match="ML_PLATFORM_FIT_THREADS=0"):
        load_settings()


def test_infinite_feature_values_are_refused_by_name():
    """Scoring trusts feature_frame's check, so an infinity must stop there, named."""
    frame = synthetic_features(days=1).head(5)
    frame.loc[frame.index[2], "distance"] = np.inf
    with pytest.raises(ValueError, match=r"feature column\(s\) distance hold infinite values"):
        feature_frame(frame)


def test_fit_refuses_an_empty_window_with_a_clear_error():
    frame = synthetic_features(days=3)
    with pytest.raises(ValueError, match="training window holds no labelled flights"):
        fit_and_evaluate(models.logistic_regression(), frame.iloc[0:0], frame, 0.5)
    assert set(FEATURES) <= set(frame.columns)
