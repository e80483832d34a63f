"""What exactly produced a prediction: the model version, its training window, and the raw files.

Reads only: the warehouse (read-only, the DuckDB file or the lake), the MLflow registry, and the
Dagster instance's materialization metadata (which records each raw day's files and content hash).
"""

from datetime import date, timedelta

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from ml_platform.keys import PREDICTIONS, RAW_DAILY
from ml_platform.resources.mlflow import MlflowTracking
from ml_platform.resources.warehouse import Warehouse, table_exists

RAW_TABLES = {key.path[-1]: key for key in RAW_DAILY}


class LineageError(LookupError):
    pass


def _raw_day(instance: DagsterInstance, key: AssetKey, day: str) -> dict:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1
    ).records
    if not records:
        return {"materialized": False}
    mat = records[0].asset_materialization
    meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
    return {
        "materialized": True,
        "data_version": mat.tags.get("dagster/data_version"),
        "content_hash": meta.get("content_hash"),
        "source_files": meta.get("source_files"),
        "dagster_run_id": records[0].run_id,
    }


def _days(window: str) -> list[str]:
    first, last = (date.fromisoformat(d) for d in window.split(".."))
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def trace_prediction(
    flight_id: str, warehouse: Warehouse, mlflow: MlflowTracking, instance: DagsterInstance
) -> dict:
    where = warehouse.engine.describe()
    with warehouse.connection(read_only=True) as conn:
        if not table_exists(conn, *PREDICTIONS.path):
            raise LineageError(f"no predictions in {where}: materialize the day's predictions first")
        rows = conn.execute(
            "select flight_id, strftime(flight_date, '%Y-%m-%d'), late_probability, predicted_late, "
            "model_name, model_version from serving.predictions where flight_id = ?",
            [flight_id],
        ).fetchall()
    if not rows:
        raise LineageError(f"no prediction for flight {flight_id!r} in {where}")
    _, day, probability, late, model_name, version = rows[0]
    if model_name != mlflow.registered_model_name:
        raise LineageError(f"prediction came from model {model_name!r}, not the configured registry's")
    mv = mlflow.client().get_model_version(model_name, version)
    tags = dict(mv.tags)
    train_window = tags.get("lineage.train_window", "")
    training_raw = {}
    if train_window:
        for table, key in RAW_TABLES.items():
            days = {d: _raw_day(instance, key, d) for d in _days(train_window)}
            files = sorted({d["source_files"] for d in days.values() if d.get("source_files")})
            training_raw[table] = {
                "days": len(days),
                "materialized_days": sum(d["materialized"] for d in days.values()),
                "source_files": files,
            }
    return {
        "flight_id": flight_id,
        "flight_date": day,
        "prediction": {"late_probability": probability, "predicted_late": bool(late)},
        "model": {
            "name": model_name,
            "version": str(version),
            "uri": f"models:/{model_name}/{version}",
            "candidate": tags.get("candidate"),
            "code_version": tags.get("code_version"),
            "gate": tags.get("gate"),
            "trained_by_dagster_run": tags.get("dagster.run_id"),
            "dagster_run_url": tags.get("dagster.run_url"),
            "mlflow_run_id": mv.run_id,
        },
        "training": {
            "cutoff": tags.get("cutoff"),
            "train_window": train_window,
            "holdout_window": tags.get("lineage.holdout_window"),
            "feature_partitions": tags.get("lineage.feature_partition_count"),
            "feature_versions_digest": tags.get("lineage.feature_versions_digest"),
            "training_set_version": tags.get("lineage.training_set_version"),
            "raw": training_raw,
        },
        "raw_for_flight_day": {table: _raw_day(instance, key, day) for table, key in RAW_TABLES.items()},
    }


def render(trace: dict) -> str:
    m, t, p = trace["model"], trace["training"], trace["prediction"]
    lines = [
        f"flight {trace['flight_id']} on {trace['flight_date']}: "
        f"p(late)={p['late_probability']:.3f}, predicted late={p['predicted_late']}",
        f"model   {m['uri']} ({m['candidate']}, gate {m['gate']}, code {m['code_version']})",
        f"        trained by Dagster run {m['trained_by_dagster_run']}, MLflow run {m['mlflow_run_id']}",
        f"        {m.get('dagster_run_url') or 'no Dagster run link recorded'}",
        f"training cutoff {t['cutoff']}: train {t['train_window']}, holdout {t['holdout_window']}, "
        f"{t['feature_partitions']} feature partitions (digest {t['feature_versions_digest']})",
    ]
    for table, info in t["raw"].items():
        files = ", ".join(info["source_files"])
        lines.append(f"        raw {table}: {info['materialized_days']}/{info['days']} days from {files}")
    for table, info in trace["raw_for_flight_day"].items():
        lines.append(
            f"flight day raw {table}: {info.get('source_files')} (content {info.get('content_hash')}, "
            f"version {info.get('data_version')})"
        )
    return "\n".join(lines)
