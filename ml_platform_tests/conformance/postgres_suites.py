"""dagster-postgres's storage suites (``dagster_postgres_tests``), wired to the production
instance's storage, ``PostgresStorage``: each class here is upstream's PostgreSQL class whose
instance (or storage) comes from that storage, in the pytest worker's own database (the
``conn_string`` fixture of ``plugin``). Each test starts from the storage's tables dropped and
created again, as upstream's do.

Importable only where the runner puts the upstream test packages on the path.
"""

from contextlib import contextmanager

import pytest
from dagster import instance_for_test
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage

from ml_platform_tests.conformance import plugin

# Upstream's modules ask dagster where its tests are; here they are not next to the installed package.
plugin.locate_upstream_tests_on_path()

# Modules, not classes: a test class in this namespace would be collected with upstream's fixtures.
from dagster_postgres_tests import test_event_log, test_run_storage, test_schedule_storage  # noqa: E402
from dagster_tests.storage_tests.utils import daemon_cursor_storage, partition_status_cache  # noqa: E402

from ml_platform.runtime.postgres_storage import BatchingPostgresEventLogStorage  # noqa: E402
from ml_platform_tests.conformance.storages import postgres_storage_config  # noqa: E402

__all__ = [
    "TestBatchingPostgresEventLogStorage",
    "TestPostgresStorageRunStorage",
    "TestPostgresStorageScheduleStorage",
    "TestPostgresStorageDaemonCursorStorage",
    "TestPostgresStoragePartitionStatusCache",
]


@contextmanager
def production_instance(conn_string: str, *cleaners):
    """An instance on ``deploy/dagster.yaml``'s storage, after ``cleaners`` (upstream's
    ``create_clean_storage`` of the storages under test) dropped and recreated their tables."""
    for clean in cleaners:
        clean(conn_string).dispose()
    with instance_for_test(overrides={"storage": postgres_storage_config(conn_string)}) as instance:
        yield instance


class TestBatchingPostgresEventLogStorage(test_event_log.TestPostgresEventLogStorage):
    @pytest.fixture(name="instance")
    def instance(self, conn_string):
        with production_instance(conn_string, PostgresEventLogStorage.create_clean_storage) as instance:
            yield instance

    @pytest.fixture(name="storage")
    def event_log_storage(self, instance):
        assert type(instance.event_log_storage) is BatchingPostgresEventLogStorage
        yield instance.event_log_storage


class TestPostgresStorageRunStorage(test_run_storage.TestPostgresRunStorage):
    @pytest.fixture(name="instance")
    def instance(self, conn_string):
        with production_instance(conn_string, PostgresRunStorage.create_clean_storage) as instance:
            yield instance

    @pytest.fixture(name="storage")
    def run_storage(self, instance):
        assert type(instance.run_storage) is PostgresRunStorage
        yield instance.run_storage


class TestPostgresStorageScheduleStorage(test_schedule_storage.TestPostgresScheduleStorage):
    @pytest.fixture(name="storage")
    def schedule_storage(self, conn_string):
        with production_instance(conn_string, PostgresScheduleStorage.create_clean_storage) as instance:
            assert type(instance.schedule_storage) is PostgresScheduleStorage
            yield instance.schedule_storage


class TestPostgresStorageDaemonCursorStorage(daemon_cursor_storage.TestDaemonCursorStorage):
    __test__ = True

    @pytest.fixture(name="storage")
    def cursor_storage(self, conn_string):
        with production_instance(conn_string, PostgresRunStorage.create_clean_storage) as instance:
            yield instance.run_storage


class TestPostgresStoragePartitionStatusCache(partition_status_cache.TestPartitionStatusCache):
    """The asset status cache that the event log storage keeps (written with every run's events);
    upstream runs this suite on SQLite only. Its tests read runs too, so both start empty."""

    @pytest.fixture(name="instance")
    def instance(self, conn_string):
        cleaners = (PostgresEventLogStorage.create_clean_storage, PostgresRunStorage.create_clean_storage)
        with production_instance(conn_string, *cleaners) as instance:
            yield instance
