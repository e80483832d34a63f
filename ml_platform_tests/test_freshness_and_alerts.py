"""Freshness checks on the wall clock (open-ended partitions, frozen clocks, no sleeping) and on
the data's own clock (the packaged 2013 and its replay), and failure alerts over HTTP."""

import dataclasses
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ml_platform.automation import freshness
from ml_platform.automation.alerts import Notifier
from ml_platform.automation.freshness import CHECK_KEYS, DAILY_KEYS, DEADLINE_HOUR, data_clock, due_day, judge
from ml_platform.automation.policy import OWNERS_BY_GROUP
from ml_platform.definitions import build_definitions
from ml_platform.ingestion.landing import land_days
from ml_platform.keys import (
    CHAMPION_MODEL,
    FLIGHT_FEATURES,
    HGB,
    NOWCAST_CHAMPION,
    PREDICTIONS,
    RAW_DAILY,
    RAW_FLIGHTS,
)
from ml_platform_tests.ml_support import materialize_features
from ml_platform_tests.services import webhook_receiver

FLIGHTS = RAW_FLIGHTS


def run_freshness_checks(defs, instance):
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks],
        selection=dg.AssetSelection.checks(*CHECK_KEYS),
        instance=instance,
        resources=defs.resources,
    )
    return {e.asset_key: e for e in result.get_asset_check_evaluations()}


def report(instance, keys, *days):
    for key in keys:
        for day in days:
            instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=day))


def test_open_ended_partitions_are_judged_on_the_wall_clock(settings, instance, monkeypatch):
    defs = build_definitions(dataclasses.replace(settings, partition_end=None))

    def at(*when):
        monkeypatch.setattr(freshness, "wall_clock", lambda: datetime(*when, tzinfo=UTC))

    report(instance, DAILY_KEYS, "2013-03-08", "2013-03-09")
    at(2013, 3, 10, 8, 0)
    # The last deadline (03-09 09:00) wanted 2013-03-08, and it is in: fresh.
    assert run_freshness_checks(defs, instance)[FLIGHTS].passed
    at(2013, 3, 11, 9, 30)
    # Past the 03-11 09:00 deadline, 2013-03-10 should be in and never arrived: stale.
    evaluation = run_freshness_checks(defs, instance)[FLIGHTS]
    assert not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "2013-03-10 was due" in evaluation.description and "wall clock" in evaluation.description
    report(instance, [FLIGHTS], "2013-03-10")
    assert run_freshness_checks(defs, instance)[FLIGHTS].passed


def test_a_correct_materialization_of_2013_days_passes_every_check(settings, instance):
    """Years after 2013 on the wall clock: the packaged data is judged on its own clock."""
    result = materialize_features(settings, instance, "2013-01-01", "2013-01-02")
    evaluations = result.get_asset_check_evaluations()
    assert [(e.asset_check_key, e.description) for e in evaluations if not e.passed] == []
    freshness = {e.asset_key: e for e in evaluations if e.check_name == "freshness_check"}
    assert set(freshness) == {*RAW_DAILY, FLIGHT_FEATURES}
    for evaluation in freshness.values():
        # Upstream has delivered up to 01-02, so 01-01 is due: judged, and in.
        assert evaluation.description.startswith("Fresh: 2013-01-01 is in"), evaluation.description
        assert evaluation.metadata["expected_partition"].value == "2013-01-01"


def test_a_replay_that_delivers_days_the_platform_never_ingests_makes_them_overdue(
    landing_settings, instance
):
    defs = build_definitions(landing_settings)
    report(instance, DAILY_KEYS, "2013-01-01", "2013-01-02")
    # Upstream delivered two days; the end of the second is "now": 2013-01-01 is due, and in.
    land_days(date(2013, 1, 1), 2, landing_settings.landing_root, echo=lambda _: None)
    assert all(e.passed for e in run_freshness_checks(defs, instance).values())
    # The replay delivers two more days that are never ingested: 2013-01-03 is overdue.
    land_days(date(2013, 1, 3), 2, landing_settings.landing_root, reference=False, echo=lambda _: None)
    evaluations = run_freshness_checks(defs, instance)
    assert set(evaluations) == set(DAILY_KEYS)
    for key, evaluation in evaluations.items():
        assert not evaluation.passed, key
        assert "2013-01-03 was due" in evaluation.description
        assert "upstream has delivered up to 2013-01-04" in evaluation.description
    report(instance, [*RAW_DAILY, FLIGHT_FEATURES], "2013-01-03")
    evaluations = run_freshness_checks(defs, instance)
    assert {k for k, e in evaluations.items() if not e.passed} == {PREDICTIONS}


def test_the_sensor_runs_the_checks_once_per_move_of_the_due_day(landing_settings, instance):
    defs = build_definitions(landing_settings)
    sensor = defs.get_sensor_def("freshness_checks_sensor")
    landing = defs.resources["landing"]

    def tick(cursor):
        context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"landing": landing})
        return sensor(context), context.cursor

    land_days(date(2013, 1, 1), 3, landing_settings.landing_root, echo=lambda _: None)
    request, cursor = tick(None)
    assert isinstance(request, dg.RunRequest) and cursor == "2013-01-02"
    assert isinstance(tick(cursor)[0], dg.SkipReason)
    land_days(date(2013, 1, 4), 1, landing_settings.landing_root, reference=False, echo=lambda _: None)
    request, cursor = tick(cursor)
    assert isinstance(request, dg.RunRequest) and cursor == "2013-01-03"
    result = defs.resolve_job_def(sensor.job_name).execute_in_process(instance=instance)
    assert {e.asset_check_key for e in result.get_asset_check_evaluations()} == set(CHECK_KEYS)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)))
def test_the_due_day_is_the_newest_whose_deadline_has_passed(now):
    due = due_day(now)
    deadline = datetime.combine(due + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    deadline += timedelta(hours=DEADLINE_HOUR)
    assert deadline <= now < deadline + timedelta(days=1)


@given(
    delivered=st.dates(date(2013, 1, 1), date(2013, 12, 31)),
    materialized=st.sets(st.dates(date(2013, 1, 1), date(2013, 12, 31)), max_size=40),
)
def test_on_the_data_clock_exactly_the_day_before_the_newest_delivery_is_due(delivered, materialized):
    verdict = judge(data_clock(delivered), materialized, date(2013, 1, 1), date(2014, 1, 1))
    expected = delivered - timedelta(days=1)
    if expected < date(2013, 1, 1):
        assert verdict.passed and verdict.expected_day is None
    else:
        assert verdict.expected_day == expected
        assert verdict.passed == (expected in materialized)


def test_nothing_is_due_before_upstream_delivers_anything():
    assert judge(data_clock(None), set(), date(2013, 1, 1), date(2014, 1, 1)).passed


def test_freshness_policies_are_applied_once_at_the_root(settings):
    closed = {s.key: s for s in build_definitions(settings).resolve_all_asset_specs()}
    # The packaged year ends in the past: wall-clock windows would call every day stale.
    assert closed[FLIGHTS].freshness_policy is None
    assert closed[CHAMPION_MODEL].freshness_policy.fail_window.to_timedelta().days == 8
    assert closed[NOWCAST_CHAMPION].freshness_policy.fail_window.to_timedelta().days == 8
    assert closed[PREDICTIONS].automation_condition is not None
    assert closed[HGB.key].freshness_policy is None
    live = dataclasses.replace(settings, partition_end=None)
    open_ended = {s.key: s for s in build_definitions(live).resolve_all_asset_specs()}
    assert open_ended[FLIGHTS].freshness_policy.fail_window.to_timedelta().total_seconds() == 30 * 3600
    # Every asset has the owners and the domain tag of its group, set in the same one place.
    for spec in closed.values():
        assert spec.owners == OWNERS_BY_GROUP[spec.group_name], spec.key
        assert spec.tags["domain"] == spec.group_name, spec.key


@pytest.fixture
def webhook():
    with webhook_receiver() as hook:
        yield hook


def test_a_failed_run_posts_its_step_and_error_to_the_webhook(settings, instance, webhook):
    url, received = webhook
    alert_on_run_failure = build_definitions(settings).get_sensor_def("alert_on_run_failure")

    @dg.asset(key=["raw", "broken"])
    def broken():
        raise ValueError("landed file flights/2013-01-05.parquet is truncated")

    result = dg.materialize([broken], instance=instance, raise_on_error=False)
    assert not result.success
    run = instance.get_run_by_id(result.run_id)
    records = instance.get_records_for_run(result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    failure = records[0].event_log_entry.dagster_event
    context = dg.build_run_status_sensor_context(
        sensor_name="alert_on_run_failure", dagster_event=failure, dagster_instance=instance, dagster_run=run
    ).for_run_failure()
    alert_on_run_failure(context, notifier=Notifier(webhook_url=url))
    assert len(received) == 1
    path, content_type, payload = received[0]
    assert path == "/hooks/alerts" and content_type == "application/json"
    assert result.run_id in payload["text"]
    assert f"{settings.dagster_url}/runs/{result.run_id}" in payload["text"]
    assert "failed step raw__broken" in payload["text"]
    assert "flights/2013-01-05.parquet is truncated" in payload["text"]
    assert payload["blocks"][0]["text"]["text"].startswith("Run failed")


def test_without_a_webhook_the_alert_goes_to_the_log(caplog):
    Notifier().notify("Run failed: x", ["run: 123"])
    assert "Run failed: x" in caplog.text and "run: 123" in caplog.text
