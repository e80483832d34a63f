"""Every asset key of the platform, and the candidate models, declared once.

Assets, automation, tests and benchmarks import their keys from here, so a key is spelled in one
place. A candidate model is a builder in ``ml/models.py`` (its hyperparameters, their defaults and
bounds in its signature) and one ``Candidate`` in ``CANDIDATES``: that gives it its asset, its
launchpad config and its place in model selection.
"""

from collections.abc import Callable
from dataclasses import dataclass

from dagster import AssetKey

from ml_platform.ml import models

RAW = {table: AssetKey(["raw", table]) for table in ("flights", "weather", "planes", "airports", "airlines")}
RAW_FLIGHTS = RAW["flights"]
RAW_WEATHER = RAW["weather"]
RAW_PLANES = RAW["planes"]
RAW_DAILY = (RAW_FLIGHTS, RAW_WEATHER)

# The intraday feed (ingestion/intraday.py): the schedule of a day, delivered before it, and what
# happened, hour by hour (UTC hours).
# Their assets and the point-in-time features built from them form the group `intraday`: a run of
# the daily tables (group `ingestion`, `features`) never picks up an hourly partition.
INTRADAY_GROUP = "intraday"
RAW_SCHEDULE = AssetKey(["raw", "schedule"])
RAW_HOURLY = {table: AssetKey(["raw", table]) for table in ("departures", "arrivals", "observations")}
RAW_DEPARTURES = RAW_HOURLY["departures"]
RAW_ARRIVALS = RAW_HOURLY["arrivals"]
RAW_OBSERVATIONS = RAW_HOURLY["observations"]

FLIGHT_FEATURES = AssetKey(["features", "flight_features"])
# Point-in-time features: what was known before the day (day-ahead) and h hours before each
# departure (nowcast).
DAY_AHEAD_FEATURES = AssetKey(["features", "day_ahead_features"])
NOWCAST_FEATURES = AssetKey(["features", "nowcast_features"])


def training(name: str) -> AssetKey:
    """A key of the training group (the training set, the candidates, selection, champion)."""
    return AssetKey(["training", name])


TRAINING_SET = training("training_set")
MODEL_SELECTION = training("model_selection")
CHAMPION_MODEL = training("champion_model")

PREDICTIONS = AssetKey(["serving", "predictions"])


def nowcast(name: str) -> AssetKey:
    """A key of the nowcast group: its own training set, candidate, champion and hourly serving."""
    return AssetKey(["nowcast", name])


NOWCAST_TRAINING_SET = nowcast("training_set")
NOWCAST_CANDIDATE = nowcast("candidate_hgb")
NOWCAST_CHAMPION = nowcast("champion_model")
NOWCAST_PREDICTIONS = nowcast("predictions")

PREDICTION_QUALITY = AssetKey(["monitoring", "prediction_quality"])
FEATURE_DRIFT = AssetKey(["monitoring", "feature_drift"])
BACKTEST = AssetKey(["monitoring", "backtest"])


def op_name(key: AssetKey) -> str:
    """The op (and step) that computes an asset, as named in run config and run results."""
    return key.to_python_identifier()


@dataclass(frozen=True)
class Candidate:
    """One candidate model: ``build`` takes its hyperparameters as keyword arguments and returns a
    scikit-learn Pipeline from the feature frame to a probability."""

    name: str
    build: Callable
    description: str

    @property
    def key(self) -> AssetKey:
        return training(f"candidate_{self.name}")

    @property
    def asset_name(self) -> str:
        """The last part of the key: the name the model is tracked and compared under."""
        return self.key.path[-1]


LOGREG = Candidate(
    "logreg",
    models.logistic_regression,
    "Logistic regression on one-hot carriers and airports and scaled numeric features.",
)
HGB = Candidate(
    "hgb", models.hist_gradient_boosting, "Histogram gradient boosting with native categorical splits."
)
FOREST = Candidate("forest", models.random_forest, "Random forest on ordinal-encoded categoricals.")

CANDIDATES: tuple[Candidate, ...] = (LOGREG, HGB, FOREST)
