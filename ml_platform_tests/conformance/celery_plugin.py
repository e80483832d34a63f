"""pytest plugin of the dagster-celery run (``-p ml_platform_tests.conformance.celery_plugin``).

The runner collects upstream's test modules as they are, with ``--noconftest``: upstream's
conftest starts RabbitMQ in Docker (and imports its unpublished ``dagster_test`` package for an
image no test here uses). This plugin gives its fixtures instead, on this machine's RabbitMQ:

- before any test module is imported (dagster-celery reads its broker at import), each pytest
  process makes a virtual host of its own and points ``DAGSTER_CELERY_BROKER_HOST`` at it, so the
  workers the tests start, the runs' executors and the CLI all use it (``rabbitmq.py``);
- with the watch on (``ML_PLATFORM_CONFORMANCE_CELERY_WATCH=on``), ``dagster_celery.celery_executor``,
  which every upstream test job is defined with, is the platform's ``watched_celery_executor``: the
  executor ``automation/execution.py`` gives a deployment's jobs, by the same name and config;
- what the watch did is counted (steps it watched, pings it sent and their replies, workers it
  declared lost) and written to ``<report>.<worker>.watch.json`` for the runner.

The counts and test times are written as for the storage suites (``plugin``'s hooks).
"""

import json
import os
import tempfile
from collections import Counter

import pytest

from ml_platform_tests.conformance import EXCLUDED_CELERY, plugin
from ml_platform_tests.conformance.rabbitmq import Broker, broker_host_setting


# The counts as for the storage suites (``plugin``), the test time by upstream's module, and the
# tests that failed, which the runner runs once more.
def pytest_terminal_summary(terminalreporter, config) -> None:
    plugin.pytest_terminal_summary(terminalreporter, config)
    path = os.environ.get(plugin.ENV_REPORT)
    if not path or hasattr(config, "workerinput") or not os.path.isfile(path):
        return
    with open(path, encoding="utf8") as handle:
        report = json.load(handle)
    stats = terminalreporter.stats
    report["failed"] = sorted({r.nodeid for key in ("failed", "error") for r in stats.get(key, [])})
    with open(path, "w", encoding="utf8") as handle:
        json.dump(report, handle)


def pytest_runtest_logreport(report) -> None:
    plugin._seconds_by_suite[report.nodeid.split("::")[0].rsplit("/", 1)[-1]] += report.duration


ENV_VHOST_PREFIX = "ML_PLATFORM_CONFORMANCE_VHOST_PREFIX"
ENV_WATCH = "ML_PLATFORM_CONFORMANCE_CELERY_WATCH"  # on | off
# Seconds between the watch's pings instead of its own 5 s (``celery_run --ping-every``): upstream's
# steps take well under 5 s, so few are pinged; at 0.2 s more of them are.
ENV_PING_EVERY = "ML_PLATFORM_CONFORMANCE_PING_EVERY"

_watch: Counter[str] = Counter()


def _worker_id(config) -> str:
    return getattr(config, "workerinput", {}).get("workerid", "main")


def _runs_tests(config) -> bool:
    """False for xdist's controller, which only hands out tests."""
    return hasattr(config, "workerinput") or not config.getoption("numprocesses", None)


def pytest_configure(config) -> None:
    if not _runs_tests(config):
        return
    vhost = f"{os.environ[ENV_VHOST_PREFIX]}_{_worker_id(config)}"
    Broker().add_vhost(vhost)  # the runner deletes it, with every other of the run's
    os.environ["DAGSTER_CELERY_BROKER_HOST"] = broker_host_setting(vhost)
    count_what_the_watch_does()
    if os.environ.get(ENV_WATCH) == "on":
        patch_in_the_watch()


def patch_in_the_watch() -> None:
    import dagster_celery

    from ml_platform.runtime import celery_watch

    dagster_celery.celery_executor = celery_watch.watched_celery_executor
    if os.environ.get(ENV_PING_EVERY):
        celery_watch.PING_EVERY_SECONDS = float(os.environ[ENV_PING_EVERY])


def count_what_the_watch_does() -> None:
    """Counts, in this process, the steps the watch wraps, the pings it sends, their replies and
    the workers it declares lost (off, every count must stay 0)."""
    from celery.app.control import Control

    from ml_platform.runtime import celery_watch

    result_class = celery_watch.WatchedResult
    init, get, ping = result_class.__init__, result_class.get, Control.ping

    def counted_init(self, *args, **kwargs):
        _watch["steps watched"] += 1
        init(self, *args, **kwargs)

    def counted_get(self):
        try:
            return get(self)
        except celery_watch.CeleryWorkerLost:
            _watch["workers declared lost"] += 1
            raise

    def counted_ping(self, *args, **kwargs):
        replies = ping(self, *args, **kwargs)
        _watch["pings sent"] += 1
        _watch["pings answered"] += bool(replies)
        return replies

    result_class.__init__, result_class.get, Control.ping = counted_init, counted_get, counted_ping


def pytest_sessionfinish(session) -> None:
    report = os.environ.get(plugin.ENV_REPORT)
    if report and _runs_tests(session.config):
        with open(f"{report}.{_worker_id(session.config)}.watch.json", "w", encoding="utf8") as handle:
            json.dump(dict(_watch), handle)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        reason = EXCLUDED_CELERY.get(getattr(item, "originalname", item.name))
        if reason:
            item.add_marker(pytest.mark.skip(reason=plugin.EXCLUDED_PREFIX + reason))


# The fixtures of upstream's dagster_celery_tests/conftest.py, on this machine's broker.


@pytest.fixture(scope="session")
def rabbitmq():
    """Upstream starts RabbitMQ in a Docker container; here it is the live broker, on the virtual
    host ``pytest_configure`` made for this process."""
    yield


@pytest.fixture(scope="function")
def tempdir():
    with tempfile.TemporaryDirectory() as the_dir:
        yield the_dir


@pytest.fixture(scope="function")
def instance(tempdir):
    from dagster._core.test_utils import instance_for_test

    with instance_for_test(temp_dir=tempdir) as test_instance:
        yield test_instance


@pytest.fixture(scope="function")
def dagster_celery_worker(rabbitmq, instance):
    from dagster_celery_tests.utils import start_celery_worker

    with start_celery_worker():
        yield


@pytest.fixture(scope="session")
def dagster_docker_image():
    pytest.skip("needs Docker to build upstream's test-project image (no test here uses it)")
