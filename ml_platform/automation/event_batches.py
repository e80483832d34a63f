"""Dagster hands a ranged run's per-partition events to the storage in batches only when
``DAGSTER_EVENT_BATCH_SIZE`` is set in the process that writes them. Kept apart from the storage
classes (``instance_storage``, ``postgres_storage``): the code location sets it without importing
Dagster's storage modules, which the instance loads where it needs them."""

import os

EVENT_BATCH_SIZE = "1000"


def write_event_batches() -> None:
    """Applied once, when the code location loads, in every process that executes steps (unless
    the environment sets it; 0 turns it off). PostgreSQL's storage then writes a batch of
    materializations in one statement; the platform's storages write any batch in one
    transaction per database."""
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)
