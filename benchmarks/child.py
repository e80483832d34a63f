"""Entry point of one measured case, run by the runner in its own process.

``python -m benchmarks.child <case> <work-dir> <result.json> [json-params]``: runs the case with
its parameters and writes the case's result as JSON. The runner measures the process from
outside (wall time, max RSS); the case reports what it timed inside.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import time
import warnings
from pathlib import Path

CASES = {
    "floor": "benchmarks.floor:case",
    "single_run": "benchmarks.backfill:single_run",
    "per_partition": "benchmarks.backfill:per_partition",
    "latency": "benchmarks.latency:land_to_prediction",
    "training": "benchmarks.ml:training_and_scoring",
    "pit_cost": "benchmarks.pit_cost:case",
    "scaling_landing": "benchmarks.scaling:build_landing",
    "scaling_training": "benchmarks.scaling:training",
    "webserver_load": "benchmarks.load:webserver_load",
    "profile": "benchmarks.profiling:profile_single_run",
    "daily_runs": "benchmarks.distributed:daily_runs",
}


def makefile_default(name: str) -> str:
    for line in (Path(__file__).resolve().parent.parent / "Makefile").read_text().splitlines():
        key, sep, value = line.partition("?=")
        if sep and key.strip() == name:
            return value.strip()
    raise KeyError(name)


def main(argv: list[str]) -> None:
    case, work, out = argv[0], Path(argv[1]), Path(argv[2])
    params = json.loads(argv[3]) if len(argv) > 3 else {}
    # "off": the case runs on Dagster's and dbt's stock behaviour (ml_platform/runtime), set before
    # anything of the platform is imported.
    os.environ["ML_PLATFORM_ACCELERATORS"] = params.pop("accelerators", "on")
    # The deployment's event batch size (the Makefile's), as `make dev` gives every process.
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", makefile_default("DAGSTER_EVENT_BATCH_SIZE"))
    warnings.filterwarnings("ignore")
    # Stopped by the runner: exit through the finally blocks (a PostgreSQL database is dropped).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = time.perf_counter()
    module, func = CASES[case].split(":")
    target = getattr(importlib.import_module(module), func)
    import_seconds = time.perf_counter() - started
    work.mkdir(parents=True, exist_ok=True)
    result = target(work, **params)
    result["case_import_seconds"] = import_seconds
    out.write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main(sys.argv[1:])
