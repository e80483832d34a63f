"""``python -m ml_platform_tests.conformance [--workers N] [-- PYTEST_ARGS]``: runs Dagster's and
dagster-postgres's storage suites, at the installed versions, against the platform's instance
storages (see the package docstring). Exits non-zero on any failure or error; only the tests in
``EXCLUDED`` are left out, each with its reason, listed at the start.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ml_platform_tests.conformance import (
    ENV_PG_HOST,
    ENV_PG_PREFIX,
    ENV_PG_SERVER,
    ENV_REPORT,
    EXCLUDED,
    postgres,
    sources,
)

ROOT = Path(__file__).resolve().parents[2] / ".conformance"


def say(message: str) -> None:
    print(f"conformance: {message}", flush=True)


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s" if seconds >= 60 else f"{seconds:.1f} s"


def pytest_command(layout: sources.Layout, workers: int, extra: list[str]) -> list[str]:
    command = [sys.executable, "-m", "pytest", "-c", str(layout.ini), "--rootdir", str(layout.root)]
    command += ["-p", "no:cacheprovider", "-p", "ml_platform_tests.conformance.plugin"]
    # Most of a test's time is the storage's set-up, much of it waiting on SQLite and PostgreSQL.
    command += ["-n", str(workers), "--durations=15"]
    return command + extra + [str(layout.suites)]


def summary(report_file: Path, returncode: int, started: float, pytest_seconds: float) -> int:
    """Prints the counts and times; the exit status."""
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    counts = report.get("counts", {})
    passed, failed, errors = (counts.get(k, 0) for k in ("passed", "failed", "error"))
    skipped, excluded = counts.get("skipped", 0), counts.get("excluded", 0)
    for name, seconds in sorted(report.get("seconds_by_suite", {}).items(), key=lambda kv: -kv[1]):
        say(f"  {name:<45} {minutes(seconds):>12} of test time")
    say(
        f"{passed} passed, {failed} failed, {errors} errors, {skipped} skipped ({excluded} excluded by "
        f"name) in {minutes(time.monotonic() - started)} (pytest {minutes(pytest_seconds)})"
    )
    if returncode != 0 or failed or errors or not passed:
        say(f"FAILED (pytest exit status {returncode})")
        return returncode or 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_platform_tests.conformance", description=__doc__)
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (0: none)")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest (e.g. -k, -x)")
    args = parser.parse_args(argv)
    started = time.monotonic()

    versions = sources.installed_versions()
    say(", ".join(f"{dist} {v}" for dist, v in versions.items()) + ": upstream storage suites")
    batch_size = os.environ.get("DAGSTER_EVENT_BATCH_SIZE") or "1000"
    say(f"DAGSTER_EVENT_BATCH_SIZE={batch_size}; excluded by name: {len(EXCLUDED) or 'none'}")
    for name, reason in EXCLUDED.items():
        say(f"  {name}: {reason}")
    try:
        layout = sources.prepare(ROOT, versions)
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        say(f"cannot get the upstream test sources: {exc}")
        return 2

    server = postgres.Server.from_environment()
    problem = server.problem()
    if problem:
        say(f"cannot run the PostgreSQL suites: {problem}")
        return 2
    prefix = f"mlp_conformance_{os.getpid()}_{secrets.token_hex(3)}"
    report_file = layout.root / f"report-{prefix}.json"
    scratch = sources.scratch_directory(layout)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [*map(str, layout.pythonpath), os.environ.get("PYTHONPATH")])
        ),
        # What upstream's dagster_tests/conftest.py sets for its whole session.
        "DAGSTER_RECORD_DEFENSIVE_CHECKS": "true",
        # As every process of the deployments (Makefile, docker-compose.yml, Helm values): a ranged
        # run's events then reach store_event_batch, which the platform's storages replace.
        "DAGSTER_EVENT_BATCH_SIZE": batch_size,
        ENV_PG_SERVER: server.url,
        ENV_PG_HOST: server.host,
        ENV_PG_PREFIX: prefix,
        ENV_REPORT: str(report_file),
        "TMPDIR": str(scratch),
    }
    returncode, pytest_seconds = 1, 0.0
    try:
        with postgres.upstream_test_role(server) as notes:
            for note in notes:
                say(note)
            pytest_started = time.monotonic()
            command = pytest_command(layout, args.workers, args.pytest_args)
            returncode = subprocess.run(command, cwd=scratch, env=env).returncode
            pytest_seconds = time.monotonic() - pytest_started
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        dropped = server.drop_databases(prefix)
        say(f"dropped the run's databases: {', '.join(dropped) or 'none'}")
    try:
        return summary(report_file, returncode, started, pytest_seconds)
    finally:
        report_file.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
