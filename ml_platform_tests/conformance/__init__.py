"""Dagster's own storage test suites, run against the platform's instance storages.

``python -m ml_platform_tests.conformance`` (``make test-conformance``) takes the test suites of the
installed dagster and dagster-postgres from their source distributions and runs them against every
storage that ``deploy/dagster.local.yaml`` and ``deploy/dagster.yaml`` select: SQLite
(``ml_platform.runtime.sqlite_storage``) and PostgreSQL (``ml_platform.runtime.postgres_storage``).
The storages reach into Dagster's internals, so a new Dagster release is verified here, by the tests
its authors wrote for these interfaces, before the pins move.

- ``__main__``: the runner (download, PostgreSQL set-up, pytest, summary).
- ``sources``: the sdists, the upstream test packages and the stand-ins for what upstream does not
  publish, all under the build folder ``.conformance/``.
- ``storages``, ``sqlite_suites``, ``postgres_suites``: the upstream suite classes wired to the
  platform's storages; ``plugin``: the fixtures upstream's conftests would give, and the exclusions.
- ``postgres``: the databases and the role the PostgreSQL suites use.

``python -m ml_platform_tests.conformance.celery_run`` (``make test-conformance-celery``) does the
same for the one accelerator that replaces part of dagster-celery, ``celery_watch``: it runs
dagster-celery's own test suite, from its source distribution, on this machine's RabbitMQ with the
watch patched in and without it (``celery_plugin``: the fixtures of upstream's conftest, without
Docker; ``rabbitmq``: a virtual host per pytest process).

Nothing here is collected by the project's own ``pytest`` run: no module is named ``test_*``; the
runner collects the suites from files it writes under ``.conformance/``.
"""

# Upstream tests left out, by name (``TestClass::test_name``, or a bare test name for every class),
# each with its reason. They are reported as skipped with the reason; every other failure fails.
EXCLUDED: dict[str, str] = {}
# The same for dagster-celery's suite (``celery_run``), by test name.
EXCLUDED_CELERY: dict[str, str] = {}

# How the runner tells the pytest processes where PostgreSQL is (set by the runner, read by plugin).
ENV_PG_SERVER = "ML_PLATFORM_CONFORMANCE_PG_SERVER"  # postgresql://user@host:port, admin rights
ENV_PG_HOST = "ML_PLATFORM_CONFORMANCE_PG_HOST"
ENV_PG_PREFIX = "ML_PLATFORM_CONFORMANCE_PG_PREFIX"  # each pytest worker's database: <prefix>_<worker>
ENV_REPORT = "ML_PLATFORM_CONFORMANCE_REPORT"  # where the plugin writes the counts as JSON
