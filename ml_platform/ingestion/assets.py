"""Raw assets: what upstream delivered, conformed to the declared schema and checked."""

from collections.abc import Iterator

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    Backoff,
    DataVersion,
    Failure,
    Jitter,
    MetadataValue,
    Output,
    PartitionsDefinition,
    RetryPolicy,
    asset,
)

import ml_platform.ingestion.delivery as delivery_module
import ml_platform.ingestion.judge as judge_module
import ml_platform.ingestion.rules as rules_module
import ml_platform.ingestion.schemas as schemas_module
import ml_platform.ingestion.source as source_module
import ml_platform.ingestion.values as values_module
from ml_platform.ingestion.quality import (
    DAILY_CHECKS,
    REFERENCE_CHECKS,
    Outcome,
    evaluate_daily_batch,
    evaluate_reference,
    refusal_report,
)
from ml_platform.ingestion.schemas import DAILY_TABLES, REFERENCE_TABLES, TableSpec
from ml_platform.ingestion.source import FlightSource, SourceBatch, SourceError
from ml_platform.keys import RAW
from ml_platform.partitions import days_in, window_dates
from ml_platform.refusals import refused as refused_failure
from ml_platform.resources.warehouse import WAREHOUSE_POOL, describe_frame
from ml_platform.versions import frame_hash, hash_of_rows, row_hashes, source_version

GROUP = "ingestion"
# The code that reads, judges and conforms a delivery: its edits change the raw assets' versions.
READER_MODULES = (schemas_module, source_module, delivery_module, judge_module, rules_module, values_module)
# Upstream can be briefly unavailable (a share remounting, a file being replaced): retry with
# exponential backoff and jitter. A bad file is not transient: it fails at once (see _read).
UPSTREAM_RETRY = RetryPolicy(max_retries=3, delay=2, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)


def _read(read, *args) -> SourceBatch:
    try:
        return read(*args)
    except SourceError as exc:
        raise Failure(description=str(exc), metadata={"problem": str(exc)}, allow_retries=False) from exc


def _check_specs(key: AssetKey, checks: list[tuple[str, bool]]) -> list[AssetCheckSpec]:
    return [AssetCheckSpec(name, asset=key, blocking=blocking) for name, blocking in checks]


def _results(key: AssetKey, outcomes: list[Outcome], stored: bool = True) -> Iterator[AssetCheckResult]:
    """``stored`` False: the audited rows were refused. Dagster attaches these results to the
    asset's last stored materialization, so a failed one says the rows it judged are not those."""
    for o in outcomes:
        refused = not stored and o.blocking and not o.passed
        yield AssetCheckResult(
            asset_key=key,
            check_name=o.name,
            passed=o.passed,
            severity=AssetCheckSeverity.WARN if o.warn_only else AssetCheckSeverity.ERROR,
            description=f"{o.description} Refused delivery, not stored." if refused else o.description,
            metadata=o.metadata,
        )


def refusal(key: AssetKey, partitions: list[str], origins: list[str], refused: list[Outcome]) -> Failure:
    """The step's failure for a window that failed a blocking check: not retried (the same
    delivery fails the same way), naming partition, files, checks and a few offending rows."""
    return refused_failure(*refusal_report(key.to_user_string(), partitions, origins, refused))


def build_daily_raw_asset(
    spec: TableSpec,
    partitions: PartitionsDefinition,
    key: AssetKey | None = None,
    readers=READER_MODULES,
    group: str = GROUP,
):
    key = key or RAW[spec.name]

    @asset(
        key=key,
        group_name=group,
        description=spec.description,
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        metadata={"partition_expr": spec.partition_column},
        check_specs=_check_specs(key, DAILY_CHECKS),
        pool=WAREHOUSE_POOL,
        kinds={"duckdb", "pandas"},
        retry_policy=UPSTREAM_RETRY,
        code_version=source_version(build_daily_raw_asset, *readers),
    )
    def _raw_daily(context: AssetExecutionContext, source: FlightSource):
        start, end = window_dates(*context.partition_time_window)
        batch = _read(source.read_days, spec.name, start, end)
        for warning in batch.warnings:
            context.log.warning(warning)
        # Write-audit-publish: the frame is the staged window, the checks audit exactly its rows,
        # and only a window that passes every blocking check is published (the IO manager
        # replaces the window in one transaction). A refused window leaves the stored one as it was.
        frame = batch.frame
        outcomes = evaluate_daily_batch(
            frame, spec, start, end, source.row_counts(spec.name, start, end), days_in(start, end)
        )
        refused = [o for o in outcomes if o.blocking and not o.passed]
        if refused:
            yield from _results(key, outcomes, stored=False)
            raise refusal(key, context.partition_keys, batch.origins, refused)
        hashes = row_hashes(frame)
        record_partition_lineage(context, frame, hashes, spec, days_in(start, end), batch.origins)
        yield Output(
            frame,
            metadata={
                **describe_frame(frame, spec.partition_column),
                "days": MetadataValue.int(len(days_in(start, end))),
                "source": MetadataValue.text(_summarize(batch.origins)),
                "warnings": MetadataValue.int(len(batch.warnings)),
            },
            # The content decides the version: identical data delivered again is unchanged.
            data_version=DataVersion(hash_of_rows(frame.columns, hashes)),
        )
        yield from _results(key, outcomes)

    _raw_daily.__name__ = spec.name
    return _raw_daily


def build_reference_asset(spec: TableSpec):
    key = RAW[spec.name]

    @asset(
        key=key,
        group_name=GROUP,
        description=spec.description,
        check_specs=_check_specs(key, REFERENCE_CHECKS),
        pool=WAREHOUSE_POOL,
        kinds={"duckdb", "pandas"},
        retry_policy=UPSTREAM_RETRY,
        code_version=source_version(build_reference_asset, *READER_MODULES),
    )
    def _reference(context: AssetExecutionContext, source: FlightSource):
        batch = _read(source.read_reference, spec.name)
        for warning in batch.warnings:
            context.log.warning(warning)
        outcomes = evaluate_reference(batch.frame, spec)
        refused = [o for o in outcomes if o.blocking and not o.passed]
        if refused:  # audited before the whole table is replaced, as a daily window is
            yield from _results(key, outcomes, stored=False)
            raise refusal(key, [], batch.origins, refused)
        yield Output(
            batch.frame,
            metadata={
                **describe_frame(batch.frame),
                "source": MetadataValue.text(_summarize(batch.origins)),
                "content_hash": frame_hash(batch.frame),
            },
            data_version=DataVersion(frame_hash(batch.frame)),
        )
        yield from _results(key, outcomes)

    return _reference


def record_partition_lineage(context, frame, hashes, spec: TableSpec, days, origins: list[str]) -> None:
    """Per day: the row count, the content hash and the files it came from (for skip-if-unchanged
    and lineage).
    ``hashes`` are the frame's ``row_hashes``: each day's hash comes from its rows' hashes."""
    # One grouping pass: comparing the whole column with each day is days x rows.
    rows_by_day = {
        stamp.date(): positions
        for stamp, positions in frame.groupby(frame[spec.partition_column], sort=False).indices.items()
    }
    for day in days:
        positions = rows_by_day.get(day)
        day_hashes = hashes[positions] if positions is not None else hashes[:0]
        files = [o for o in origins if day.isoformat() in o] or sorted(set(origins))
        context.add_asset_metadata(
            {
                "content_hash": hash_of_rows(frame.columns, day_hashes),
                "source_files": ", ".join(files),
                "dagster/partition_row_count": len(day_hashes),
            },
            partition_key=day.isoformat(),
        )


def _summarize(origins: list[str]) -> str:
    unique = list(dict.fromkeys(origins))
    if len(unique) <= 3:
        return ", ".join(unique) or "none"
    return f"{unique[0]} .. {unique[-1]} ({len(unique)} files)"


def build_raw_daily_assets(partitions: PartitionsDefinition) -> list:
    """One asset per daily table, on the code location's partitions."""
    return [build_daily_raw_asset(spec, partitions) for spec in DAILY_TABLES.values()]


# Reference tables are replaced whole: nothing about them depends on the settings.
raw_reference_assets = [build_reference_asset(spec) for spec in REFERENCE_TABLES.values()]
