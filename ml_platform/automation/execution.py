"""How a run executes its steps, for every job of the location (set once in the definitions)."""

from dagster import multi_or_in_process_executor

# A step process started by `spawn` imports dagster, dagster-dbt, pandas and the definitions
# again (about 5 s each, more with scikit-learn and MLflow); forked from a server that has
# already imported them, it starts in a fraction of that. Steps still get a process each, so
# the candidates of a training run fit in parallel.
PRELOADED = ["ml_platform.definitions"]


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
