"""dagster-celery's own test suite (``dagster_celery_tests``, from the source distribution of the
installed version), run against this machine's RabbitMQ twice: with the platform's
``celery_watch`` patched in (``celery_plugin``) and without it, the baseline. The watch replaces
how dagster-celery's executor waits for each step, a private part of dagster-celery, so a new
dagster-celery or Dagster is verified here, by the tests upstream wrote for that executor, before
the pins move.

Each pytest process runs on a RabbitMQ virtual host of its own, deleted afterwards
(``rabbitmq.py``). The suite's tests start Celery workers (``dagster-celery worker start``); any
left when pytest ends are stopped: asked to shut down through their virtual host, then terminated.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from ml_platform_tests.conformance import ENV_REPORT, EXCLUDED_CELERY, sources
from ml_platform_tests.conformance.celery_plugin import ENV_PING_EVERY, ENV_VHOST_PREFIX, ENV_WATCH
from ml_platform_tests.conformance.rabbitmq import Broker

MODES = ("on", "off")


def say(message: str) -> None:
    print(f"conformance (dagster-celery): {message}", flush=True)


@dataclass
class Outcome:
    mode: str
    returncode: int
    seconds: float
    counts: Counter[str] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    watch: Counter[str] = field(default_factory=Counter)
    passed_on_rerun: list[str] = field(default_factory=list)

    def merge_rerun(self, rerun: Outcome) -> None:
        """The tests that failed, run once more: those that pass count as passed, named."""
        self.seconds += rerun.seconds
        self.watch.update(rerun.watch)
        for outcome in ("failed", "error"):
            self.counts[outcome] = rerun.counts.get(outcome, 0)
        self.counts["passed"] += rerun.counts.get("passed", 0)
        self.passed_on_rerun = sorted(set(self.failed) - set(rerun.failed))
        self.failed, self.returncode = rerun.failed, rerun.returncode

    def line(self) -> str:
        c = self.counts
        watch = ", ".join(f"{what} {n}" for what, n in sorted(self.watch.items())) or "nothing watched"
        rerun = f" ({len(self.passed_on_rerun)} of them on a rerun)" if self.passed_on_rerun else ""
        return (
            f"watch {self.mode}: {c.get('passed', 0)} passed{rerun}, {c.get('failed', 0)} failed, "
            f"{c.get('error', 0)} errors, {c.get('skipped', 0)} skipped ({c.get('excluded', 0)} "
            f"excluded by name) in {self.seconds:.0f} s; {watch}"
        )

    def problem(self) -> str | None:
        c = self.counts
        if self.returncode != 0 or c.get("failed") or c.get("error") or not c.get("passed"):
            return f"pytest exit status {self.returncode}"
        if self.mode == "on" and not self.watch.get("steps watched"):
            return "the watch was on, but no step was watched: it was not patched in"
        if self.mode == "off" and any(self.watch.values()):
            return f"the watch was off, but it ran: {dict(self.watch)}"
        return None


def pytest_command(layout: sources.Layout, workers: int, targets: list[str]) -> list[str]:
    command = [sys.executable, "-m", "pytest", "-c", str(layout.ini), "--rootdir", str(layout.root)]
    command += ["-p", "no:cacheprovider", "-p", "ml_platform_tests.conformance.celery_plugin"]
    # Upstream's conftest would start RabbitMQ in Docker: its fixtures come from the plugin.
    return command + ["--noconftest", "-n", str(workers), "--durations=10", *targets]


def run(layout: sources.Layout, mode: str, workers: int, extra: list[str]) -> Outcome:
    """The suite with the watch ``on`` or ``off``. Upstream's launcher tests wait 5 s for a step to
    start on a worker, which a busy 2-core machine can miss: a test that fails is run once more,
    on its own, and if it then passes it is named as passed on a rerun; nothing else is retried."""
    outcome = pytest_once(layout, mode, workers, [*extra, str(layout.suites)])
    if outcome.failed and len(outcome.failed) <= MAX_RERUNS:
        say(f"watch {mode}: running once more: {', '.join(outcome.failed)}")
        rerun = pytest_once(layout, mode, 0, [str(layout.root / nodeid) for nodeid in outcome.failed])
        outcome.merge_rerun(rerun)
    return outcome


# More failures than this are not a busy machine: they are reported as they are.
MAX_RERUNS = 3


def pytest_once(layout: sources.Layout, mode: str, workers: int, targets: list[str]) -> Outcome:
    broker, prefix = Broker(), f"mlp_celery_conformance_{os.getpid()}_{secrets.token_hex(3)}"
    report = layout.root / f"report-{prefix}.json"
    scratch = sources.scratch_directory(layout)
    env = {key: value for key, value in os.environ.items() if key != "DAGSTER_HOME"}
    env.update(
        {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            "PYTHONPATH": os.pathsep.join(
                filter(None, [*map(str, layout.pythonpath), env.get("PYTHONPATH")])
            ),
            # Off: the platform's own choice (``celery_steps_executor``) is dagster-celery's executor.
            "ML_PLATFORM_ACCELERATORS": "on" if mode == "on" else "off",
            ENV_WATCH: mode,
            ENV_VHOST_PREFIX: prefix,
            ENV_REPORT: str(report),
            "TMPDIR": str(scratch),
        }
    )
    started = time.monotonic()
    command = pytest_command(layout, workers, targets)
    process = subprocess.Popen(command, cwd=scratch, env=env)
    try:
        returncode = process.wait()
    finally:
        seconds = time.monotonic() - started
        deleted = broker.delete_vhosts(prefix)
        stop_leftover_workers(prefix)
        shutil.rmtree(scratch, ignore_errors=True)
        say(f"watch {mode}: deleted the virtual hosts {', '.join(deleted) or 'none'}")
    outcome = Outcome(mode, returncode, seconds)
    if report.is_file():
        data = json.loads(report.read_text())
        outcome.counts, outcome.failed = Counter(data.get("counts", {})), data.get("failed", [])
        report.unlink()
    for part in layout.root.glob(f"{report.name}.*.watch.json"):
        outcome.watch.update(json.loads(part.read_text()))
        part.unlink()
    return outcome


def stop_leftover_workers(prefix: str) -> None:
    """Terminates the processes of this pytest run still alive (a Celery worker a failed test left,
    in the background or not): those whose environment names the run's virtual host prefix, which
    no other process has."""
    marker = f"{ENV_VHOST_PREFIX}={prefix}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            os.kill(int(proc.name), signal.SIGTERM)
        except (OSError, ValueError):
            continue
        say(f"terminated process {proc.name}, left by the tests")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_platform_tests.conformance.celery_run")
    parser.add_argument("--watch", choices=("both", *MODES), default="both", help="default: on, then off")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (0: none)")
    parser.add_argument("--ping-every", type=float, help="seconds between the watch's pings (its own: 5)")
    parser.add_argument("pytest_args", nargs="*", help="after --: passed to pytest (e.g. -k, -x)")
    args = parser.parse_args(argv)
    modes = MODES if args.watch == "both" else (args.watch,)
    if args.ping_every:
        os.environ[ENV_PING_EVERY] = str(args.ping_every)
    versions = ", ".join(f"{d} {version(d)}" for d in ("dagster", "dagster-celery", "celery"))
    pings = f", pinging every {args.ping_every} s" if args.ping_every else ""
    say(f"{versions}: upstream's dagster_celery_tests, watch {' then '.join(modes)}{pings}")
    for name, reason in EXCLUDED_CELERY.items():
        say(f"  excluded {name}: {reason}")
    problem = Broker().problem()
    if problem:
        say(f"cannot run: {problem}")
        return 2
    try:
        layout = sources.prepare_celery(Path(__file__).resolve().parents[2] / ".conformance")
    except (subprocess.CalledProcessError, RuntimeError) as exc:
        say(f"cannot get the upstream test sources: {exc}")
        return 2
    started = time.monotonic()
    outcomes = [run(layout, mode, args.workers, args.pytest_args) for mode in modes]
    failed = False
    for outcome in outcomes:
        problem = outcome.problem()
        say(outcome.line() + (f" -- FAILED ({problem})" if problem else ""))
        for nodeid in outcome.passed_on_rerun:
            say(f"  watch {outcome.mode}: passed on a rerun: {nodeid}")
        failed = failed or problem is not None
    say(f"{'FAILED' if failed else 'passed'} in {(time.monotonic() - started) / 60:.1f} min")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
