"""The point-in-time feature models as one daily-partitioned dbt asset beside ``flight_features``:
``day_ahead_features`` and ``nowcast_features``, from the intraday raw tables (schedule,
departures, arrivals, observations).

Same write-audit-publish as ``flight_features`` (``publish.py``): dbt builds the run's window
into features_staging and tests it; both models are published only if every blocking test of
either passed, so the two regimes never disagree on which days exist."""

from contextlib import ExitStack
from datetime import date

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    Config,
    Failure,
    Output,
    PartitionsDefinition,
)
from dagster_dbt import dbt_assets
from pydantic import Field

from ml_platform.features.assets import (
    PIT_MODELS,
    STAGING_LOCK_SECONDS,
    FeatureTranslator,
    dbt_project,
    dbt_window,
    is_blocking,
    manifest,
)
from ml_platform.features.publish import Publication, publication_of, publish
from ml_platform.keys import DAY_AHEAD_FEATURES, NOWCAST_FEATURES
from ml_platform.resources.dbt import DbtCli
from ml_platform.resources.warehouse import WAREHOUSE_POOL, Warehouse, WriteScope

PARTITION_COLUMN = "flight_date"
PUBLICATIONS: dict[AssetKey, Publication] = {
    key: publication_of(manifest["nodes"][f"model.ml_platform.{key.path[-1]}"], PARTITION_COLUMN)
    for key in (DAY_AHEAD_FEATURES, NOWCAST_FEATURES)
}


class PitTranslator(FeatureTranslator):
    def get_metadata(self, dbt_resource_props):
        extra = {"partition_expr": PARTITION_COLUMN} if dbt_resource_props["name"] in PIT_MODELS else {}
        return {**super().get_metadata(dbt_resource_props), **extra}


class PitConfig(Config):
    nowcast_hours: int = Field(
        default=2, ge=0, le=24, description="Hours before its scheduled departure hour a flight is nowcast"
    )


def build_pit_features(partitions: PartitionsDefinition, database: str | None = None) -> AssetsDefinition:
    """The two models on the code location's partitions (their tables named in ``database``)."""

    @dbt_assets(
        manifest=manifest,
        project=dbt_project,
        dagster_dbt_translator=PitTranslator(manifest, database),
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        name="pit_features",
        select=" ".join(PIT_MODELS),
    )
    def pit_features(context: AssetExecutionContext, config: PitConfig, dbt: DbtCli, warehouse: Warehouse):
        """dbt builds and tests the window in staging; it is published only if every blocking
        test passed."""
        yield from build_and_publish(context, config, dbt, warehouse)

    return pit_features


def build_and_publish(context: AssetExecutionContext, config: PitConfig, dbt: DbtCli, warehouse: Warehouse):
    variables = {**dbt_window(context), "nowcast_hours": str(config.nowcast_hours)}
    selected = [k for k in PUBLICATIONS if k in context.selected_asset_keys]
    held: list = []  # the models' Outputs and check results, yielded once the window is published
    with ExitStack() as stack:
        for key in selected:
            stack.enter_context(
                warehouse.engine.locked(WriteScope(PUBLICATIONS[key].staged), timeout=STAGING_LOCK_SECONDS)
            )
        for event in dbt.build(context, warehouse.engine, variables):
            if isinstance(event, Output | AssetCheckResult):
                held.append(event)
                continue
            yield event
        blocking = [e for e in held if is_blocking(e)]
        if blocking:
            yield from (e for e in held if isinstance(e, AssetCheckResult))
            names = ", ".join(e.check_name for e in blocking)
            raise Failure(
                f"point-in-time features {context.partition_keys[0]}..{context.partition_keys[-1]}: "
                f"not published; blocking dbt test(s) failed: {names}",
                allow_retries=False,
            )
        start, end = (variables["min_date"], variables["max_date"])
        for key in selected:
            publish(warehouse, PUBLICATIONS[key], date.fromisoformat(start), date.fromisoformat(end))
    yield from held
