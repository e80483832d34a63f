"""Freshness checks as time moves (frozen clocks, no sleeping), and failure alerts over HTTP."""

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest
from dagster._core.test_utils import freeze_time

from ml_platform.automation.alerts import Notifier
from ml_platform.automation.freshness import DAILY_KEYS, partition_freshness_checks
from ml_platform.definitions import build_definitions
from ml_platform.keys import CHAMPION_MODEL, HGB, PREDICTIONS, RAW_FLIGHTS

FLIGHTS = RAW_FLIGHTS


def run_freshness_checks(defs, instance):
    checks = dg.AssetSelection.checks_for_assets(*DAILY_KEYS) & dg.AssetSelection.checks(
        *partition_freshness_checks
    )
    result = dg.materialize(
        [*defs.assets, *defs.asset_checks], selection=checks, instance=instance, resources=defs.resources
    )
    return {e.asset_key: e for e in result.get_asset_check_evaluations()}


def test_partition_freshness_passes_and_fails_as_the_clock_moves(settings, instance):
    defs = build_definitions(settings)
    with freeze_time(datetime(2013, 3, 10, 8, 0, tzinfo=UTC)):
        for key in DAILY_KEYS:
            for day in ("2013-03-08", "2013-03-09"):
                instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=day))
        # The last deadline (03-09 09:00) wanted 2013-03-08, and it is in: fresh.
        assert run_freshness_checks(defs, instance)[FLIGHTS].passed
    with freeze_time(datetime(2013, 3, 11, 9, 30, tzinfo=UTC)):
        # Past the 03-11 09:00 deadline, 2013-03-10 should be in and never arrived: stale.
        evaluation = run_freshness_checks(defs, instance)[FLIGHTS]
        assert not evaluation.passed
        assert evaluation.severity == dg.AssetCheckSeverity.WARN
    with freeze_time(datetime(2013, 3, 11, 9, 45, tzinfo=UTC)):
        instance.report_runless_asset_event(dg.AssetMaterialization(FLIGHTS, partition="2013-03-10"))
        assert run_freshness_checks(defs, instance)[FLIGHTS].passed


def test_freshness_policies_are_applied_once_at_the_root(settings):
    specs = {s.key: s for s in build_definitions(settings).resolve_all_asset_specs()}
    assert specs[FLIGHTS].freshness_policy is not None
    assert specs[CHAMPION_MODEL].freshness_policy.fail_window.to_timedelta().days == 8
    assert specs[PREDICTIONS].automation_condition is not None
    assert specs[HGB.key].freshness_policy is None


class _Receiver(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server API
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append((self.path, self.headers["Content-Type"], json.loads(body)))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook():
    _Receiver.received = []
    server = HTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/alerts", _Receiver.received
    server.shutdown()


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
