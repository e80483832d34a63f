"""Declarative automation: the named conditions, defined once and applied at the root.

``eager()`` only considers the latest time window (by wall clock), which for replayed or
late-arriving days is the wrong one; these conditions look at every partition whose inputs
changed, and never re-request while inputs are missing or running.
"""

from dagster import AssetSelection, AutomationCondition, AutomationConditionSensorDefinition

from ml_platform.automation.defaults import sensor_status
from ml_platform.config import Settings
from ml_platform.keys import CHAMPION_MODEL, FEATURE_DRIFT, PREDICTION_QUALITY, PREDICTIONS

_CHAMPION = AssetSelection.assets(CHAMPION_MODEL)

_READY = (
    ~AutomationCondition.any_deps_missing()
    & ~AutomationCondition.any_deps_in_progress()
    & ~AutomationCondition.in_progress()
)
# A dependency's data version changed (a re-run with unchanged inputs keeps its version, so it is
# no news), or it is being requested in this same evaluation.
_DEP_CHANGED = AutomationCondition.data_version_changed() | AutomationCondition.will_be_requested()

# A day's features changed: score that day.
FEATURES_CHANGED = (
    AutomationCondition.any_deps_match(_DEP_CHANGED).ignore(_CHAMPION).with_label("features_changed")
)

# A new champion appeared: score the days nobody has scored yet. Days already scored keep the
# predictions that were made before their outcomes were known, so monitoring stays honest.
NEW_CHAMPION_FOR_UNSCORED_DAY = (
    AutomationCondition.any_deps_match(AutomationCondition.data_version_changed()).allow(_CHAMPION)
    & AutomationCondition.missing()
).with_label("new_champion_for_unscored_day")

# The asset's own code changed: recompute what exists, so nothing stays stale.
OWN_CODE_CHANGED = (AutomationCondition.code_version_changed() & ~AutomationCondition.missing()).with_label(
    "own_code_changed"
)

# Predictions carry the feature SQL in their code version. When that SQL is what changed, the
# features' code changed in the same tick: re-scoring now would use the old features and score
# every day twice. The rebuilt features bring the re-score through ``features_changed``.
# (The dependency operand comes first and is always evaluated, so its cursor stays current.)
OWN_CODE_CHANGED_NOT_FEATURES = (
    ~AutomationCondition.any_deps_match(AutomationCondition.code_version_changed()).ignore(_CHAMPION)
    & OWN_CODE_CHANGED
).with_label("own_code_changed_not_features")

PREDICT_ON_NEW_FEATURES_OR_CHAMPION = (
    (FEATURES_CHANGED | NEW_CHAMPION_FOR_UNSCORED_DAY | OWN_CODE_CHANGED_NOT_FEATURES).since_last_handled()
    & _READY
).with_label("predict_on_new_features_or_champion")

# Monitoring follows the day's predictions and features; a champion change alone is no news.
FOLLOW_UPSTREAM_DAY = (
    (
        AutomationCondition.any_deps_match(_DEP_CHANGED).ignore(_CHAMPION) | OWN_CODE_CHANGED
    ).since_last_handled()
    & _READY
).with_label("follow_upstream_day")

CONDITIONS_BY_KEY = {
    PREDICTIONS: PREDICT_ON_NEW_FEATURES_OR_CHAMPION,
    PREDICTION_QUALITY: FOLLOW_UPSTREAM_DAY,
    FEATURE_DRIFT: FOLLOW_UPSTREAM_DAY,
}


def build_automation_condition_sensor(settings: Settings) -> AutomationConditionSensorDefinition:
    return AutomationConditionSensorDefinition(
        "automation_condition_sensor",
        target=AssetSelection.assets(*CONDITIONS_BY_KEY),
        default_status=sensor_status(settings),
        minimum_interval_seconds=15,
        description="Evaluates the named automation conditions of predictions and monitoring.",
    )
