"""Declarative automation evaluated against a real instance, tick by tick."""

import dagster as dg

from ml_platform.definitions import build_definitions
from ml_platform.keys import CHAMPION_MODEL as CHAMPION
from ml_platform.keys import FEATURE_DRIFT as DRIFT
from ml_platform.keys import FLIGHT_FEATURES as FEATURES
from ml_platform.keys import PREDICTION_QUALITY as QUALITY
from ml_platform.keys import PREDICTIONS


def materialized(instance, key, *partitions, version: str | None = None):
    """A materialization with a data version (new content unless ``version`` repeats one)."""
    global _counter
    for partition in partitions or [None]:
        _counter += 1
        tags = {"dagster/data_version": version or f"v{_counter}"}
        instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=partition, tags=tags))


_counter = 0


def requested(result) -> dict[dg.AssetKey, set[str]]:
    out: dict[dg.AssetKey, set[str]] = {}
    for key in (PREDICTIONS, QUALITY, DRIFT):
        keys = result.get_requested_partitions(key)
        if keys:
            out[key] = set(keys)
    return out


def test_predictions_follow_new_features_and_a_new_champion_scores_only_unscored_days(settings, instance):
    defs = build_definitions(settings)
    selection = dg.AssetSelection.assets(PREDICTIONS, QUALITY, DRIFT)
    materialized(instance, CHAMPION)
    materialized(instance, FEATURES, "2013-01-03")
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection)
    assert requested(first) == {}  # nothing is new at the first look

    materialized(instance, FEATURES, "2013-01-04")
    second = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=selection, cursor=first.cursor
    )
    # The day's predictions, and the quality that follows them in the same tick.
    assert requested(second) == {
        PREDICTIONS: {"2013-01-04"},
        QUALITY: {"2013-01-04"},
    }

    materialized(instance, PREDICTIONS, "2013-01-04")
    materialized(instance, QUALITY, "2013-01-04")
    third = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=selection, cursor=second.cursor
    )
    assert requested(third) == {}
    materialized(instance, CHAMPION)  # a new champion is registered
    fourth = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=selection, cursor=third.cursor
    )
    # 2013-01-03 was never scored; 2013-01-04 keeps what the old champion predicted.
    assert requested(fourth) == {
        PREDICTIONS: {"2013-01-03"},
        QUALITY: {"2013-01-03"},
    }

    quiet = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=selection, cursor=fourth.cursor
    )
    assert requested(quiet) == {}


def test_a_rerun_with_unchanged_data_version_requests_nothing_downstream(settings, instance):
    defs = build_definitions(settings)
    selection = dg.AssetSelection.assets(PREDICTIONS, QUALITY)
    materialized(instance, CHAMPION, version="champion-1")
    materialized(instance, FEATURES, "2013-01-04", version="features-a")
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection)
    materialized(instance, PREDICTIONS, "2013-01-04", version="p1")
    materialized(instance, QUALITY, "2013-01-04", version="q1")
    settle = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=selection, cursor=first.cursor
    )
    # The same features materialized again (a skipped, unchanged rebuild): nothing to do.
    materialized(instance, FEATURES, "2013-01-04", version="features-a")
    same = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=selection, cursor=settle.cursor
    )
    assert requested(same) == {}
    # Changed content: exactly that day's predictions and what follows them.
    materialized(instance, FEATURES, "2013-01-04", version="features-b")
    changed = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=selection, cursor=same.cursor
    )
    assert requested(changed) == {
        PREDICTIONS: {"2013-01-04"},
        QUALITY: {"2013-01-04"},
    }


def test_drift_follows_a_full_week_of_features(settings, instance):
    defs = build_definitions(settings)
    selection = dg.AssetSelection.assets(DRIFT)
    materialized(instance, CHAMPION)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection)
    days = [f"2013-02-{d:02d}" for d in range(1, 8)]
    materialized(instance, FEATURES, *days)
    second = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, asset_selection=selection, cursor=first.cursor
    )
    drift = requested(second).get(DRIFT, set())
    assert "2013-02-07" in drift
    assert "2013-02-08" not in drift


def redeployed(defs, *keys):
    """The same definitions after a deploy that changed these assets' code."""
    changed = set(keys)

    def edit(spec):
        if spec.key not in changed:
            return spec
        return spec.replace_attributes(code_version=f"{spec.code_version}-edited")

    return defs.map_asset_specs(func=edit)


def test_a_feature_sql_edit_rescores_once_the_features_are_rebuilt_not_before(settings, instance):
    defs = build_definitions(settings)
    selection = dg.AssetSelection.assets(PREDICTIONS, QUALITY)
    materialized(instance, CHAMPION)
    materialized(instance, FEATURES, "2013-01-03", "2013-01-04")
    materialized(instance, PREDICTIONS, "2013-01-03", "2013-01-04")
    materialized(instance, QUALITY, "2013-01-03", "2013-01-04")
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection)
    assert requested(settled) == {}

    # The SQL edit changes the code version of the features and, through it, of predictions
    # and the champion: scoring the old features now would only be done again after the rebuild.
    edited = redeployed(defs, FEATURES, PREDICTIONS, CHAMPION)
    after_edit = dg.evaluate_automation_conditions(
        defs=edited, instance=instance, asset_selection=selection, cursor=settled.cursor
    )
    assert requested(after_edit) == {}

    materialized(instance, FEATURES, "2013-01-04")  # rebuilt with the new SQL
    after_rebuild = dg.evaluate_automation_conditions(
        defs=edited, instance=instance, asset_selection=selection, cursor=after_edit.cursor
    )
    assert requested(after_rebuild) == {
        PREDICTIONS: {"2013-01-04"},
        QUALITY: {"2013-01-04"},
    }


def test_an_edit_of_the_scoring_code_alone_rescores_every_scored_day(settings, instance):
    defs = build_definitions(settings)
    selection = dg.AssetSelection.assets(PREDICTIONS, QUALITY)
    materialized(instance, CHAMPION)
    materialized(instance, FEATURES, "2013-01-03", "2013-01-04", "2013-01-05")
    materialized(instance, PREDICTIONS, "2013-01-03", "2013-01-04")
    materialized(instance, QUALITY, "2013-01-03", "2013-01-04")
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection)
    assert requested(settled) == {}

    edited = redeployed(defs, PREDICTIONS)
    after_edit = dg.evaluate_automation_conditions(
        defs=edited, instance=instance, asset_selection=selection, cursor=settled.cursor
    )
    # Every stored day is re-scored (not the never-scored 2013-01-05), quality follows.
    assert requested(after_edit) == {
        PREDICTIONS: {"2013-01-03", "2013-01-04"},
        QUALITY: {"2013-01-03", "2013-01-04"},
    }
    quiet = dg.evaluate_automation_conditions(
        defs=edited, instance=instance, asset_selection=selection, cursor=after_edit.cursor
    )
    assert requested(quiet) == {}
