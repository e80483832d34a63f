"""pytest plugin of the conformance run (``-p ml_platform_tests.conformance.plugin``).

It gives what upstream's conftest files would, without their Docker and helper-package imports:
``conn_string`` (a database of this pytest worker's own on the runner's PostgreSQL, made on first
use, dropped by the runner) and ``hostname``; ``DAGSTER_RECORD_DEFENSIVE_CHECKS`` is set by the
runner. It marks the tests of ``EXCLUDED`` as skipped with their reason, and writes the counts and
each suite's test time to the file the runner reads.

One change to the process, for time only: alembic reads Dagster's 89 revision scripts again
each time a storage checks or stamps its schema, that is for every test's instance and for every
SQLite run shard: nearly half the CPU time of the whole run. Here each process reads them once
(``read_alembic_scripts_once``); the schema, the stamps and the migrations are the same.
"""

import importlib
import json
import os
import threading
from collections import Counter, defaultdict

import pytest

from ml_platform_tests.conformance import ENV_PG_HOST, ENV_PG_PREFIX, ENV_PG_SERVER, ENV_REPORT, EXCLUDED

EXCLUDED_PREFIX = "excluded: "


def locate_upstream_tests_on_path() -> None:
    """dagster's ``ensure_dagster_tests_import`` expects ``dagster_tests`` beside the installed
    package (a source checkout); the runner has it on ``sys.path`` instead."""
    import dagster._core.test_utils as test_utils

    def ensure_dagster_tests_import() -> None:
        importlib.import_module("dagster_tests")

    test_utils.ensure_dagster_tests_import = ensure_dagster_tests_import


def read_alembic_scripts_once() -> None:
    from alembic.script import ScriptDirectory

    read = ScriptDirectory.from_config.__func__
    if getattr(read, "reads_once", False):
        return
    directories: dict[tuple, ScriptDirectory] = {}
    lock = threading.Lock()

    def from_config(cls, config):
        key = (config.config_file_name, config.get_alembic_option("script_location"))
        with lock:
            if key not in directories:
                directories[key] = read(cls, config)
            return directories[key]

    from_config.reads_once = True
    ScriptDirectory.from_config = classmethod(from_config)


def pytest_configure(config) -> None:
    read_alembic_scripts_once()


@pytest.fixture(scope="session")
def conn_string(worker_id: str) -> str:
    import psycopg2

    server, name = os.environ[ENV_PG_SERVER], f"{os.environ[ENV_PG_PREFIX]}_{worker_id}"
    admin = psycopg2.connect(f"{server}/postgres", connect_timeout=5)
    try:
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
                # A scratch database: commits need not wait for the disk (only a server crash would tell).
                cur.execute(f'ALTER DATABASE "{name}" SET synchronous_commit TO off')
    finally:
        admin.close()
    return f"{server}/{name}"


@pytest.fixture(scope="session")
def hostname() -> str:
    return os.environ[ENV_PG_HOST]


def exclusion_reason(item: pytest.Item) -> str | None:
    name = getattr(item, "originalname", item.name)
    qualified = f"{item.cls.__name__}::{name}" if getattr(item, "cls", None) else name
    return EXCLUDED.get(qualified) or EXCLUDED.get(name)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        reason = exclusion_reason(item)
        if reason:
            item.add_marker(pytest.mark.skip(reason=EXCLUDED_PREFIX + reason))


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)


# Each suite's test time: setup, call and teardown of every test (fixtures build the storages).
_seconds_by_suite: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report) -> None:
    if "::" in report.nodeid:
        _seconds_by_suite[report.nodeid.split("::")[1]] += report.duration


def pytest_terminal_summary(terminalreporter, config) -> None:
    path = os.environ.get(ENV_REPORT)
    if not path or hasattr(config, "workerinput"):  # the controller counts, not each worker
        return
    counts: Counter[str] = Counter()
    for outcome, reports in terminalreporter.stats.items():
        if outcome in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):
            for report in reports:
                if outcome == "skipped" and EXCLUDED_PREFIX in _skip_reason(report):
                    counts["excluded"] += 1
                counts[outcome] += 1
    with open(path, "w", encoding="utf8") as handle:
        json.dump({"counts": counts, "seconds_by_suite": _seconds_by_suite}, handle)
