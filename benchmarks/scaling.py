"""Synthetic volume: landing directories holding the 2013 flights replicated k times.

Replica 0 is the real data. Replica r >= 1 is the same rows with a flight number of its own:
``10000 + (r - 1) * 4000 + rank``, where ``rank`` (0..3843) numbers the real flight numbers. The
key (day, carrier, flight, origin, scheduled departure) therefore stays unique, flight numbers
stay in their declared range (<= 99999 for up to 23 replicas), and origin, day and hour are
unchanged, so every replica joins the same real weather. Weather and reference tables are not
replicated: the volume that grows is the flights volume.
"""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path

from benchmarks.ml import fit_candidates, training_frames

RANK_SPAN = 4000
MAX_FACTOR = 23


def build_landing(work: Path, root: str, factor: int) -> dict:
    """Write ``<root>/{flights,weather}/<day>.parquet`` and ``<root>/reference/*.parquet``."""
    import pandas as pd

    from ml_platform.ingestion.landing import declare_empty
    from ml_platform.ingestion.schemas import DAILY_TABLES, REFERENCE_TABLES
    from ml_platform.ingestion.source import REFERENCE_DIR, PackagedSource, write_frame_atomically

    if not 1 <= factor <= MAX_FACTOR:
        raise ValueError(f"factor {factor} is outside 1..{MAX_FACTOR}")
    started = time.perf_counter()
    source, root_path = PackagedSource(), Path(root)
    first, end = date(2013, 1, 1), date(2014, 1, 1)
    for table in REFERENCE_TABLES:
        write_frame_atomically(
            source.read_reference(table).frame, root_path / REFERENCE_DIR / f"{table}.parquet"
        )
    flights = source.read_days("flights", first, end).frame
    ranks = {n: i for i, n in enumerate(sorted(flights["flight"].dropna().unique()))}
    if len(ranks) > RANK_SPAN:
        raise ValueError(f"{len(ranks)} distinct flight numbers do not fit a replica span of {RANK_SPAN}")
    rank = flights["flight"].map(ranks).astype("Int64")
    replicas = [flights]
    for r in range(1, factor):
        replicas.append(flights.assign(flight=10000 + (r - 1) * RANK_SPAN + rank))
    scaled = pd.concat(replicas, ignore_index=True)
    rows = {}
    for table in DAILY_TABLES:
        frame = scaled if table == "flights" else source.read_days(table, first, end).frame
        column = DAILY_TABLES[table].partition_column
        parts = dict(iter(frame.groupby(column, sort=True)))
        for day in pd.date_range(first, end, inclusive="left"):
            # A day without rows is delivered as an empty file, declared empty, as the landing
            # convention has it.
            part = parts.get(day, frame.iloc[0:0])
            if part.empty:
                declare_empty(root_path, table, day.date())
            write_frame_atomically(part.reset_index(drop=True), root_path / table / f"{day:%Y-%m-%d}.parquet")
        rows[table] = len(frame)
    return {"factor": factor, "rows": rows, "seconds": time.perf_counter() - started}


def training(work: Path, warehouse: str, repeats: int = 1, candidates: list[str] | None = None) -> dict:
    """Fit time of each candidate on the default training window of a (scaled) warehouse."""
    from ml_platform.config import load_settings
    from ml_platform.ml.frames import feature_frame, labels

    settings = load_settings()
    started = time.perf_counter()
    train, hold = training_frames(
        Path(warehouse), date(2013, 6, 1), settings.training_window_days, settings.holdout_days
    )
    feature_frame(train), labels(train)
    read_seconds = time.perf_counter() - started
    fits, cpu = fit_candidates(train, repeats, tuple(candidates) if candidates else None)
    return {
        "train_rows": len(train),
        "read_seconds": read_seconds,
        "fit_seconds": fits,
        "fit_cpu_seconds": cpu,
    }
