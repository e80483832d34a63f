"""dbt models as assets: the ``flight_features`` table, built and tested per window by dbt and
published by the step (``publish.py``); staging models are inlined."""

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    BackfillPolicy,
    MaterializeResult,
    Output,
    PartitionsDefinition,
)
from dagster_dbt import DagsterDbtTranslator, DbtProject, dbt_assets

from ml_platform.config import DBT_PROJECT_DIR
from ml_platform.features.freshness_of_inputs import FINGERPRINT, current_fingerprints, unchanged_window
from ml_platform.features.publish import Publication, publication_of, publish, publish_schema_of, refusal
from ml_platform.keys import DAY_AHEAD_FEATURES, FLIGHT_FEATURES, INTRADAY_GROUP, NOWCAST_FEATURES
from ml_platform.partitions import window_dates
from ml_platform.refusals import refused
from ml_platform.resources.dbt import DbtCli
from ml_platform.resources.warehouse import WAREHOUSE_POOL, Warehouse, WriteScope, table_exists
from ml_platform.versions import FORCE_TAG, combine, module_version

GROUP = "features"
KEEP_RUN_TARGETS = 20
# How long a build waits for another window's build to leave the staging relation (a lake's).
STAGING_LOCK_SECONDS = 1800.0
PARTITION_COLUMNS = {"flight_features": "flight_date"}
# The point-in-time models (pit_assets.py) are assets of their own, on the intraday raw tables:
# this asset neither builds them nor versions its readers by their SQL.
PIT_MODELS = ("day_ahead_features", "nowcast_features")

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
if not dbt_project.manifest_path.exists():
    raise FileNotFoundError(
        f"dbt manifest {dbt_project.manifest_path} is missing: run `make manifest` "
        "(or `dbt parse --project-dir dbt_project --profiles-dir dbt_project`)"
    )
manifest = json.loads(dbt_project.manifest_path.read_text())


class FeatureTranslator(DagsterDbtTranslator):
    """Keys by warehouse schema (``features/flight_features``); sources keep dbt's default
    ``raw/<table>``, which is where the ingestion assets write. ``database``: the warehouse's
    database name in table names (``Engine.database``; None: the prepared manifest's)."""

    def __init__(self, manifest: Mapping[str, Any], database: str | None = None):
        super().__init__()
        self._nodes = manifest["nodes"]
        self._database = database

    def get_code_version(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        """The model's SQL and the SQL of the ephemeral models compiled into it: editing a
        staging model changes the version of every model that inlines it."""
        own = super().get_code_version(dbt_resource_props)
        inlined = sorted(self._inlined(dbt_resource_props))
        if own is None or not inlined:
            return own
        return combine(own, *(f"{u}={self._nodes[u]['checksum']['checksum']}" for u in inlined))

    def _inlined(self, props: Mapping[str, Any]) -> set[str]:
        found: set[str] = set()
        for parent in props.get("depends_on", {}).get("nodes", []):
            node = self._nodes.get(parent)
            if node and node.get("config", {}).get("materialized") == "ephemeral":
                found |= {parent, *self._inlined(node)}
        return found

    def get_asset_key(self, dbt_resource_props: Mapping[str, Any]) -> AssetKey:
        """A model dbt builds into a staging schema is keyed by the schema it is published to."""
        if dbt_resource_props["resource_type"] == "source":
            return super().get_asset_key(dbt_resource_props)
        schema = publish_schema_of(dbt_resource_props) or dbt_resource_props["config"]["schema"]
        return AssetKey([schema, dbt_resource_props["name"]])

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None):
        """A published model's table is the published one, not the staging relation dbt writes."""
        spec = super().get_asset_spec(manifest, unique_id, project)
        props = self.get_resource_props(manifest, unique_id)
        published = publish_schema_of(props)
        if props["resource_type"] != "model" or not published:
            return spec
        database = self._database or props.get("database")
        table = ".".join(p for p in (database, published, props["alias"]) if p)
        return spec.replace_attributes(metadata={**spec.metadata, "dagster/table_name": table})

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if self.get_asset_key(dbt_resource_props) in (DAY_AHEAD_FEATURES, NOWCAST_FEATURES):
            return INTRADAY_GROUP  # built from the intraday feed, beside it
        return GROUP

    def get_metadata(self, dbt_resource_props: Mapping[str, Any]) -> Mapping[str, Any]:
        column = PARTITION_COLUMNS.get(dbt_resource_props["name"])
        extra = {"partition_expr": column} if column else {}
        return {**super().get_metadata(dbt_resource_props), **extra}


def dbt_window(context: AssetExecutionContext) -> dict[str, str]:
    """The run's partition window as the dbt vars ``macros/window.sql`` reads."""
    start, end = window_dates(*context.partition_time_window)
    return {"min_date": start.isoformat(), "max_date": end.isoformat()}


def build_dbt_features(partitions: PartitionsDefinition, database: str | None = None) -> AssetsDefinition:
    """The dbt models as one multi-asset on the code location's partitions, their tables named in
    ``database`` (the warehouse's: ``Engine.database``)."""

    @dbt_assets(
        manifest=manifest,
        project=dbt_project,
        dagster_dbt_translator=FeatureTranslator(manifest, database),
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        name="dbt_features",
        exclude=" ".join(PIT_MODELS),
    )
    def dbt_features(context: AssetExecutionContext, dbt: DbtCli, warehouse: Warehouse):
        """dbt builds the run's partition window into staging and tests it (the tests are asset
        checks); the window is published only if every blocking test passed. A window whose raw
        inputs and SQL are unchanged since its last build is not rebuilt."""
        yield from build_window(context, dbt, warehouse)

    return dbt_features


def build_window(context: AssetExecutionContext, dbt: DbtCli, warehouse: Warehouse):
    partitions = context.partition_keys
    fingerprints = current_fingerprints(context.instance, models_code_version(context), partitions)
    if FLIGHT_FEATURES in context.selected_asset_keys:
        for pk, fingerprint in fingerprints.items():
            context.add_asset_metadata(
                {FINGERPRINT: fingerprint}, asset_key=FLIGHT_FEATURES, partition_key=pk
            )
    if (
        not context.run.tags.get(FORCE_TAG)
        and unchanged_window(context.instance, partitions, fingerprints)
        and window_is_stored(warehouse, context)
    ):
        context.log.info(f"inputs and code unchanged for {partitions[0]}..{partitions[-1]}: dbt not run")
        for key in sorted(context.selected_asset_keys):
            yield MaterializeResult(asset_key=key, metadata={"unchanged": True})
        return
    prune_run_targets(dbt_project.project_dir / "target")
    # The staged relation and the stored test failures are one per warehouse, not per window: on a
    # lake, where builds of other windows run at once, a build holds them from dbt's first write
    # to the publish (on the file, the warehouse pool already runs one build at a time).
    with warehouse.engine.locked(WriteScope(PUBLICATION.staged), timeout=STAGING_LOCK_SECONDS):
        held = yield from build_and_publish(context, dbt, warehouse)
    yield from held


def build_and_publish(context: AssetExecutionContext, dbt: DbtCli, warehouse: Warehouse):
    """dbt's events as they come, except the feature table's Output and check results, which are
    returned once the window is published (or the step fails)."""
    partitions = context.partition_keys
    # dbt writes the window into its staging relation and audits it there. The feature table's
    # Output and its check results are held until the build ends: the window is published (and
    # each day given its row count) only when every blocking test passed; otherwise the check
    # results are reported without an Output and the step fails. Dagster attaches a check result
    # to the materialization that exists when the result arrives, so the Output goes first.
    held: list = []  # the feature table's Output, then its check results
    try:
        for event in dbt.build(context, warehouse.engine, dbt_window(context)):
            if isinstance(event, Output):
                event = event.with_metadata({**event.metadata, "unchanged": False})
                if context.asset_key_for_output(event.output_name) == FLIGHT_FEATURES:
                    held.append(event)
                    continue
            if held and isinstance(event, AssetCheckResult) and event.asset_key == FLIGHT_FEATURES:
                held.append(event)
                continue
            yield event
    except Exception as error:
        yield from refuse(held, warehouse, context, error)
        raise
    if any(is_blocking(e) for e in held):
        yield from refuse(held, warehouse, context, None)
    if held:
        start, end = window_dates(*context.partition_time_window)
        counts = publish(warehouse, PUBLICATION, start, end)
        for day in partitions:
            context.add_asset_metadata(
                {"dagster/partition_row_count": int(counts.get(day, 0))},
                asset_key=FLIGHT_FEATURES,
                partition_key=day,
            )
    return held


def is_blocking(event) -> bool:
    """A failed check of error severity: a blocking dbt test."""
    if not isinstance(event, AssetCheckResult):
        return False
    return not event.passed and event.severity == AssetCheckSeverity.ERROR


def refuse(held: list, warehouse: Warehouse, context: AssetExecutionContext, error: Exception | None):
    """The check results of a window that is not published, then the step's failure: ``error``
    as it is when no blocking test failed (the build itself did), else a ``Failure`` naming the
    partition, the failed tests and a few of their rows, not retried (the same rows fail again)."""
    checks = [e for e in held if isinstance(e, AssetCheckResult)]
    failed = [c for c in checks if is_blocking(c)]
    # Dagster attaches these to the last published materialization: a failed one says that the
    # rows it judged are not those.
    yield from (_refused(c) if is_blocking(c) else c for c in checks)
    if not failed:
        if error is not None:
            raise error
        return
    tests = [(c.check_name, manifest["nodes"].get(_value(c.metadata.get("unique_id")))) for c in failed]
    description, metadata = refusal(
        warehouse, PUBLICATION, FLIGHT_FEATURES.to_user_string(), context.partition_keys, tests
    )
    raise refused(description, metadata) from error


def _refused(check: AssetCheckResult) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=check.asset_key,
        check_name=check.check_name,
        passed=check.passed,
        severity=check.severity,
        metadata=check.metadata,
        description="Refused window, not published.",
    )


def _value(metadata_value) -> Any:
    return getattr(metadata_value, "value", metadata_value)


def window_is_stored(warehouse: Warehouse, context: AssetExecutionContext) -> bool:
    """The instance may remember a build the warehouse has lost: trust it only if every raw
    flight of the window has its feature row."""
    start, end = window_dates(*context.partition_time_window)
    with warehouse.connection() as conn:
        if not table_exists(conn, *FLIGHT_FEATURES.path):
            return False
    counts = warehouse.query(
        "select (select count(*) from raw.flights where flight_date >= ? and flight_date < ?)"
        " = (select count(*) from features.flight_features where flight_date >= ? and flight_date < ?)"
        " as complete",
        [start, end, start, end],
    )
    return bool(counts.complete.iloc[0])


def model_code_versions(manifest: Mapping[str, Any]) -> dict[AssetKey, str | None]:
    """The code version of each dbt model that is an asset (ephemeral ones are compiled into
    others), as ``dbt_assets`` gives them: known at import, before any partitions are chosen."""
    translator = FeatureTranslator(manifest)
    return {
        translator.get_asset_key(node): translator.get_code_version(node)
        for node in manifest["nodes"].values()
        if node["resource_type"] == "model"
        and node["config"].get("materialized") != "ephemeral"
        and node["name"] not in PIT_MODELS
    }


MODEL_CODE_VERSIONS = model_code_versions(manifest)
# Where flight_features is audited and published (dbt_project.yml): checked when this module loads.
PUBLICATION: Publication = publication_of(
    manifest["nodes"]["model.ml_platform.flight_features"], PARTITION_COLUMNS["flight_features"]
)


def sql_version(keys) -> str:
    """The code versions (SQL checksums) of these dbt models, combined."""
    return combine(*(f"{k.to_user_string()}={MODEL_CODE_VERSIONS.get(k)}" for k in sorted(keys)))


def models_code_version(context: AssetExecutionContext) -> str:
    """The code version of every model this step builds, combined."""
    return sql_version(context.selected_asset_keys)


def feature_reader_version(module_name: str, *helpers) -> str:
    """Code version of an asset computed from the features: its own code and the SQL of every
    model behind them. Dagster passes no staleness on to descendants, so a feature SQL edit
    reaches the training set, the models and the predictions through this."""
    return combine(module_version(module_name, *helpers), sql_version(MODEL_CODE_VERSIONS))


def prune_run_targets(target_dir: Path, keep: int = KEEP_RUN_TARGETS) -> list[Path]:
    """dagster-dbt gives every invocation its own ``target/<asset>-<run>-<hash>`` folder (about 2 MB:
    manifest, compiled SQL, log). Keep the newest ``keep`` for debugging; without this the folder
    grows by one per run, forever. The prepared manifest in ``target/`` itself is never touched."""
    runs = sorted(
        (p for p in target_dir.glob("dbt_features-*") if p.is_dir()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    removed = runs[keep:]
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed
