"""Candidate models: one asset each, so they train in parallel, each with launchpad config."""

import inspect
import json
import typing
from collections.abc import Iterable

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetRecordsFilter,
    AssetsDefinition,
    DataVersion,
    MetadataValue,
    Output,
    asset,
)
from pydantic import BaseModel, create_model

import ml_platform.ml.metrics as metrics_module
import ml_platform.ml.training as training_module
from ml_platform.features.assets import feature_reader_version
from ml_platform.keys import FLIGHT_FEATURES, TRAINING_SET, Candidate
from ml_platform.launchpad import checked, launchpad_form
from ml_platform.ml import models
from ml_platform.ml.drift import build_profile
from ml_platform.ml.frames import CATEGORICAL, DAY, NUMERIC, feature_frame
from ml_platform.ml.plots import calibration_png, confusion_png, markdown_image, roc_curve_png
from ml_platform.ml.training import fit_and_evaluate
from ml_platform.resources.mlflow import MlflowTracking
from ml_platform.resources.policy import ModelPolicy
from ml_platform.versions import FORCE_TAG, combine, source_version

GROUP = "training"
MODEL_IO = "model_io_manager"


def hyperparameter_config(candidate: Candidate) -> type[BaseModel]:
    """The launchpad config of a candidate: its builder's keyword arguments, with their defaults
    and bounds, so a hyperparameter is declared once, in the builder's signature."""
    hints = typing.get_type_hints(candidate.build, include_extras=True)
    fields = {
        name: (
            hints.get(name, typing.Any),
            ... if parameter.default is inspect.Parameter.empty else parameter.default,
        )
        for name, parameter in inspect.signature(candidate.build).parameters.items()
    }
    title = "".join(part.capitalize() for part in candidate.asset_name.split("_"))
    return create_model(f"{title}Config", **fields)


def train_candidate(
    context,
    name: str,
    pipeline,
    params: dict,
    frame: pd.DataFrame,
    mlflow: MlflowTracking,
    policy: ModelPolicy,
    code_version: str | None = None,
    columns: tuple[list[str], list[str]] | None = None,
    inputs: tuple[AssetKey, AssetKey] = (TRAINING_SET, FLIGHT_FEATURES),
):
    """Fit on the train split, evaluate on the holdout, log everything to one MLflow run.
    With the same code, training set, hyperparameters and threshold as the last time, the fit
    is not repeated: the previous model and metrics are reused and reported as unchanged.
    ``columns`` (categorical, numeric) and ``inputs`` (training set, features) default to the
    daily model's; the nowcast passes its regime's."""
    code_version = code_version or CODE_VERSION
    categorical, numeric = columns or (CATEGORICAL, NUMERIC)
    train, holdout = frame[frame.split == "train"], frame[frame.split == "holdout"]
    threshold = policy.decision_threshold
    cutoff = str(pd.Timestamp(frame["cutoff_date"].iloc[0]).date())
    lineage = training_lineage(context, train, holdout, *inputs)
    fingerprint = combine(
        code_version,
        name,
        lineage["training_set_version"],
        json.dumps(params, sort_keys=True),
        str(threshold),
    )
    previous = previous_summary(context, fingerprint)
    if previous is not None:
        with mlflow.materialization_run(
            context,
            tags={
                "candidate": name,
                "cutoff": cutoff,
                "unchanged": "true",
                "reused_run_id": previous["run_id"],
            },
        ) as run:
            run.log_metrics(previous["metrics"])
        return Output(
            previous,
            data_version=DataVersion(fingerprint),
            metadata={
                **run.dagster_metadata(),
                "unchanged": True,
                "reused_mlflow_run_id": previous["run_id"],
                "fingerprint": fingerprint,
                "summary": previous,
            },
        )
    with mlflow.materialization_run(context, tags={"candidate": name, "cutoff": cutoff}) as run:
        run.log_dataset(train, f"train {lineage['train_window']}", "training")
        run.log_dataset(holdout, f"holdout {lineage['holdout_window']}", "evaluation")
        run.log_dict(lineage, "lineage.json")
        result = fit_and_evaluate(
            pipeline, train, holdout, threshold, policy.fit_threads, (categorical, numeric)
        )
        run.log_params(
            {
                **params,
                "candidate": name,
                "cutoff": cutoff,
                "threshold": threshold,
                "train_start": str(train[DAY].min().date()),
                "holdout_end": str(holdout[DAY].max().date()),
            }
        )
        run.log_metrics(result.metrics)
        info = run.log_sklearn_model(result.model, feature_frame(train.head(5), categorical, numeric))
        plots = {
            "roc": roc_curve_png(result.holdout_labels, result.holdout_proba, f"{name}: ROC on holdout"),
            "calibration": calibration_png(
                result.holdout_labels, result.holdout_proba, f"{name}: calibration"
            ),
            "confusion": confusion_png(
                result.holdout_labels, result.holdout_proba, threshold, f"{name} @ {threshold}"
            ),
        }
        for plot_name, png in plots.items():
            run.log_png(png, plot_name)
        run.log_dict(build_profile(train, numeric, categorical), "reference_profile.json")
    value = {
        "name": name,
        "run_id": run.run_id,
        "model_uri": info.model_uri,
        "metrics": result.metrics,
        "params": params,
        "cutoff": cutoff,
        "code_version": code_version,
        "lineage": {k: v for k, v in lineage.items() if k != "feature_partitions"},
    }
    metadata = {
        **run.dagster_metadata(),
        "unchanged": False,
        "fingerprint": fingerprint,
        "summary": value,
        **{k: MetadataValue.float(float(v)) for k, v in result.metrics.items()},
        "plots": MetadataValue.md("\n\n".join(markdown_image(png, n) for n, png in plots.items())),
    }
    return Output(value, metadata=metadata, data_version=DataVersion(fingerprint))


def previous_summary(context, fingerprint: str) -> dict | None:
    """The last materialization's output, if it was computed from exactly these inputs."""
    event = context.instance.get_latest_materialization_event(context.asset_key)
    if event is None or context.run.tags.get(FORCE_TAG):
        return None
    metadata = event.asset_materialization.metadata
    stored = metadata.get("fingerprint")
    summary = metadata.get("summary")
    if stored is None or summary is None or stored.value != fingerprint:
        return None
    return summary.value


def training_lineage(
    context,
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    training_set: AssetKey = TRAINING_SET,
    features: AssetKey = FLIGHT_FEATURES,
) -> dict:
    """Which data a model is trained on: windows, the training set's version and the data
    version of every feature partition in them."""
    record = context.instance.get_latest_data_version_record(training_set)
    version = record.asset_materialization.tags.get("dagster/data_version") if record else None
    days = sorted({d.date().isoformat() for d in pd.to_datetime(pd.concat([train[DAY], holdout[DAY]]))})
    feature_versions = feature_partition_versions(context.instance, days, features)
    return {
        "training_set_version": version or "unknown",
        "train_window": f"{train[DAY].min():%Y-%m-%d}..{train[DAY].max():%Y-%m-%d}",
        "holdout_window": f"{holdout[DAY].min():%Y-%m-%d}..{holdout[DAY].max():%Y-%m-%d}",
        "feature_partitions": feature_versions,
        "feature_partition_count": len(feature_versions),
        "feature_versions_digest": combine(*(f"{d}={v}" for d, v in sorted(feature_versions.items()))),
    }


def feature_partition_versions(
    instance, days: list[str], features: AssetKey = FLIGHT_FEATURES
) -> dict[str, str]:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=features, asset_partitions=days), limit=len(days) * 4
    ).records
    versions: dict[str, str] = {}
    for r in records:  # newest first
        versions.setdefault(
            r.partition_key, r.asset_materialization.tags.get("dagster/data_version", "unknown")
        )
    return versions


CODE_VERSION = feature_reader_version(__name__, models, training_module, metrics_module)


def candidate_code_version(candidate: Candidate) -> str:
    """A builder outside ``ml/models.py`` brings its own code into its candidate's version."""
    if candidate.build.__module__ == models.__name__:
        return CODE_VERSION
    return combine(CODE_VERSION, source_version(candidate.build))


def build_candidate(candidate: Candidate) -> AssetsDefinition:
    strict = hyperparameter_config(candidate)
    form = launchpad_form(strict)
    name = candidate.asset_name
    code_version = candidate_code_version(candidate)

    @asset(
        key=candidate.key,
        group_name=GROUP,
        description=candidate.description,
        ins={"training_set": AssetIn(key=TRAINING_SET)},
        io_manager_key=MODEL_IO,
        kinds={"sklearn", "mlflow"},
        code_version=code_version,
    )
    def _candidate(
        context: AssetExecutionContext,
        config: form,
        training_set: pd.DataFrame,
        mlflow: MlflowTracking,
        policy: ModelPolicy,
    ):
        params = checked(strict, config, candidate.key.to_user_string()).model_dump()
        pipeline = candidate.build(**params)
        return train_candidate(context, name, pipeline, params, training_set, mlflow, policy, code_version)

    _candidate.__name__ = name
    return _candidate


def build_candidate_assets(candidates: Iterable[Candidate]) -> list[AssetsDefinition]:
    return [build_candidate(candidate) for candidate in candidates]
