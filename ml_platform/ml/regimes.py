"""The point-in-time feature regimes: which columns of ``features.day_ahead_features`` and
``features.nowcast_features`` a model sees, and the gradient-boosting pipeline over them.

Kept apart from ``frames.FEATURES`` (the columns of ``flight_features``, which the candidate
models and the served champion read) so both can be measured without changing the served
model."""

from dataclasses import dataclass

from ml_platform.ml.models import SEED, _ordinal_categoricals

CATEGORICAL = ["carrier", "origin", "dest"]
SCHEDULE = [
    "distance",
    "sched_dep_hour",
    "sched_dep_minute",
    "sched_block_minutes",
    "day_of_week",
    "month",
    "day_of_year",
    "days_to_holiday",
    "prev_turn_minutes",
    "prev_ground_buffer_minutes",
    "tail_leg",
    "tail_legs",
    "origin_day_departures",
    "origin_hour_departures",
    "carrier_hour_departures",
    "carrier_day_departures",
    "dest_day_flights",
]
# The history groups of macros/pit_history.sql, each with its count, late share and mean delay.
HISTORY_GROUPS = [
    "origin_28d",
    "carrier_28d",
    "dest_28d",
    "route_28d",
    "flight_28d",
    "flight_7d",
    "origin_1d",
    "carrier_1d",
    "dest_1d",
    "dep_origin_1d",
    "dep_carrier_28d",
]
HISTORY = [f"{group}_{stat}" for group in HISTORY_GROUPS for stat in ("n", "late_rate", "delay")]
# The origin's weather observed before the prediction instant (both regimes).
WEATHER = [
    "precip_3h",
    "precip_12h",
    "wind_speed_3h",
    "visib_last",
    "temp_last",
    "humid_last",
    "pressure_last",
    "pressure_change_12h",
    "visib_min_12h",
]
NOW = [
    "origin_departed_today",
    "origin_dep_delay_today",
    "origin_dep_late_share_today",
    "origin_dep_delay_2h",
    "origin_pending",
    "origin_pending_minutes",
    "dest_arrived_today",
    "dest_arr_delay_today",
    "dest_late_share_today",
    "dest_arr_delay_3h",
    "carrier_arr_delay_today",
    "carrier_late_share_today",
    "carrier_dep_delay_today",
    "origin_dep_delay_1h",
    "dest_late_share_3h",
    "carrier_origin_dep_delay_today",
    "prev_departed",
    "prev_arrived",
    "prev_dep_delay",
    "prev_arr_delay",
    "prev_known_delay",
    "prev_slack_minutes",
    "prev_projected_delay",
]


@dataclass(frozen=True)
class Regime:
    """A feature table and the columns a model reads from it."""

    name: str
    table: str
    categorical: list[str]
    numeric: list[str]

    @property
    def columns(self) -> list[str]:
        return self.categorical + self.numeric


DAY_AHEAD = Regime("day_ahead", "day_ahead_features", CATEGORICAL, SCHEDULE + HISTORY + WEATHER)
NOWCAST = Regime("nowcast", "nowcast_features", CATEGORICAL, SCHEDULE + HISTORY + WEATHER + NOW)
REGIMES = {r.name: r for r in (DAY_AHEAD, NOWCAST)}


def hist_gradient_boosting(
    regime: Regime,
    learning_rate: float = 0.1,
    max_iter: int = 150,
    max_leaf_nodes: int = 31,
    min_samples_leaf: int = 20,
    l2_regularization: float = 0.0,
):
    """The candidates' gradient boosting (native categorical splits) over a regime's columns."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    pre = ColumnTransformer(
        [("cat", _ordinal_categoricals(), regime.categorical), ("num", "passthrough", regime.numeric)],
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    model = HistGradientBoostingClassifier(
        learning_rate=learning_rate,
        max_iter=max_iter,
        max_leaf_nodes=max_leaf_nodes,
        min_samples_leaf=min_samples_leaf,
        l2_regularization=l2_regularization,
        categorical_features=regime.categorical,
        early_stopping=False,
        random_state=SEED,
    )
    return Pipeline([("features", pre), ("model", model)])
