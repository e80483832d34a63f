"""Everything of the platform that reaches into Dagster's or dbt's internals, apart from the
domains. Each module is one accelerator: what it changes and why is its docstring; the versions
it was verified on and its switch are in ``guard.py``; off, the stock behaviour runs.

- ``sqlite_storage`` / ``postgres_storage``: the instance storages (``storage: custom`` in
  ``deploy/dagster.local.yaml`` and ``deploy/dagster.yaml``), Dagster's own with fewer
  statements per stored event; off, those configs give Dagster's stock storages.
- ``pool_waits``: steps waiting for a pool slot sleep instead of spinning.
- ``run_workers``: a code server forks run workers from a process that imported the
  definitions; ``preparsed_dbt`` is what that process imports.
- ``dbt_in_process``: ``dbt build`` inside the step's process (``resources/dbt.py`` uses it).
- ``celery_watch``: a step whose Celery worker stops answering fails its run instead of
  leaving it waiting (``automation/execution.py`` uses it with ``ML_PLATFORM_EXECUTOR=celery``).

The definitions apply none of it. The instance storages call ``apply_accelerators`` when an
instance is loaded, which every process that starts or executes runs does (code server, run
worker, daemon, webserver); nothing else needs to remember to.
"""

from ml_platform.runtime.guard import ALL, SWITCH, status

__all__ = ["ALL", "SWITCH", "apply_accelerators", "status"]


def apply_accelerators() -> dict[str, bool]:
    """Apply the process-wide corrections this process may use (idempotent); which were applied."""
    from ml_platform.runtime.pool_waits import sleep_between_pool_claims
    from ml_platform.runtime.run_workers import start_runs_from_preloaded_server

    return {
        "pool_waits": sleep_between_pool_claims(),
        "run_workers": start_runs_from_preloaded_server(),
    }
