"""The embedded SQLite tracking store under processes that start together on a fresh directory.

Each worker is its own process (as the multiprocess executor's steps, two shells or a CI job are),
forked from one that imported the code once, running one real materialization through
``MlflowTracking``; inside the asset, all of them wait on one event and then open the fresh
``sqlite:///`` store at the same instant. Without the inter-process lock around the store's
creation, MLflow's schema migrations race and most of the workers fail.
"""

import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
from dagster._core.instance.ref import InstanceRef

from ml_platform.resources.mlflow import MlflowTracking
from ml_platform.resources.mlflow_store import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND

WORKERS = 4
EXPERIMENT = "embedded-store"
START_TIMEOUT = 120  # seconds for every worker to reach the start line (on a busy machine)
RUN_TIMEOUT = 120  # seconds for all of them to finish from the start


def tracking(uri: str, artifacts: Path, experiment: str = EXPERIMENT) -> MlflowTracking:
    return MlflowTracking(
        tracking_uri=uri,
        experiment=experiment,
        artifact_location=str(artifacts),
        ui_url="http://127.0.0.1:5000",
    )


def worker(index: int, uri: str, artifacts: str, home: str, go) -> None:
    """One process: materialize an asset that waits for ``go`` and then opens an MLflow run, logs
    params and metrics and ends it; exits 1 if the materialization failed."""

    @dg.asset(name=f"candidate_{index}")
    def candidate(context: dg.AssetExecutionContext, mlflow: MlflowTracking) -> dg.MaterializeResult:
        Path(home, f"ready-{index}").touch()  # the run, step and resources are up
        if not go.wait(START_TIMEOUT):
            raise RuntimeError("no start signal")
        with mlflow.materialization_run(context) as run:
            run.log_params({"worker": index, "C": 0.5})
            run.log_metrics({"auc": 0.7 + index / 100, "log_loss": 0.4})
        return dg.MaterializeResult(metadata=run.dagster_metadata())

    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(home))
    resources = {"mlflow": tracking(uri, Path(artifacts))}
    result = dg.materialize([candidate], resources=resources, instance=instance, raise_on_error=False)
    messages = []
    for event in result.get_step_failure_events():
        error = event.step_failure_data.error
        while error is not None:
            messages.append(error.message.strip().splitlines()[0][:300])
            error = error.cause
    Path(home, f"errors-{index}").write_text(" / ".join(messages))
    sys.exit(0 if result.success else 1)


def outcome(home: Path, index: int, process) -> str:
    errors = home / f"errors-{index}"
    return errors.read_text() if errors.exists() else f"no result, exit code {process.exitcode}"


def start_together(root: str) -> None:
    """Run in a process of its own, which has imported the code once (as the platform's
    forkserver has): forks the workers, lets them all go at once, and exits 1 if any failed."""
    root_dir = Path(root)
    db, artifacts, home = (
        root_dir / "mlflow" / "mlflow.db",
        root_dir / "mlflow" / "artifacts",
        root_dir / "home",
    )
    ctx = multiprocessing.get_context("fork")
    go = ctx.Event()
    procs = [
        ctx.Process(target=worker, args=(i, f"sqlite:///{db}", str(artifacts), str(home), go))
        for i in range(WORKERS)
    ]
    try:
        for p in procs:
            p.start()
        deadline = time.monotonic() + START_TIMEOUT
        while len(list(home.glob("ready-*"))) < WORKERS:
            if any(p.exitcode is not None for p in procs) or time.monotonic() > deadline:
                sys.exit("workers did not all reach the start line")
            time.sleep(0.01)
        if db.exists():
            sys.exit("a worker opened the store before the start")
        go.set()
        deadline = time.monotonic() + RUN_TIMEOUT
        for p in procs:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    failed = {i: outcome(home, i, p) for i, p in enumerate(procs) if p.exitcode != 0}
    if failed:
        sys.exit(
            f"{len(failed)} of {WORKERS} workers failed:\n"
            + "\n".join(f"{i}: {m}" for i, m in failed.items())
        )


def test_processes_starting_together_on_a_fresh_sqlite_store_all_succeed(tmp_path):
    uri, artifacts = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}", tmp_path / "mlflow" / "artifacts"
    (tmp_path / "home").mkdir()
    dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(tmp_path / "home"))).dispose()  # its storage exists
    starter = subprocess.run(
        [sys.executable, "-c", f"from {__name__} import start_together; start_together({str(tmp_path)!r})"],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT + RUN_TIMEOUT + 60,
    )
    assert starter.returncode == 0, starter.stderr[-3000:]

    client = tracking(uri, artifacts).client()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == WORKERS
    assert {r.info.status for r in runs} == {"FINISHED"}  # none left RUNNING
    assert sorted(r.data.params["worker"] for r in runs) == [str(i) for i in range(WORKERS)]
    assert all(r.data.metrics["log_loss"] == 0.4 for r in runs)
    assert experiment.tags.get(EXPERIMENT_KIND_TAG) == MODEL_TRAINING_KIND
    assert client.search_registered_models() == []  # the registry's tables are there too


def materialize_one(mlflow: MlflowTracking) -> dg.MaterializeResult:
    @dg.asset
    def candidate(context: dg.AssetExecutionContext, mlflow: MlflowTracking) -> dg.MaterializeResult:
        with mlflow.materialization_run(context) as run:
            run.log_metrics({"auc": 0.7})
        return dg.MaterializeResult(metadata=run.dagster_metadata())

    with dg.instance_for_test() as instance:
        return dg.materialize([candidate], resources={"mlflow": mlflow}, instance=instance)


def test_experiments_are_model_training_experiments(tmp_path):
    uri, artifacts = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts"
    mlflow = tracking(uri, artifacts)
    result = materialize_one(mlflow)
    client = mlflow.client()
    assert client.get_experiment_by_name(EXPERIMENT).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    link = result.asset_materializations_for_node("candidate")[0].metadata["mlflow_run"].url
    assert link.endswith("?workflowType=machine_learning")  # the UI's view follows the link

    older = client.create_experiment("made-before-kinds")  # as an earlier version of the platform did
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(older).tags
    materialize_one(tracking(uri, artifacts, "made-before-kinds"))
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
