"""Model selection and the champion: the promotion gate between training and serving."""

from collections.abc import Iterable

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetIn,
    AssetsDefinition,
    MetadataValue,
    Output,
    asset,
    asset_check,
)

import ml_platform.ml.gate as gate_module
from ml_platform import faults
from ml_platform.features.assets import feature_reader_version
from ml_platform.keys import CHAMPION_MODEL, MODEL_SELECTION, TRAINING_SET, Candidate
from ml_platform.ml.frames import feature_frame, labels
from ml_platform.ml.gate import decide
from ml_platform.ml.metrics import classification_metrics
from ml_platform.resources.mlflow import CHALLENGER, CHAMPION, MlflowTracking
from ml_platform.resources.policy import ModelPolicy
from ml_platform.training.candidates import MODEL_IO

GROUP = "training"


CODE_VERSION = feature_reader_version(__name__, gate_module)


def score_current_champion(
    mlflow: MlflowTracking,
    holdout: pd.DataFrame,
    threshold: float,
    columns: tuple[list[str], list[str]] | None = None,
) -> tuple[str | None, float | None]:
    """The current champion's AUC on this holdout, so the comparison is like for like."""
    version = mlflow.version_for(CHAMPION)
    if version is None:
        return None, None
    model = mlflow.load_version(version.version)
    proba = model.predict_proba(feature_frame(holdout, *(columns or (None, None))))[:, 1]
    metrics = classification_metrics(labels(holdout), proba, threshold)
    return str(version.version), metrics["roc_auc"]


def build_model_selection(registered: Iterable[Candidate]) -> AssetsDefinition:
    """The gate over the registered candidates: each is an input of the selection."""

    @asset(
        key=MODEL_SELECTION,
        group_name=GROUP,
        ins={
            **{c.asset_name: AssetIn(key=c.key) for c in registered},
            "training_set": AssetIn(key=TRAINING_SET),
        },
        io_manager_key=MODEL_IO,
        kinds={"mlflow"},
        code_version=CODE_VERSION,
    )
    def model_selection(
        context: AssetExecutionContext,
        mlflow: MlflowTracking,
        policy: ModelPolicy,
        training_set: pd.DataFrame,
        **candidates,
    ):
        """Best candidate by holdout AUC, and whether it clears the floor and beats the champion."""
        return select(context, mlflow, policy, training_set, candidates)

    return model_selection


def gate(
    mlflow: MlflowTracking,
    policy: ModelPolicy,
    training_set: pd.DataFrame,
    candidates: dict,
    columns: tuple[list[str], list[str]] | None = None,
):
    """The gate's decision over ``candidates`` against ``mlflow``'s current champion, both
    scored on the same holdout: what ``select`` records and the nowcast champion applies."""
    holdout = training_set[training_set.split == "holdout"]
    champion_version, champion_auc = score_current_champion(
        mlflow, holdout, policy.decision_threshold, columns
    )
    aucs = {c["name"]: c["metrics"]["roc_auc"] for c in candidates.values()}
    decision = decide(aucs, champion_auc, policy.promotion_auc_floor)
    best = next(c for c in candidates.values() if c["name"] == decision.best)
    value = {
        "best": best,
        "promote": decision.promote,
        "alias": decision.alias,
        "reasons": decision.reasons,
        "champion_version_before": champion_version,
        "champion_auc_on_holdout": champion_auc,
    }
    return decision, aucs, value


def select(
    context, mlflow: MlflowTracking, policy: ModelPolicy, training_set: pd.DataFrame, candidates: dict
):
    decision, aucs, value = gate(mlflow, policy, training_set, candidates)
    champion_version, champion_auc = value["champion_version_before"], value["champion_auc_on_holdout"]
    with mlflow.materialization_run(context, tags={"decision": decision.alias}) as run:
        run.log_params(
            {
                "floor": policy.promotion_auc_floor,
                "best": decision.best,
                "champion_version_before": champion_version or "none",
            }
        )
        run.log_metrics(
            {f"auc_{k}": v for k, v in aucs.items()} | {"champion_auc": champion_auc or float("nan")}
        )
        run.log_text("\n".join(decision.reasons), "decision.txt")
    rows = [
        {
            "candidate": c["name"],
            **{
                k: c["metrics"][k]
                for k in ("roc_auc", "log_loss", "precision", "recall", "calibration_error", "fit_seconds")
            },
        }
        for c in candidates.values()
    ]
    return Output(
        value,
        metadata={
            **run.dagster_metadata(),
            "decision": MetadataValue.text("promote to champion" if decision.promote else "keep champion"),
            "best_candidate": decision.best,
            "best_auc": float(decision.best_auc),
            "champion_auc_on_same_holdout": float(champion_auc) if champion_auc is not None else float("nan"),
            "reasons": MetadataValue.md("\n".join(f"- {r}" for r in decision.reasons)),
            "candidates": MetadataValue.md(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f")),
        },
    )


@asset(
    key=CHAMPION_MODEL,
    group_name=GROUP,
    ins={"model_selection": AssetIn(key=MODEL_SELECTION)},
    io_manager_key=MODEL_IO,
    kinds={"mlflow"},
    code_version=CODE_VERSION,
)
def champion_model(context: AssetExecutionContext, mlflow: MlflowTracking, model_selection: dict):
    """Registers the selected candidate; it takes the ``champion`` alias only if it passed the
    gate, otherwise ``challenger``. Tags go on the version before any alias moves."""
    return promote(context, mlflow, model_selection)


def promote(context, mlflow: MlflowTracking, model_selection: dict) -> Output:
    """Register the gate's choice in ``mlflow``'s registered model and move the alias it earned."""
    best = model_selection["best"]
    passed = model_selection["promote"]
    tags = {
        "gate": "passed" if passed else "rejected",
        "candidate": best["name"],
        "cutoff": best["cutoff"],
        "holdout_auc": f"{best['metrics']['roc_auc']:.6f}",
        "dagster.run_id": context.run_id,
        "dagster.run_url": f"{mlflow.dagster_url.rstrip('/')}/runs/{context.run_id}",
        "gate_reasons": "; ".join(model_selection["reasons"])[:5000],
        "code_version": best.get("code_version", "unknown"),
        **{f"lineage.{k}": str(v) for k, v in best.get("lineage", {}).items()},
    }
    with mlflow.materialization_run(context, tags={"decision": model_selection["alias"]}) as run:
        existing = mlflow.version_with_source(best["model_uri"])
        if existing is None:
            version = mlflow.register(best["model_uri"], {**tags, "source_run_id": best["run_id"]})
        else:  # the same model selected again: one registry version per model, tags brought up to date
            version = str(existing.version)
            mlflow.set_version_tags(version, {"gate": tags["gate"], "gate_reasons": tags["gate_reasons"]})
        faults.reach("registry.before_alias")
        mlflow.set_alias(model_selection["alias"], version)
        run.log_params({"registered_version": version, "alias": model_selection["alias"]})
    current = mlflow.version_for(CHAMPION)
    value = {
        "registered_version": version,
        "alias": model_selection["alias"],
        "champion_version": str(current.version) if current else None,
        "newly_registered": existing is None,
    }
    return Output(
        value,
        metadata={
            **run.dagster_metadata(),
            "registered_model": mlflow.registered_model_name,
            "registered_version": version,
            "alias": model_selection["alias"],
            "champion_version": value["champion_version"] or "none",
            "unchanged": existing is not None,
            "reasons": MetadataValue.md("\n".join(f"- {r}" for r in model_selection["reasons"])),
        },
    )


@asset_check(asset=champion_model, blocking=True, description="The champion alias points at a gated model.")
def champion_passed_gate(mlflow: MlflowTracking) -> AssetCheckResult:
    """Predictions must never use a model the gate did not pass (or that nobody evaluated)."""
    version = mlflow.version_for(CHAMPION)
    if version is None:
        return AssetCheckResult(passed=False, metadata={"problem": "no model carries the champion alias"})
    gate = version.tags.get("gate")
    challenger = mlflow.version_for(CHALLENGER)
    return AssetCheckResult(
        passed=gate == "passed",
        metadata={
            "champion_version": str(version.version),
            "gate": gate or "missing (model was never evaluated by the gate)",
            "holdout_auc": version.tags.get("holdout_auc", "unknown"),
            "challenger_version": str(challenger.version) if challenger else "none",
        },
    )
