"""The embedded SQLite tracking store, safe for any number of processes.

MLflow creates a fresh database's schema (``create_all`` and then every alembic migration) in
whichever process first builds a store on it and finds tables missing. Processes that start
together on a fresh data directory all find them missing and migrate at once, and most or all of
them fail ("table _alembic_tmp_tags already exists", "duplicate column name: step"). Here the first use of a
``sqlite:///`` store in each process builds the tracking and registry stores under an exclusive
``flock`` on ``<db>.lock``, so exactly one process creates the schema and the others wait for it
and find it complete. Writes that still meet another writer's lock past SQLite's busy timeout are
retried by the caller (``retry_while_locked``). Server URIs need neither.
"""

from __future__ import annotations

import fcntl
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

# MLflow 3's experiment kind: "custom_model_development" is the UI's "Machine learning" kind (runs,
# metrics, models), as opposed to "genai_development" (traces, evaluations).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
# The UI of MLflow 3.17 picks an experiment's view from this URL parameter (else the browser's
# last choice, at first GenAI), so links carry it.
MODEL_TRAINING_VIEW = "workflowType=machine_learning"

_LOCKED = ("database is locked", "database table is locked")
_ready: set[str] = set()
_ready_guard = threading.Lock()


def sqlite_database(uri: str) -> Path | None:
    """The database file of a ``sqlite:`` URI; None for other URIs and in-memory databases."""
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def prepare(uri: str) -> None:
    """Make sure the SQLite store behind ``uri`` has its whole schema before this process uses
    it, creating it in one process only; once per process and URI, nothing for other URIs."""
    database = sqlite_database(uri)
    if database is None or uri in _ready:
        return
    with _ready_guard:
        if uri in _ready:
            return
        # Imported before the lock (seconds of work), so that processes wait only for the database.
        import mlflow.store.model_registry.sqlalchemy_store  # noqa: F401
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
        from mlflow.tracking import MlflowClient

        database.parent.mkdir(parents=True, exist_ok=True)
        with open(database.with_name(database.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            # Building the client builds (and caches for this process) the tracking store, which
            # creates and migrates the schema if tables are missing; the registry store shares
            # the database and is built by its first call.
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_registered_models(max_results=1)
        _ready.add(uri)


def is_locked(exc: BaseException) -> bool:
    """SQLite refused a statement because another connection holds the database's lock."""
    return any(text in str(exc) for text in _LOCKED)


def retry_while_locked(call: Callable[[], T], retries: int, backoff: float) -> T:
    """``call()``, again with exponential backoff and jitter while SQLite reports the database
    locked (a transaction that failed on the lock was rolled back, so repeating it is safe)."""
    for attempt in range(retries + 1):
        try:
            return call()
        except Exception as exc:
            if attempt == retries or not is_locked(exc):
                raise
            time.sleep(backoff * 2**attempt * random.uniform(0.5, 1.5))
    raise AssertionError("unreachable")


def model_training_experiment(mlflow, name: str, artifact_location: str | None) -> str:
    """The id of experiment ``name``, created as a model-training experiment (MLflow 3's UI
    otherwise takes it for GenAI); an existing one without a kind gets it."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        try:
            return mlflow.create_experiment(
                name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
            )
        except Exception:  # noqa: BLE001 - another process may have created it meanwhile
            experiment = mlflow.get_experiment_by_name(name)
            if experiment is None:
                raise
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        try:
            mlflow.tracking.MlflowClient().set_experiment_tag(
                experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND
            )
        except Exception:  # noqa: BLE001 - another process may have set it meanwhile
            if EXPERIMENT_KIND_TAG not in mlflow.get_experiment(experiment.experiment_id).tags:
                raise
    return experiment.experiment_id


def end_run(mlflow, run_id: str, status: str, retrying: Callable) -> None:
    """End this thread's active run as ``status``. ``mlflow.end_run`` stops tracking the run
    before it writes the status, so a status refused by a locked store is retried on the run."""
    try:
        mlflow.end_run(status=status)
    except Exception as exc:
        if not is_locked(exc):
            raise
        retrying(mlflow.tracking.MlflowClient().set_terminated, run_id, status)
