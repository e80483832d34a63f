"""Jobs the schedules and sensors launch, and the latest training window they share."""

from datetime import date, timedelta

from dagster import AssetSelection, DagsterInstance, PartitionsDefinition, define_asset_job

from ml_platform.keys import FLIGHT_FEATURES, PREDICTIONS, RAW_DAILY, TRAINING_SET, op_name

TRAINING_SET_OP = op_name(TRAINING_SET)

# Raw days and the dbt models built from them (staging views and flight_features).
INGESTION_PATH = AssetSelection.assets(*RAW_DAILY) | AssetSelection.groups("features")
LANDING_PATH = INGESTION_PATH | AssetSelection.assets(PREDICTIONS)
RETRAINING = AssetSelection.groups("training")

# Ingestion runs execute their steps in the run's own process. Each step writes the warehouse
# and takes the one slot of the `duckdb_warehouse` pool, so the steps never run in parallel
# anyway; a process per step only added a code-location load (about 5 s) to each of them.
# Training keeps the default executor: its candidates fit in parallel.
IN_ONE_PROCESS = {"execution": {"config": {"in_process": {}}}}


def build_ingest_days_job(partitions: PartitionsDefinition):
    """Ingestion of a day or a range of days, on the code location's partitions."""
    return define_asset_job(
        "ingest_days",
        selection=INGESTION_PATH,
        partitions_def=partitions,
        config=IN_ONE_PROCESS,
        description="Raw flights and weather for a day, and the features built from them.",
        tags={"ml_platform/flow": "ingestion"},
    )


retrain_job = define_asset_job(
    "retrain",
    selection=RETRAINING,
    description="Training set for a cutoff, the candidates, the gate and the champion.",
    tags={"ml_platform/flow": "retraining"},
)


def latest_cutoff(instance: DagsterInstance, holdout_days: int, first_day: date) -> date | None:
    """The cutoff whose holdout ends on the newest day with features: the latest full window.
    None without features, or when that cutoff precedes ``first_day``, the first partition (the
    launchpad takes only the days of the partitions as cutoffs)."""
    keys = instance.get_materialized_partitions(FLIGHT_FEATURES)
    if not keys:
        return None
    newest = max(date.fromisoformat(k) for k in keys)
    cutoff = newest - timedelta(days=holdout_days - 1)
    return cutoff if cutoff >= first_day else None


def retrain_run_config(cutoff: date, window_days: int, holdout_days: int) -> dict:
    return {
        "ops": {
            TRAINING_SET_OP: {
                "config": {
                    "cutoff": cutoff.isoformat(),
                    "window_days": window_days,
                    "holdout_days": holdout_days,
                }
            }
        }
    }
