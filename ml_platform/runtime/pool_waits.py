"""Steps waiting for a pool slot sleep between claims instead of spinning.

A run's executor asks ``InstanceConcurrencyContext.interval_to_next_pending_claim_check`` how
long to sleep before it tries a blocked step again. In Dagster 1.13 the answer is
``min([0, *intervals])``, never positive, so every run whose step waits for the
``duckdb_warehouse`` slot keeps a core busy until it gets the slot. With four daily runs in flight
and one slot, three of them polled at full speed: a two-core machine finished 2.5 runs a minute
(the same fix was proposed upstream in dagster-io/dagster#20367 and closed unmerged).

Here the wait is the time to the earliest pending claim check, and a blocked claim is checked
again every second (Dagster backs off to 15 s, which would leave a freed slot idle that long;
the warehouse slot is what a backfill queues on). One small query per waiting step per second.
"""

import time

from dagster._core.execution.plan import instance_concurrency_context as claims

from ml_platform.runtime.guard import LOG, POOL_WAITS

CLAIM_RECHECK_SECONDS = 1.0
# What this replaces; if a release renames any of it, the correction stays off and says so.
REPLACED = ("interval_to_next_pending_claim_check", "_pending_claims", "_pending_timeouts")


def _interval_to_next_pending_claim_check(self: claims.InstanceConcurrencyContext) -> float:
    if not self._pending_claims:
        return 0.0
    now = time.time()
    return max(0.0, min((ready_at - now for ready_at in self._pending_timeouts.values()), default=0.0))


def sleep_between_pool_claims() -> bool:
    """Applied by the instance (``ml_platform.runtime.apply_accelerators``) in every process that
    executes steps; True when applied."""
    if not POOL_WAITS.on():
        return False
    source = _source_of(claims.InstanceConcurrencyContext)
    missing = [name for name in REPLACED if name not in source]
    if missing or not hasattr(claims, "MAX_CONCURRENCY_CLAIM_BLOCKED_INTERVAL"):
        LOG.warning("accelerator pool_waits is off: Dagster no longer has %s", ", ".join(missing))
        return False
    claims.InstanceConcurrencyContext.interval_to_next_pending_claim_check = (
        _interval_to_next_pending_claim_check
    )
    claims.MAX_CONCURRENCY_CLAIM_BLOCKED_INTERVAL = CLAIM_RECHECK_SECONDS
    return True


def _source_of(cls) -> str:
    import inspect

    return inspect.getsource(cls)
