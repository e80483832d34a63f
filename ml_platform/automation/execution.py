"""How a run executes its steps, for every job of the location (chosen once, from the settings).

``ML_PLATFORM_EXECUTOR`` picks it: ``multiprocess`` (the default) runs each step in a process
beside the run; ``celery`` sends each step to Celery workers (``ml-platform-worker``) through the
broker in ``ML_PLATFORM_CELERY_BROKER``. Runs take the same run config either way.
"""

from dagster import ExecutorDefinition, Field, Permissive, multi_or_in_process_executor

from ml_platform.config import CELERY_BROKER_ENV, Settings

# A step process started by `spawn` imports dagster, dagster-dbt, pandas and the definitions
# again (about 5 s each, more with scikit-learn and MLflow); forked from a server that has
# already imported them, it starts in a fraction of that. Steps still get a process each, so
# the candidates of a training run fit in parallel.
PRELOADED = ["ml_platform.definitions"]
CELERY_BACKEND_ENV = "ML_PLATFORM_CELERY_BACKEND"


def forkserver_unless_chosen(config: dict) -> dict:
    if "in_process" in config:
        return config
    multiprocess = dict(config.get("multiprocess") or {})
    multiprocess.setdefault("start_method", {"forkserver": {"preload_modules": PRELOADED}})
    return {"multiprocess": multiprocess}


executor = multi_or_in_process_executor.configured(
    forkserver_unless_chosen,
    name="multi_or_in_process_executor",
    config_schema=multi_or_in_process_executor.config_schema,
)


def celery_app_config() -> dict:
    """The Celery settings the executor and its workers share (they must agree)."""
    return {
        # One step per worker process at a time, none reserved: a long step never holds back
        # another that an idle worker could run.
        "worker_prefetch_multiplier": 1,
    }


def celery_executor_config(settings: Settings) -> dict:
    """The broker (and a Redis backend) are read from the environment where the run executes, so
    a password in them is never stored in the definitions or shown."""
    backend = {"env": CELERY_BACKEND_ENV} if settings.celery_backend != "rpc://" else "rpc://"
    return {
        "broker": {"env": CELERY_BROKER_ENV},
        "backend": backend,
        "config_source": celery_app_config(),
    }


# Run configs written for the default executor (`in_process`, `multiprocess`, as the ingestion
# job and sensors set) stay valid: on Celery every step is a task either way.
RUN_CONFIG_SHAPE = {
    "in_process": Field(Permissive(), is_required=False),
    "multiprocess": Field(Permissive(), is_required=False),
}


def build_executor(settings: Settings) -> ExecutorDefinition:
    """The executor of every job of the location built for ``settings``."""
    if settings.executor != "celery":
        return executor
    from ml_platform.runtime.celery_watch import celery_steps_executor

    config = celery_executor_config(settings)
    return celery_steps_executor().configured(
        lambda _: config, name="celery_executor", config_schema=RUN_CONFIG_SHAPE
    )
