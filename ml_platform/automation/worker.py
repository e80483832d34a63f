"""A Celery worker for the steps of runs on ``ML_PLATFORM_EXECUTOR=celery``: ``ml-platform-worker``.

It reads the same settings as the code location (the same environment: warehouse, lake data
path, MLflow server, broker, the instance's ``DAGSTER_PG_*``), refuses what the executor would
refuse, imports the definitions once (its pool processes are forked with them loaded) and
consumes the ``dagster`` queue the executor sends steps to. Arguments are passed on to
``celery worker`` (for example ``--concurrency 2``); by default each worker has a node name of its
own (``ml-platform-<pid>@<host>``) and one pool process per core.

Run it from any directory: a worker writes nothing to its working directory; everything a step
leaves behind is in PostgreSQL (runs, events, the lake catalog), the lake data path and MLflow.
"""

from __future__ import annotations

import os
import sys

from ml_platform.automation.execution import celery_app_config
from ml_platform.config import CELERY_BROKER_ENV, Settings, SettingsError, load_settings

QUEUE = "dagster"


def worker_app(settings: Settings):
    """The Celery app with dagster-celery's step task, on the executor's broker and settings."""
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    args = CeleryExecutor.for_cli(
        broker=os.environ[CELERY_BROKER_ENV],
        backend=settings.celery_backend,
        config_source=celery_app_config(),
    ).app_args()
    app = make_app(args)
    create_task(app)
    return app


def worker_argv(args: list[str]) -> list[str]:
    """``celery worker`` arguments: the step queue, a prefork pool (its main process answers the
    run's pings while a step runs), a node name of its own unless given. Another pool is refused:
    a solo worker busy with a long step answers no ping, and its run would count it lost."""
    for i, arg in enumerate(args):
        pool = arg.split("=", 1)[1] if arg.startswith("--pool=") else None
        if arg in ("-P", "--pool") and i + 1 < len(args):
            pool = args[i + 1]
        if pool is not None and pool != "prefork":
            raise SystemExit(
                f"ml-platform-worker: --pool {pool} is not supported: workers run the prefork pool, "
                "whose main process answers the runs' pings while a step runs"
            )
    argv = ["worker", "--loglevel=INFO", "--queues", QUEUE, "--pool", "prefork", "--without-mingle"]
    if not any(a in ("-n", "--hostname") or a.startswith("--hostname=") for a in args):
        argv += ["--hostname", f"ml-platform-{os.getpid()}@%h"]
    return argv + args


def main(args: list[str] | None = None) -> None:
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"ml-platform-worker: {exc}") from exc
    if settings.executor != "celery":
        raise SystemExit(
            "ml-platform-worker: ML_PLATFORM_EXECUTOR is not 'celery'; runs would not send it any step"
        )
    import ml_platform.definitions  # noqa: F401 - loaded once, before the pool forks

    worker_app(settings).worker_main(worker_argv(sys.argv[1:] if args is None else args))


if __name__ == "__main__":
    main()
