"""The benchmark runner: every measured case in a process of its own, results as JSON and Markdown.

``python -m benchmarks`` (or ``make bench``) runs the whole set; ``--only`` picks groups
(floor, backfill, partitions, latency, training, pit_cost, load, scaling). Each case runs in a fresh
process whose wall time and peak memory are taken from outside (``wait4`` and ``/proc``);
the case reports what it timed inside (the scaling group's floors and year backfills repeat
inside one process, ``Runner.in_process``). Numbers are written to ``benchmarks/results/latest.json``
and ``latest.md``. Nothing here passes or fails on a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import measure
from benchmarks.groups import GROUP_FUNCTIONS
from benchmarks.measure import ChildRun, summary
from benchmarks.report import markdown, merge

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS = ROOT / "results"
GROUPS = tuple(GROUP_FUNCTIONS)


@dataclass
class Plan:
    repeats: int = 3
    sample_days: int = 6
    pg_sample_days: int = 3
    latency_days: int = 5
    distributed_days: int = 30
    import_runs: int = 5
    webserver_runs: int = 3
    sizes: tuple[int, ...] = (1, 4, 16)
    scaling_repeats: int = 3
    training_sizes: tuple[int, ...] = (1, 4, 16)


class Runner:
    def __init__(self, work: Path, plan: Plan, postgres: bool):
        self.work = work
        self.plan = plan
        self.postgres = postgres
        self.started = time.monotonic()
        self.figures: dict[str, dict] = {}
        self.details: dict[str, object] = {}
        self.errors: list[str] = []
        self.runs: dict[str, list[ChildRun]] = {}
        self.cases: dict[str, dict] = {}
        self.failed: set[str] = set()

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{int(elapsed // 60):02d}:{int(elapsed % 60):02d}] {text}", flush=True)

    def env(self, name: str, **extra: str) -> dict[str, str]:
        """A clean environment for one case: its own data directory, local profile, no leftovers."""
        base = {
            k: v for k, v in os.environ.items() if not k.startswith(("ML_PLATFORM_", "MLFLOW_", "DAGSTER_"))
        }
        data = self.work / name / "data"
        base.update(
            {
                "ML_PLATFORM_ENV": "local",
                "ML_PLATFORM_DATA_DIR": str(data),
                "MLFLOW_TRACKING_URI": f"sqlite:///{data / 'mlflow' / 'mlflow.db'}",
                "ML_PLATFORM_MLFLOW_ARTIFACTS": str(data / "mlflow" / "artifacts"),
                "ML_PLATFORM_PROMOTION_AUC_FLOOR": "0.5",
                "PYTHONWARNINGS": "ignore",
            }
        )
        base.update(extra)
        (data / "mlflow").mkdir(parents=True, exist_ok=True)
        return base

    def child(
        self, case: str, name: str, params: dict | None = None, timeout: float = 1800, **env
    ) -> ChildRun:
        result = self.work / name / "result.json"
        args = [sys.executable, "-m", "benchmarks.child", case, str(self.work / name), str(result)]
        args.append(json.dumps(params or {}))
        return self._run(name, args, self.env(name, **env), result, timeout)

    def script(self, name: str, module: str, *argv: str, timeout: float = 600) -> ChildRun:
        result = self.work / name / "result.json"
        args = [sys.executable, "-m", module, *argv, str(result)]
        return self._run(name, args, self.env(name), result, timeout)

    def _run(self, name: str, args: list[str], env: dict, result: Path, timeout: float) -> ChildRun:
        result.parent.mkdir(parents=True, exist_ok=True)
        run = measure.run_child(
            args,
            env=env,
            log=self.work / "logs" / f"{name}.log",
            result_path=result,
            timeout=timeout,
            cwd=REPO,
        )
        status = "ok" if run.ok else f"FAILED (exit {run.returncode}; log {run.log})"
        self.say(f"{name}: {run.wall_seconds:.1f}s, max RSS {run.max_rss_mb:.0f} MB, {status}")
        if not run.ok:
            self.errors.append(f"{name}: exit {run.returncode}; see {run.log}")
            self.failed.add(name)
        self.cases[name] = {
            "wall_seconds": round(run.wall_seconds, 2),
            "max_rss_mb": round(run.max_rss_mb),
            "peak_tree_rss_mb": round(run.peak_tree_rss_mb),
            "returncode": run.returncode,
            "result": run.result,
        }
        return run

    def clean(self, name: str) -> None:
        """Remove a case's scratch files, unless it failed: then they are evidence (``--keep``)."""
        if name not in self.failed:
            shutil.rmtree(self.work / name, ignore_errors=True)

    def repeat(self, group: str, case: str, params: dict | None = None, n: int | None = None, **env):
        runs = []
        for i in range(n or self.plan.repeats):
            name = f"{group}-{i + 1}"
            runs.append(self.child(case, name, params, **env))
            self.clean(name)
        self.runs[group] = runs
        return [r for r in runs if r.ok]

    def in_process(
        self, group: str, case: str, params: dict | None = None, n: int | None = None, **env
    ) -> tuple[ChildRun, list[dict]]:
        """``n`` repeats of a case in one process (its ``repeats`` parameter): the process start
        and imports are paid once. Each repeat reports its own peak memory (``PeakMemory``); the
        process's peak, the largest over the repeats, is kept beside it. The caller cleans the
        case's files (``clean``), or keeps them for a later case."""
        params = {**(params or {}), "repeats": n or self.plan.repeats}
        run = self.child(case, group, params, timeout=3600, **env)
        self.runs[group] = [run]
        return run, (run.result["runs"] if run.ok else [])

    def figure(
        self,
        key: str,
        label: str,
        values: list[float],
        runs: list[ChildRun],
        unit: str = "s",
        cpu: list[float] | None = None,
        **extra,
    ):
        """One line of the table: the summary of ``values``, CPU seconds when known (they hardly
        grow on a shared machine, where wall time does), and the peak memory of ``runs``."""
        self.figures[key] = {
            "label": label,
            "unit": unit,
            **summary(values),
            "cpu_seconds": summary(cpu) if cpu else None,
            "peak_rss_mb": round(max((r.max_rss_mb for r in runs), default=0)),
            "peak_tree_rss_mb": round(max((r.peak_tree_rss_mb for r in runs), default=0)),
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "load_average": measure.load_average(),
            **extra,
        }


def parse_sizes(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated groups among {', '.join(GROUPS)}")
    parser.add_argument("--repeats", type=int, default=Plan.repeats)
    parser.add_argument(
        "--sample-days", type=int, default=Plan.sample_days, help="per-partition sample, SQLite"
    )
    parser.add_argument("--pg-sample-days", type=int, default=Plan.pg_sample_days)
    parser.add_argument("--latency-days", type=int, default=Plan.latency_days)
    parser.add_argument(
        "--distributed-days", type=int, default=Plan.distributed_days, help="days of the distributed group"
    )
    parser.add_argument("--sizes", type=parse_sizes, default=Plan.sizes, help="backfill scaling factors")
    parser.add_argument("--training-sizes", type=parse_sizes, default=Plan.training_sizes)
    parser.add_argument("--scaling-repeats", type=int, default=Plan.scaling_repeats)
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL even if it answers")
    parser.add_argument("--work", type=Path, help="scratch directory (default: a new temp directory)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory and its logs")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where latest.json and latest.md go")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="replace only the figures measured now in an existing latest.json",
    )
    args = parser.parse_args(argv)

    groups = [g.strip() for g in args.only.split(",")] if args.only else list(GROUPS)
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; choose among {', '.join(GROUPS)}")
    plan = Plan(
        repeats=args.repeats,
        sample_days=args.sample_days,
        pg_sample_days=args.pg_sample_days,
        latency_days=args.latency_days,
        distributed_days=args.distributed_days,
        sizes=args.sizes,
        training_sizes=args.training_sizes,
        scaling_repeats=args.scaling_repeats,
    )
    work = args.work or Path(tempfile.mkdtemp(prefix="ml_platform_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    postgres = not args.no_postgres and _postgres_answers(work)
    runner = Runner(work, plan, postgres)
    load_start = measure.load_average()
    runner.say(f"benchmarks: {', '.join(groups)}; scratch {work}; PostgreSQL {'yes' if postgres else 'no'}")
    try:
        for group in GROUPS:  # a fixed order: the floor first, the backfill compares with it
            if group in groups:
                runner.say(f"--- {group}")
                try:
                    GROUP_FUNCTIONS[group](runner)
                except Exception as exc:  # noqa: BLE001 - one broken group must not lose the others
                    runner.errors.append(f"{group}: {type(exc).__name__}: {exc}")
                    runner.say(f"{group} failed: {exc!r}")
    finally:
        report = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join(["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]),
            "machine": measure.machine(),
            "versions": measure.versions(),
            "load_average": {"start": load_start, "end": measure.load_average()},
            "postgres": postgres,
            "plan": vars(plan),
            "total_seconds": round(time.monotonic() - runner.started, 1),
            "figures": runner.figures,
            "details": runner.details,
            "errors": runner.errors,
            "cases": runner.cases,
        }
        previous = args.out / "latest.json"
        if args.merge and previous.exists():
            report = merge(json.loads(previous.read_text()), report)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "latest.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (args.out / "latest.md").write_text(markdown(report))
        if not args.keep and not runner.failed:
            shutil.rmtree(work, ignore_errors=True)
    runner.say(f"wrote {args.out / 'latest.md'} and latest.json")
    print(markdown(report))


def _postgres_answers(work: Path) -> bool:
    """Ask in a child process: the runner itself imports nothing heavy."""
    code = "import sys\nfrom benchmarks.support import postgres_answers as ok\nsys.exit(0 if ok() else 1)"
    return measure.run_child(
        [sys.executable, "-c", code], env=dict(os.environ), log=work / "logs" / "postgres.log", cwd=REPO
    ).ok


if __name__ == "__main__":
    main()
