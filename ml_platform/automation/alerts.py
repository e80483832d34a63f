"""Alerts on failed runs through a pluggable notifier: the log by default, or a webhook."""

import json
import urllib.request

from dagster import (
    ConfigurableResource,
    DefaultSensorStatus,
    RunFailureSensorContext,
    SensorDefinition,
    get_dagster_logger,
    run_failure_sensor,
)
from pydantic import Field

from ml_platform.config import Settings


class Notifier(ConfigurableResource):
    """Posts a Slack-compatible JSON message to ``webhook_url`` if set, else writes to the log.

    The URL is a secret: it comes from ``EnvVar("ML_PLATFORM_ALERT_WEBHOOK_URL")`` and is never
    logged or put in metadata.
    """

    webhook_url: str | None = Field(default=None, description="Incoming-webhook URL (secret)")
    timeout_seconds: float = Field(default=10.0)

    def notify(self, title: str, lines: list[str]) -> None:
        text = "\n".join([f"*{title}*", *lines])
        log = get_dagster_logger()
        if not self.webhook_url:
            log.error(text)
            return
        body = json.dumps(
            {
                "text": text,
                "blocks": [
                    {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:2900]}},
                ],
            }
        ).encode()
        request = urllib.request.Request(
            self.webhook_url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as resp:  # noqa: S310
                resp.read()
        except Exception as exc:  # noqa: BLE001 - an alert must not fail the sensor; log it instead
            log.error(f"alert webhook failed ({type(exc).__name__}); alert was: {text}")


def failure_lines(context: RunFailureSensorContext, dagster_url: str) -> list[str]:
    run = context.dagster_run
    lines = [
        f"run: {run.run_id} ({run.job_name})",
        f"link: {dagster_url.rstrip('/')}/runs/{run.run_id}",
    ]
    partition = run.tags.get("dagster/partition") or run.tags.get("dagster/asset_partition_range_start")
    if partition:
        lines.append(f"partition: {partition}")
    for event in context.get_step_failure_events():
        data = event.event_specific_data
        error = data.error if data else None
        while error is not None and error.cause is not None:  # the user's error, not Dagster's wrapper
            error = error.cause
        message = error.message.strip().splitlines()[0] if error and error.message else "unknown error"
        if data is not None and data.user_failure_data and data.user_failure_data.description:
            message = data.user_failure_data.description  # a Failure: its description is the headline
        lines.append(f"failed step {event.step_key}: {message[:500]}")
    if len(lines) == 2 + bool(partition) and context.failure_event.message:
        lines.append(f"error: {context.failure_event.message[:500]}")
    return lines


def build_alert_sensor(settings: Settings) -> SensorDefinition:
    """Always running: a failed run is news whatever else is switched on. Links point at the
    Dagster UI of ``settings``."""

    @run_failure_sensor(
        name="alert_on_run_failure",
        default_status=DefaultSensorStatus.RUNNING,
        description="Sends the failed run, its failed steps and their errors to the notifier.",
    )
    def alert_on_run_failure(context: RunFailureSensorContext, notifier: Notifier):
        notifier.notify(
            f"Run failed: {context.dagster_run.job_name}", failure_lines(context, settings.dagster_url)
        )

    return alert_on_run_failure
