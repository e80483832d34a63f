"""A step on a Celery worker that is lost fails its run instead of leaving it waiting forever.

dagster-celery's executor waits on each step's Celery result. A worker killed outright (its
machine lost, an out-of-memory kill of the whole worker) never sends one, and the run, whose own
process is alive and polling, stays in progress: run monitoring sees nothing wrong. (A worker
whose pool process alone dies is reported by Celery itself, as ``WorkerLostError``.)

Here each step's result is watched: once the step has started on a worker (the worker records
that in the run's event log, with its node name), that worker is pinged every few seconds; after
several pings in a row without a reply the step fails, naming the worker, and the run fails as
for any step error (then run retries and alerts apply). A step still queued is not watched:
waiting for a free worker is not a loss. (The result backend's ``STARTED`` state is no help: with
``rpc://`` it is consumed while the run waits for another step's result.)
"""

from __future__ import annotations

import time

from dagster import (
    DagsterEventType,
    DagsterInstance,
    ExecutorDefinition,
    executor,
    multiple_process_executor_requirements,
)
from dagster._core.execution.retries import RetryMode
from dagster_celery import celery_executor
from dagster_celery.core_execution_loop import core_celery_execution_loop
from dagster_celery.executor import CELERY_CONFIG, CeleryExecutor, _submit_task

from ml_platform.runtime.guard import CELERY_WATCH

PING_EVERY_SECONDS = 5.0
PING_TIMEOUT_SECONDS = 2.0
# A worker busy importing or under load may miss a ping; three in a row is a lost worker.
MISSED_PINGS = 3
# The metadata entry dagster-celery's task puts on the engine event it records as a step starts.
WORKER_METADATA = "Celery worker"


class CeleryWorkerLost(RuntimeError):
    """The Celery worker running a step stopped answering."""


class WatchedResult:
    """A step's ``AsyncResult`` that also turns ready, failing, when its worker is lost."""

    def __init__(self, app, result, step_key: str, instance: DagsterInstance, run_id: str):
        self._app, self._result, self._step_key = app, result, step_key
        self._instance, self._run_id = instance, run_id
        self._worker_name: str | None = None
        self._next_ping = time.monotonic() + PING_EVERY_SECONDS
        self._missed = 0
        self._lost: str | None = None

    def ready(self) -> bool:
        if self._lost or self._result.ready():
            return True
        if time.monotonic() < self._next_ping:
            return False
        self._next_ping = time.monotonic() + PING_EVERY_SECONDS
        worker = self._worker()
        if worker is None:
            return False
        replies = self._app.control.ping(destination=[worker], timeout=PING_TIMEOUT_SECONDS)
        self._missed = 0 if replies else self._missed + 1
        if self._missed >= MISSED_PINGS:
            self._lost = worker
        return self._lost is not None

    def _worker(self) -> str | None:
        """The node name of the worker that started the step, from the run's event log."""
        if self._worker_name is None:
            records = self._instance.get_records_for_run(
                self._run_id, of_type=DagsterEventType.ENGINE_EVENT
            ).records
            for record in records:
                event = record.event_log_entry.dagster_event
                if event.step_key == self._step_key and event.engine_event_data:
                    name = event.engine_event_data.metadata.get(WORKER_METADATA)
                    self._worker_name = name.value if name is not None else self._worker_name
        return self._worker_name

    def get(self):
        if self._lost:
            raise CeleryWorkerLost(
                f'Celery worker {self._lost} stopped answering while it ran step "{self._step_key}" '
                f"(no reply to {MISSED_PINGS} pings, {PING_EVERY_SECONDS:.0f} s apart): the worker was "
                "lost; the step did not finish"
            )
        return self._result.get()

    def revoke(self) -> None:
        self._result.revoke()


def _submit_watched(app, plan_context, step, queue, priority, known_state) -> WatchedResult:
    result = _submit_task(app, plan_context, step, queue, priority, known_state)
    return WatchedResult(app, result, step.key, plan_context.instance, plan_context.run_id)


class WatchedCeleryExecutor(CeleryExecutor):
    def execute(self, plan_context, execution_plan):
        return core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=_submit_watched)


@executor(name="celery", config_schema=CELERY_CONFIG, requirements=multiple_process_executor_requirements())
def watched_celery_executor(init_context) -> WatchedCeleryExecutor:
    """dagster-celery's ``celery_executor`` (same name, same config) with the steps' workers watched,
    whatever the switch says: ``celery_steps_executor`` is what a deployment uses; upstream's
    dagster-celery suite (``make test-conformance-celery``) runs with this one patched in."""
    config = init_context.executor_config
    return WatchedCeleryExecutor(
        broker=config.get("broker"),
        backend=config.get("backend"),
        config_source=config.get("config_source"),
        include=config.get("include"),
        retries=RetryMode.from_config(config["retries"]),
    )


def celery_steps_executor() -> ExecutorDefinition:
    """dagster-celery's executor, its steps' workers watched where this accelerator is on."""
    return watched_celery_executor if CELERY_WATCH.on() else celery_executor
