"""Raw assets of the intraday feed: the day's schedule and three tables of UTC hours.

The three hourly tables are three assets on one hourly partitioning rather than one multi-asset:
each is its own delivery (a refused arrivals file must not hold back that hour's departures), the
landing sensor requests an hour for just the tables whose files arrived, and a run of an hour can
still select all three. Each is written like the daily raw assets (write–audit–publish): the
staged hours are audited by blocking checks before the IO manager replaces them atomically.
"""

from datetime import datetime

import pandas as pd
from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    DataVersion,
    MetadataValue,
    Output,
    PartitionsDefinition,
    asset,
)

import ml_platform.ingestion.hourly as hourly_module
import ml_platform.ingestion.intraday as intraday_module
from ml_platform.ingestion.assets import (
    READER_MODULES,
    UPSTREAM_RETRY,
    _check_specs,
    _read,
    _results,
    _summarize,
    build_daily_raw_asset,
    refusal,
)
from ml_platform.ingestion.delivery import hour_name
from ml_platform.ingestion.quality import (
    Outcome,
    _at_fault,
    check_key_unique,
    check_keys_not_null,
    check_schema,
    check_value_ranges,
)
from ml_platform.ingestion.schemas import HOURLY_TABLES, SCHEDULE, TableSpec
from ml_platform.ingestion.source import FlightSource
from ml_platform.keys import INTRADAY_GROUP, RAW_HOURLY, RAW_SCHEDULE
from ml_platform.partitions import hour_key
from ml_platform.resources.warehouse import WAREHOUSE_POOL, describe_frame
from ml_platform.versions import hash_of_rows, row_hashes, source_version

INTRADAY_READERS = (*READER_MODULES, hourly_module, intraday_module)
HOURLY_CHECKS = [
    ("columns_and_types", True),
    ("required_columns_not_null", True),
    ("key_unique", True),
    ("values_in_range", True),
    ("events_in_their_hour", True),
    ("row_count_matches_source", True),
]
HOUR = pd.Timedelta(hours=1)


def check_events_in_their_hour(
    frame: pd.DataFrame, spec: TableSpec, start: datetime, end: datetime
) -> Outcome:
    """Every row's ``event_hour`` is an hour of the window, and its event instant lies in it."""
    hours, events = frame[spec.partition_column], frame[spec.event_instant]
    outside = (hours < start) | (hours >= end) | (hours != hours.dt.floor("h"))
    early_or_late = (events < hours) | (events >= hours + HOUR)
    bad = (outside | early_or_late).fillna(False)
    return Outcome(
        "events_in_their_hour",
        not bad.any(),
        f"Each {spec.name} row lies in its UTC hour: {spec.event_instant} in [event_hour, +1h), "
        "event_hour inside the partition.",
        metadata={"rows_outside": int(bad.sum())},
        **_at_fault(frame, bad, spec, [spec.partition_column, spec.event_instant]),
    )


def check_hour_counts(frame: pd.DataFrame, spec: TableSpec, expected: dict[datetime, int]) -> Outcome:
    column = frame[spec.partition_column]
    stored = {t.to_pydatetime(): int(n) for t, n in column.value_counts().items()} if len(frame) else {}
    diffs = {
        hour_key(h): (stored.get(h, 0), int(expected.get(h, 0)))
        for h in sorted(set(stored) | set(expected))
        if stored.get(h, 0) != expected.get(h, 0)
    }
    return Outcome(
        "row_count_matches_source",
        not diffs,
        f"Rows per hour of {spec.name} equal what the source holds for that hour.",
        metadata={
            "rows": int(len(frame)),
            "source_rows": int(sum(expected.values())),
            "hours_differing": len(diffs),
            "differences (stored, source)": str(dict(list(diffs.items())[:5]) or "none"),
        },
    )


def evaluate_hourly_batch(frame, spec: TableSpec, start, end, expected) -> list[Outcome]:
    return [
        check_schema(frame, spec),
        check_keys_not_null(frame, spec),
        check_key_unique(frame, spec),
        check_value_ranges(frame, spec, None, None),
        check_events_in_their_hour(frame, spec, start, end),
        check_hour_counts(frame, spec, expected),
    ]


def build_hourly_raw_asset(spec: TableSpec, partitions: PartitionsDefinition):
    key = RAW_HOURLY[spec.name]

    @asset(
        key=key,
        group_name=INTRADAY_GROUP,
        description=spec.description,
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        metadata={"partition_expr": spec.partition_column},
        check_specs=_check_specs(key, HOURLY_CHECKS),
        pool=WAREHOUSE_POOL,
        kinds={"duckdb", "pandas"},
        retry_policy=UPSTREAM_RETRY,
        code_version=source_version(build_hourly_raw_asset, *INTRADAY_READERS),
    )
    def _raw_hourly(context: AssetExecutionContext, source: FlightSource):
        start, end = context.partition_time_window
        batch = _read(source.read_hours, spec.name, start, end)
        for warning in batch.warnings:
            context.log.warning(warning)
        # Write-audit-publish, as the daily raw assets: only audited hours reach the IO manager.
        frame = batch.frame
        outcomes = evaluate_hourly_batch(frame, spec, start, end, source.hour_counts(spec.name, start, end))
        refused = [o for o in outcomes if o.blocking and not o.passed]
        if refused:
            yield from _results(key, outcomes, stored=False)
            raise refusal(key, context.partition_keys, batch.origins, refused)
        hashes = row_hashes(frame)
        record_hour_lineage(context, partitions, frame, hashes, spec, batch.origins)
        yield Output(
            frame,
            metadata={
                **describe_frame(frame),
                "hours": MetadataValue.int(len(context.partition_keys)),
                "source": MetadataValue.text(_summarize(batch.origins)),
                "warnings": MetadataValue.int(len(batch.warnings)),
            },
            data_version=DataVersion(hash_of_rows(frame.columns, hashes)),
        )
        yield from _results(key, outcomes)

    _raw_hourly.__name__ = spec.name
    return _raw_hourly


def record_hour_lineage(context, partitions, frame, hashes, spec: TableSpec, origins: list[str]) -> None:
    """Per hour: the row count, the content hash and the file it came from."""
    rows = frame.groupby(frame[spec.partition_column], sort=False).indices
    for key in context.partition_keys:
        start = partitions.time_window_for_partition_key(key).start
        positions = rows.get(pd.Timestamp(start))
        hour_hashes = hashes[positions] if positions is not None else hashes[:0]
        stem = hour_name(start)
        context.add_asset_metadata(
            {
                "content_hash": hash_of_rows(frame.columns, hour_hashes),
                "source_files": ", ".join(o for o in origins if stem in o) or _summarize(origins),
                "dagster/partition_row_count": len(hour_hashes),
            },
            partition_key=key,
        )


def build_intraday_assets(daily: PartitionsDefinition, hourly: PartitionsDefinition) -> list:
    """raw/schedule on the daily partitions, and the three hourly tables on the hourly ones."""
    schedule = build_daily_raw_asset(SCHEDULE, daily, RAW_SCHEDULE, INTRADAY_READERS, INTRADAY_GROUP)
    return [schedule, *(build_hourly_raw_asset(spec, hourly) for spec in HOURLY_TABLES.values())]
