"""MLflow tracking and registry, one MLflow run per asset materialization.

dagster-mlflow's ``mlflow_tracking`` opens one MLflow run per Dagster run (named after the job,
``__ASSET_JOB`` for asset runs) and leaves it RUNNING; here every materialization gets its own
run named ``<asset key>[<partition>]``, tagged with the Dagster run, asset, partition, code
version and input data versions, ended FINISHED or FAILED, and logged in a fixed number of
batched calls. Tracking requests retry with backoff on 429/5xx (MLflow's own HTTP retry,
configured here), on the embedded SQLite store while another process holds its lock, and then
fail with a message naming the tracking server. The SQLite store's schema is created once for
all processes, and the experiment as a model-training (not GenAI) one (``mlflow_store``).
"""

import logging
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource, MetadataValue
from pydantic import Field, field_validator

from ml_platform.resources import mlflow_store
from ml_platform.resources.mlflow_store import MODEL_TRAINING_VIEW

CHAMPION = "champion"
CHALLENGER = "challenger"
NOWCAST_SUFFIX = "_nowcast"


class TrackingError(RuntimeError):
    """The tracking server or store could not be reached or refused a request."""


def redact(text: str) -> str:
    """Remove user:password@ from any URL in a message (client errors quote the URL they used)."""
    return re.sub(r"//[^/@\s]*@", "//", text)


def partition_label(context) -> str:
    """The partition a step materializes (``2013-06-01``), its range in a ranged run
    (``2013-06-01..2013-06-07``), or "" for an unpartitioned asset."""
    if context.has_partition_key:
        return context.partition_key
    if context.has_partition_key_range:
        rng = context.partition_key_range
        return rng.start if rng.start == rng.end else f"{rng.start}..{rng.end}"
    return ""


def _dagster_tags(context) -> dict[str, str]:
    key = context.asset_key
    tags = {
        "dagster.run_id": context.run_id,
        "dagster.asset_key": key.to_user_string(),
        "dagster.partition_key": partition_label(context),
        "dagster.code_version": str(context.assets_def.code_versions_by_key.get(key) or "none"),
        "dagster.job": context.job_name,
    }
    for dep in sorted(context.assets_def.asset_deps.get(key, []), key=lambda k: k.to_user_string()):
        record = context.instance.get_latest_data_version_record(dep)
        # A materialization reported without a run (report_runless_asset_event) has no tags.
        version = (record.asset_materialization.tags or {}).get("dagster/data_version") if record else None
        tags[f"dagster.input.{dep.to_user_string()}"] = str(version or "unknown")
    return tags


class TrackedRun:
    """An open MLflow run; params, metrics and tags are buffered and sent in one batch."""

    def __init__(
        self, mlflow_module, run_id: str, experiment_id: str, ui_url: str | None, retrying: Callable
    ):
        self._mlflow = mlflow_module
        self._retrying = retrying
        self.run_id = run_id
        self.experiment_id = experiment_id
        self._ui_url = ui_url
        self._params: dict[str, Any] = {}
        self._metrics: dict[str, float] = {}
        self._tags: dict[str, str] = {}

    @property
    def url(self) -> str | None:
        if not self._ui_url:
            return None
        base = self._ui_url.rstrip("/")
        return f"{base}/#/experiments/{self.experiment_id}/runs/{self.run_id}?{MODEL_TRAINING_VIEW}"

    def log_params(self, params: dict[str, Any]) -> None:
        self._params.update({k: str(v) for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self._metrics.update({k: float(v) for k, v in metrics.items() if v == v})  # drop NaN

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._tags.update({k: str(v) for k, v in tags.items()})

    def log_png(self, png: bytes, name: str) -> None:
        self._log_bytes(png, f"plots/{name}.png")

    def log_dataset(self, frame, name: str, context: str) -> None:
        """Record a frame as an MLflow dataset input (name, digest, schema), not its rows."""

        from mlflow.exceptions import MlflowException

        dataset = self._mlflow.data.from_pandas(frame, name=name, targets="arrived_late")
        try:
            self._retrying(self._mlflow.log_input, dataset, context=context)
        except MlflowException:
            # Candidates trained in parallel log the same dataset (same name and digest) into one
            # experiment; the store creates it once and refuses the loser of that race (a 400
            # from a server, a unique constraint from SQLite). The second call finds the stored
            # dataset and only links it to this run.
            time.sleep(0.5)
            self._retrying(self._mlflow.log_input, dataset, context=context)

    def log_dict(self, data: dict, name: str) -> None:
        self._mlflow.log_dict(data, name)

    def log_text(self, text: str, name: str) -> None:
        self._mlflow.log_text(text, name)

    def _log_bytes(self, data: bytes, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_bytes(data)
            self._mlflow.log_artifact(str(path), artifact_path=str(Path(artifact_file).parent))

    def log_sklearn_model(self, model, input_example, *, name: str = "model"):
        """Log a fitted pipeline with its signature and an input example; returns the ModelInfo."""
        import mlflow.sklearn
        import sklearn
        from mlflow.models import infer_signature

        requirements = [f"scikit-learn=={sklearn.__version__}", f"mlflow=={mlflow.__version__}"]
        sklearn_log = logging.getLogger("mlflow.sklearn")
        level = sklearn_log.level
        with warnings.catch_warnings():
            # Integer columns of a pandas frame cannot hold missing values, so MLflow's hint about
            # them does not apply: features that can be missing arrive as floats.
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            signature = infer_signature(input_example, model.predict_proba(input_example)[:, 1])
            # Its advice against pickled models is for models of unknown origin; the platform
            # loads only the ones it registered itself.
            sklearn_log.setLevel(logging.ERROR)
            try:
                return mlflow.sklearn.log_model(
                    sk_model=model,
                    name=name,
                    signature=signature,
                    input_example=input_example,
                    pip_requirements=requirements,
                    serialization_format="cloudpickle",
                )
            finally:
                sklearn_log.setLevel(level)

    def flush(self) -> None:
        import time

        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        if self._params or self._metrics or self._tags:
            self._retrying(
                self._mlflow.tracking.MlflowClient().log_batch,
                self.run_id,
                metrics=[Metric(k, v, now, 0) for k, v in self._metrics.items()],
                params=[Param(k, v) for k, v in self._params.items()],
                tags=[RunTag(k, v) for k, v in self._tags.items()],
            )
        self._params, self._metrics, self._tags = {}, {}, {}

    def dagster_metadata(self) -> dict:
        meta = {"mlflow_run_id": MetadataValue.text(self.run_id)}
        if self.url:
            meta["mlflow_run"] = MetadataValue.url(self.url)
        return meta


class MlflowTracking(ConfigurableResource):
    """Tracking server or store, experiment and registered model of the platform."""

    tracking_uri: str = Field(description="MLflow tracking URI (http(s)://, sqlite:///, file:)")
    experiment: str = Field(default="flight-delays")
    registered_model_name: str = Field(default="flight_delay_classifier")
    artifact_location: str | None = Field(
        default=None, description="Artifact root for a new experiment; None lets the server decide"
    )
    ui_url: str | None = Field(default=None, description="Base URL of the MLflow UI, for links")
    dagster_url: str = Field(default="http://127.0.0.1:3000", description="Base URL of the Dagster UI")
    max_retries: int = Field(
        default=3, description="Retries on HTTP 429/5xx, or on a locked SQLite store, before failing"
    )
    backoff_factor: int = Field(default=1, description="Exponential backoff factor (seconds) between retries")
    timeout_seconds: int = Field(default=30, description="Timeout of one tracking request")

    @field_validator("registered_model_name", "experiment")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", value):
            raise ValueError(f"{value!r} is not a plain name (letters, digits, _ . -)")
        return value

    def for_model(self, registered_model_name: str) -> "MlflowTracking":
        """The same server, experiment and conventions for another registered model: the
        nowcast has its own model (and its own ``@champion``) beside the daily one."""
        fields = {name: getattr(self, name) for name in type(self).model_fields}
        return type(self)(**{**fields, "registered_model_name": registered_model_name})

    def nowcast(self) -> "MlflowTracking":
        """The registered model of the nowcast: ``<registered_model_name>_nowcast``."""
        return self.for_model(f"{self.registered_model_name}{NOWCAST_SUFFIX}")

    def _mlflow(self):
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(self.max_retries)
        os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(self.backoff_factor)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(self.timeout_seconds)
        os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"] = "0.5"
        import mlflow

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        self._retrying(mlflow_store.prepare, self.tracking_uri)
        return mlflow

    def _retrying(self, call, *args, **kwargs):
        """``call(*args, **kwargs)``, retried while the SQLite store is locked by another
        process's write; server URIs have MLflow's HTTP retry instead."""
        retries = self.max_retries if mlflow_store.sqlite_database(self.tracking_uri) else 0
        return mlflow_store.retry_while_locked(lambda: call(*args, **kwargs), retries, self.backoff_factor)

    def client(self):
        from mlflow.tracking import MlflowClient

        self._mlflow()
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    @contextmanager
    def materialization_run(self, context, *, tags: dict[str, Any] | None = None) -> Iterator[TrackedRun]:
        """An MLflow run for the asset being materialized: FINISHED on success, FAILED on error."""
        try:
            mlflow = self._mlflow()
            experiment_id = self._retrying(
                mlflow_store.model_training_experiment, mlflow, self.experiment, self.artifact_location
            )
        except Exception as exc:  # noqa: BLE001
            raise TrackingError(
                f"MLflow tracking at {self.where} is unavailable: {redact(str(exc))}"
            ) from None  # the client's own exception quotes the URL, credentials included
        self._retrying(self._close_orphaned_runs, mlflow, experiment_id, context)
        name = context.asset_key.to_user_string()
        if partition_label(context):
            name += f"[{partition_label(context)}]"
        run_tags = {
            **_dagster_tags(context),
            "dagster.run_url": f"{self.dagster_url.rstrip('/')}/runs/{context.run_id}",
            **{k: str(v) for k, v in (tags or {}).items()},
        }
        active = self._retrying(mlflow.start_run, experiment_id=experiment_id, run_name=name, tags=run_tags)
        tracked = TrackedRun(mlflow, active.info.run_id, experiment_id, self._ui_base(), self._retrying)
        status = "FAILED"
        try:
            yield tracked
            tracked.flush()
            status = "FINISHED"
        except BaseException:
            try:  # what was logged before the failure helps explain it
                tracked.flush()
            except Exception as exc:  # noqa: BLE001
                context.log.warning(f"could not log buffered values to MLflow run {tracked.run_id}: {exc}")
            raise
        finally:
            try:
                mlflow_store.end_run(mlflow, tracked.run_id, status, self._retrying)
            except Exception as exc:  # noqa: BLE001
                context.log.error(
                    f"could not end MLflow run {tracked.run_id} as {status}: {redact(str(exc))}"
                )
                raise TrackingError(
                    f"MLflow tracking at {self.where} failed to end run {tracked.run_id}: {redact(str(exc))}"
                ) from None
        context.log.info(f"MLflow run {tracked.run_id} {status}: {tracked.url or self.where}")

    def _close_orphaned_runs(self, mlflow, experiment_id: str, context) -> None:
        """End as FAILED the MLflow runs left RUNNING by Dagster runs that are over: a process
        killed outright, or a tracking server that was down when the run tried to end it."""
        runs = mlflow.search_runs(
            [experiment_id], "attributes.status = 'RUNNING'", max_results=50, output_format="list"
        )
        client = mlflow.tracking.MlflowClient()
        for run in runs:
            dagster_run_id = run.data.tags.get("dagster.run_id")
            if not dagster_run_id or dagster_run_id == context.run_id:
                continue
            dagster_run = context.instance.get_run_by_id(dagster_run_id)
            if dagster_run is None or dagster_run.is_finished:
                client.set_tag(run.info.run_id, "ml_platform.closed_as_orphan", context.run_id)
                client.set_terminated(run.info.run_id, "FAILED")
                context.log.warning(
                    f"MLflow run {run.info.run_id} of finished Dagster run {dagster_run_id} "
                    "was still RUNNING; ended it as FAILED"
                )

    @property
    def where(self) -> str:
        """The tracking URI without credentials, for messages and logs."""
        return redact(self.tracking_uri)

    def _ui_base(self) -> str | None:
        from ml_platform.config import public_url

        return self.ui_url or public_url(self.tracking_uri)

    # --- registry ---------------------------------------------------------------------------

    def register(self, model_uri: str, tags: dict[str, Any]) -> str:
        """Register a logged model as a new version with its tags in the same call, so no alias
        can ever point at an untagged version; returns the version number."""
        mlflow = self._mlflow()
        version = self._retrying(
            mlflow.register_model,
            model_uri,
            self.registered_model_name,
            tags={k: str(v) for k, v in tags.items()},
        )
        return str(version.version)

    def version_with_source(self, model_uri: str):
        """The registered version of this logged model, if it was registered before."""
        client = self.client()
        for version in self._retrying(client.search_model_versions, f"name='{self.registered_model_name}'"):
            if version.source == model_uri:
                return version
        return None

    def set_version_tags(self, version: str, tags: dict[str, Any]) -> None:
        client = self.client()
        for key, value in tags.items():
            self._retrying(client.set_model_version_tag, self.registered_model_name, version, key, str(value))

    def set_alias(self, alias: str, version: str) -> None:
        self._retrying(self.client().set_registered_model_alias, self.registered_model_name, alias, version)

    def version_for(self, alias: str):
        """The model version carrying ``alias``, or None."""
        from mlflow.exceptions import MlflowException

        try:
            return self._retrying(self.client().get_model_version_by_alias, self.registered_model_name, alias)
        except MlflowException as exc:
            # Only "no such alias / model" means there is none; an unreachable registry must fail
            # loudly, or the gate would promote a candidate without comparing it to the champion.
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise TrackingError(f"MLflow registry at {self.where} failed: {redact(str(exc))}") from None

    def load_version(self, version: str):
        """Load a model version from the configured registry (and only from there)."""
        self._mlflow()
        import mlflow.sklearn

        return mlflow.sklearn.load_model(f"models:/{self.registered_model_name}/{version}")

    def download_json(self, run_id: str, artifact_path: str) -> dict:
        import json

        mlflow = self._mlflow()
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=artifact_path, dst_path=tmp
            )
            return json.loads(Path(local).read_text())
