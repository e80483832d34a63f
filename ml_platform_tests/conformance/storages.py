"""The instance storages as the conformance suites load them: by instance configuration, like the
deployments, but always the platform's classes.

``LocalSqliteStorage`` and ``PostgresStorage`` hand out Dagster's stock storage from
``from_config_value`` when their accelerator is off, by switch or because the installed Dagster is
not among the versions they were verified on. A conformance run is how a new version gets verified,
so here the classes are always built: the same constructors their ``from_config_value`` calls.
"""

from __future__ import annotations

from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

from ml_platform.runtime.postgres_storage import PostgresStorage
from ml_platform.runtime.sqlite_storage import LocalSqliteStorage


class SqliteStorageUnderTest(LocalSqliteStorage):
    @classmethod
    def from_config_value(cls, inst_data, config_value) -> SqliteStorageUnderTest:
        return cls.from_local(inst_data=inst_data, **config_value)


class PostgresStorageUnderTest(PostgresStorage):
    @classmethod
    def from_config_value(cls, inst_data, config_value) -> PostgresStorageUnderTest:
        return cls(
            inst_data=inst_data,
            postgres_url=pg_url_from_config(config_value),
            should_autocreate_tables=config_value.get("should_autocreate_tables", True),
            token_provider=get_token_provider_from_config(config_value),
        )


def sqlite_storage_config(base_dir: str) -> dict:
    """The ``storage:`` of an instance on the embedded storage in ``base_dir``."""
    config = {"base_dir": base_dir}
    return {"custom": {"module": __name__, "class": "SqliteStorageUnderTest", "config": config}}


def postgres_storage_config(postgres_url: str) -> dict:
    """The ``storage:`` of an instance on the production storage in the database ``postgres_url``."""
    config = {"postgres_url": postgres_url}
    return {"custom": {"module": __name__, "class": "PostgresStorageUnderTest", "config": config}}
