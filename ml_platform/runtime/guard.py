"""Each accelerator reaches into a private part of Dagster or dbt that a release may change
without notice. So each names the package versions it was verified on (by upstream's own test
suites, ``make test-conformance`` and ``make test-conformance-celery``, and the project's), is off
on any other version, and can be switched off: ``ML_PLATFORM_ACCELERATORS`` is ``on`` (the
default), ``off``, or a comma-separated list of the accelerators that are on. Off means Dagster's
and dbt's stock behaviour."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version

SWITCH = "ML_PLATFORM_ACCELERATORS"
LOG = logging.getLogger("ml_platform.runtime")


class SwitchError(ValueError):
    """``ML_PLATFORM_ACCELERATORS`` names something that is not an accelerator."""


@dataclass(frozen=True)
class Accelerator:
    name: str
    # Distribution name -> the versions this accelerator was verified on.
    verified: tuple[tuple[str, tuple[str, ...]], ...]

    def on(self) -> bool:
        """Whether this process uses it: switched on and every package at a verified version.
        A version it was not verified on is logged once per process, naming both."""
        return switched_on(self.name) and _versions_verified(self)


# Every accelerator of the platform: see the module of the same name in this package.
DAGSTER = ("dagster", ("1.13.27",))
SQLITE_STORAGE = Accelerator("sqlite_storage", (DAGSTER,))
POSTGRES_STORAGE = Accelerator("postgres_storage", (DAGSTER, ("dagster-postgres", ("0.29.27",))))
POOL_WAITS = Accelerator("pool_waits", (DAGSTER,))
RUN_WORKERS = Accelerator("run_workers", (DAGSTER,))
# Its builds run inside Dagster's step, which turns their events into Dagster's and interrupts them
# when the run is terminated: verified with that Dagster too, not only with dagster-dbt and dbt.
DBT_IN_PROCESS = Accelerator(
    "dbt_in_process",
    (DAGSTER, ("dagster-dbt", ("0.29.27",)), ("dbt-core", ("1.11.16",)), ("dbt-duckdb", ("1.11.1",))),
)
# Steps on Celery workers whose worker is lost fail instead of being waited for forever.
CELERY_WATCH = Accelerator("celery_watch", (DAGSTER, ("dagster-celery", ("0.29.27",))))
ALL = (SQLITE_STORAGE, POSTGRES_STORAGE, POOL_WAITS, RUN_WORKERS, DBT_IN_PROCESS, CELERY_WATCH)


def switched_on(name: str) -> bool:
    raw = os.environ.get(SWITCH, "on").strip() or "on"
    if raw in ("on", "off"):
        return raw == "on"
    names = {part.strip() for part in raw.split(",") if part.strip()}
    unknown = names - {acc.name for acc in ALL}
    if unknown:
        known = ", ".join(acc.name for acc in ALL)
        raise SwitchError(
            f"{SWITCH}={raw!r}: {', '.join(sorted(unknown))} is not an accelerator "
            f"(use on, off, or a comma-separated list of: {known})"
        )
    return name in names


def installed(distribution: str) -> str | None:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


@cache
def _versions_verified(acc: Accelerator) -> bool:
    for distribution, verified in acc.verified:
        found = installed(distribution)
        if found not in verified:
            LOG.warning(
                "accelerator %s is off: verified on %s %s, this process has %s",
                acc.name,
                distribution,
                " or ".join(verified),
                found or "none",
            )
            return False
    return True


def status() -> dict[str, bool]:
    """Which accelerators this process would use, by name (for logs, tests and benchmarks)."""
    return {acc.name: acc.on() for acc in ALL}
