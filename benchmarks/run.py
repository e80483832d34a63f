"""The benchmark runner: every measured case in a process of its own, results as JSON and Markdown.

``python -m benchmarks`` (or ``make bench``) runs the whole set; ``--only`` picks groups
(floor, backfill, partitions, latency, training, load, scaling). Each case runs in a fresh
process whose wall time and peak memory are taken from outside (``wait4`` and ``/proc``);
the case reports what it timed inside. Numbers are written to ``benchmarks/results/latest.json``
and ``latest.md``. Nothing here passes or fails on a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import measure
from benchmarks.measure import ChildRun, summary

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
RESULTS = ROOT / "results"
GROUPS = ("floor", "backfill", "partitions", "load", "training", "latency", "scaling")
DAYS_IN_YEAR = 365
# Features the default training set reads: 28 days before the 2013-06-01 cutoff, 7 after.
TRAINING_WINDOW = ("2013-05-04", "2013-06-07")
CANDIDATE_NAMES = {
    "logistic_regression": "candidate_logreg",
    "hist_gradient_boosting": "candidate_hgb",
    "random_forest": "candidate_forest",
}


@dataclass
class Plan:
    repeats: int = 3
    sample_days: int = 6
    pg_sample_days: int = 3
    latency_days: int = 5
    import_runs: int = 5
    webserver_runs: int = 3
    sizes: tuple[int, ...] = (1, 4)
    scaling_repeats: int = 1
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

    # --- running ---------------------------------------------------------------------------

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

    # --- groups ----------------------------------------------------------------------------

    def floor(self) -> None:
        ok = self.repeat("floor", "floor")
        self.figure(
            "floor",
            "Floor: pandas + DuckDB, year of raw + features",
            [r.result["seconds"] for r in ok],
            ok,
            cpu=[r.result["cpu_seconds"] for r in ok],
        )
        self.details["floor_stages"] = [r.result["stages"] for r in ok]
        ok = self.repeat("floor_checks", "floor", {"checks": True})
        self.figure(
            "floor_checks",
            "Floor with the same checks (raw rules + dbt tests)",
            [r.result["seconds"] for r in ok],
            ok,
            cpu=[r.result["cpu_seconds"] for r in ok],
        )

    def backfill(self) -> None:
        storages = ["sqlite", "postgres"] if self.postgres else ["sqlite"]
        for storage in storages:
            ok = self.repeat(f"single_{storage}", "single_run", {"storage": storage})
            if not ok:
                continue
            events = ok[0].result
            self.figure(
                f"single_{storage}",
                f"Year backfill, one run, {'SQLite' if storage == 'sqlite' else 'PostgreSQL'}",
                [r.result["seconds"] for r in ok],
                ok,
                cpu=[r.result["cpu_seconds"] for r in ok],
                materializations=events["materializations"],
                events_total=events["events_total"],
                events_by_type=events["by_type"],
                step_seconds=[r.result["step_seconds"] for r in ok],
            )
            self._compare_with_floor(f"single_{storage}")

    def _compare_with_floor(self, key: str) -> None:
        fig = self.figures[key]
        for floor_key in ("floor", "floor_checks"):
            floor = self.figures.get(floor_key, {}).get("median")
            if not floor:
                continue
            suffix = "" if floor_key == "floor" else "_with_checks"
            fig[f"ratio_to_floor{suffix}"] = round(fig["median"] / floor, 2)
            floor_cpu = (self.figures[floor_key].get("cpu_seconds") or {}).get("median")
            if floor_cpu and fig.get("cpu_seconds"):
                fig[f"cpu_ratio_to_floor{suffix}"] = round(fig["cpu_seconds"]["median"] / floor_cpu, 2)
            fig[f"overhead_ms_per_materialization{suffix}"] = round(
                1000 * (fig["median"] - floor) / fig["materializations"], 2
            )
        fig["overhead_ms_per_event"] = (
            round(1000 * (fig["median"] - self.figures["floor"]["median"]) / fig["events_total"], 2)
            if "floor" in self.figures
            else None
        )

    def partitions(self) -> None:
        storages = [("sqlite", self.plan.sample_days)]
        if self.postgres and self.plan.pg_sample_days:
            storages.append(("postgres", self.plan.pg_sample_days))
        for storage, count in storages:
            name = f"per_partition_{storage}"
            run = self.child("per_partition", name, {"storage": storage, "count": count}, timeout=3600)
            self.clean(name)
            if not run.ok:
                continue
            per_run = [r["seconds"] for r in run.result["runs"]]
            median, mean = statistics.median(per_run), statistics.mean(per_run)
            self.figure(
                name,
                f"Per-partition run of one day, {'SQLite' if storage == 'sqlite' else 'PostgreSQL'} "
                f"(sample of {count} days)",
                per_run,
                [run],
                cpu=[r["cpu_seconds"] for r in run.result["runs"]],
                reference_seconds=round(run.result["reference_seconds"], 2),
                materializations_per_run=run.result["runs"][0]["materializations"],
                events_per_run=run.result["runs"][0]["events_total"],
                sample=[r["day"] for r in run.result["runs"]],
                extrapolated_year_seconds_median=round(DAYS_IN_YEAR * median, 1),
                extrapolated_year_seconds_mean=round(DAYS_IN_YEAR * mean, 1),
                step_seconds=[r["step_seconds"] for r in run.result["runs"]],
            )

    def load(self) -> None:
        runs = [
            self.script(f"import_definitions-{i + 1}", "benchmarks.imports", "definitions")
            for i in range(self.plan.import_runs)
        ]
        ok = [r for r in runs if r.ok]
        self.figure(
            "import_definitions",
            "`import ml_platform.definitions` (fresh interpreter)",
            [r.result["seconds"] for r in ok],
            ok,
            process_wall_seconds=summary([r.wall_seconds for r in ok]),
            modules_loaded=ok[0].result["modules_loaded"] if ok else {},
        )
        runs = [
            self.script(f"import_heavy-{i + 1}", "benchmarks.imports", "heavy")
            for i in range(self.plan.repeats)
        ]
        ok = [r for r in runs if r.ok]
        self.figure(
            "import_heavy",
            "`import dagster, dagster_dbt, mlflow, sklearn` (reference)",
            [r.result["seconds"] for r in ok],
            ok,
        )
        ok = self.repeat("webserver_load", "webserver_load", n=self.plan.webserver_runs)
        self.figure(
            "webserver_load",
            "Webserver start until the location is loaded",
            [r.result["location_loaded_seconds"] for r in ok],
            ok,
            http_seconds=summary([r.result["http_seconds"] for r in ok if r.result.get("http_seconds")]),
        )

    def training(self) -> None:
        run = self.child("training", "training", {"repeats": self.plan.repeats})
        self.clean("training")
        if not run.ok:
            return
        res = run.result
        for name, seconds in res["fit_seconds"].items():
            self.figure(
                f"fit_{CANDIDATE_NAMES[name]}",
                f"Fit {CANDIDATE_NAMES[name]}, {res['window_days']}-day window ({res['train_rows']} rows)",
                seconds,
                [run],
                cpu=res["fit_cpu_seconds"][name],
            )
        self.figure(
            "training_run",
            "Training run: training set, 3 candidates, gate, registry (one run)",
            [res["training_run_seconds"]],
            [run],
            step_seconds=res["training_run"],
        )
        preds = res["predictions_runs"]
        asset_rps = [p["scoring_rows_per_second"] for p in preds]
        rows = res["bare"]["rows"]
        bare_rps = [rows / s for s in res["bare"]["predict_proba_seconds"]]
        framed_rps = [rows / s for s in res["bare"]["feature_frame_and_predict_proba_seconds"]]
        ratio = statistics.median(asset_rps) / statistics.median(bare_rps)
        self.figure(
            "scoring_asset",
            f"Scoring in serving/predictions ({preds[0]['rows']} rows, {res['bare']['model']})",
            asset_rps,
            [run],
            unit="rows/s",
            ratio_to_bare=round(ratio, 2),
            run_seconds=summary([p["run_seconds"] for p in preds]),
            run_rows_per_second=summary([p["rows"] / p["run_seconds"] for p in preds], 0),
        )
        self.figure(
            "scoring_bare",
            "Bare `predict_proba` of the same model, same rows",
            bare_rps,
            [run],
            unit="rows/s",
        )
        self.figure(
            "scoring_bare_with_frame",
            "`feature_frame` + `predict_proba`, same rows",
            framed_rps,
            [run],
            unit="rows/s",
        )

    def latency(self) -> None:
        run = self.child("latency", "latency", {"days": self.plan.latency_days}, timeout=2400)
        self.clean("latency")
        if not run.ok:
            return
        days = run.result["days"]
        steady = [d["latency_seconds"] for d in days if not d["warmup"]]
        self.figure(
            "latency",
            f"Land-to-prediction latency via dagster dev + sensors ({len(steady)} days)",
            steady,
            [run],
            p50=round(measure.percentile(steady, 50), 1),
            p95=round(measure.percentile(steady, 95), 1),
            warmup=[d for d in days if d["warmup"]],
            per_day=days,
            startup=run.result["startup"],
            run_count=run.result["runs"],
            failed_runs=run.result["failed_runs"],
        )

    def scaling(self) -> None:
        rows: dict[int, int] = {}
        for k in sorted(set(self.plan.sizes) | set(self.plan.training_sizes)):
            root = self.work / "landing" / f"x{k}"
            build = self.child("scaling_landing", f"landing_x{k}", {"root": str(root), "factor": k})
            if not build.ok:
                continue
            rows[k] = build.result["rows"]["flights"]
            self.details[f"landing_x{k}_build_seconds"] = round(build.result["seconds"], 1)
            landing = {"ML_PLATFORM_SOURCE": "landing", "ML_PLATFORM_LANDING_ROOT": str(root)}
            if k in self.plan.sizes:
                ok = self.repeat(f"floor_x{k}", "floor", {"landing": str(root)}, n=self.plan.scaling_repeats)
                self.figure(
                    f"floor_x{k}",
                    f"Floor from landing files, {k}x flights",
                    [r.result["seconds"] for r in ok],
                    ok,
                    cpu=[r.result["cpu_seconds"] for r in ok],
                )
            keep = None
            if k in self.plan.sizes:
                runs = []
                for i in range(self.plan.scaling_repeats):
                    name = f"backfill_x{k}-{i + 1}"
                    runs.append(self.child("single_run", name, timeout=3600, **landing))
                    if i:
                        self.clean(name)
                ok = [r for r in runs if r.ok]
                keep = f"backfill_x{k}-1" if runs[0].ok else None
                if ok:
                    self.figure(
                        f"backfill_x{k}",
                        f"Year backfill from landing files, one run, SQLite, {k}x flights",
                        [r.result["seconds"] for r in ok],
                        ok,
                        cpu=[r.result["cpu_seconds"] for r in ok],
                        flights_rows=rows[k],
                        materializations=ok[0].result["materializations"],
                        step_seconds=[r.result["step_seconds"] for r in ok],
                    )
            if k in self.plan.training_sizes:
                if keep is None:  # only the training window's features, not the whole year
                    keep = f"window_x{k}"
                    window = {"start": TRAINING_WINDOW[0], "end": TRAINING_WINDOW[1]}
                    if not self.child("single_run", keep, window, timeout=3600, **landing).ok:
                        keep = None
                if keep is not None:
                    warehouse = self.work / keep / "data" / "warehouse.duckdb"
                    run = self.child("scaling_training", f"training_x{k}", {"warehouse": str(warehouse)})
                    self.clean(f"training_x{k}")
                    if run.ok:
                        fits = {CANDIDATE_NAMES[n]: s[0] for n, s in run.result["fit_seconds"].items()}
                        cpu = sum(s[0] for s in run.result["fit_cpu_seconds"].values())
                        self.figure(
                            f"training_x{k}",
                            f"Fit all 3 candidates, {k}x flights ({run.result['train_rows']} rows)",
                            [sum(fits.values())],
                            [run],
                            cpu=[cpu],
                            fit_seconds=fits,
                            train_rows=run.result["train_rows"],
                        )
            if keep is not None:
                self.clean(keep)
            shutil.rmtree(root, ignore_errors=True)
        self.details["scaling_rows"] = rows
        self.details["linearity"] = linearity(self.figures, rows)


def linearity(figures: dict, rows: dict[int, int]) -> dict:
    """Is time (and memory) affine in the flights volume? A line through the smallest and the
    largest size predicts the middle ones; the deviation says how far from linear they are."""
    out = {}
    for prefix in ("floor_x", "backfill_x", "training_x"):
        sizes = sorted(k for k in rows if f"{prefix}{k}" in figures)
        if len(sizes) < 2:
            continue
        lo, hi = sizes[0], sizes[-1]
        for metric in ("median", "peak_rss_mb"):
            y = {k: figures[f"{prefix}{k}"][metric] for k in sizes}
            slope = (y[hi] - y[lo]) / (rows[hi] - rows[lo])
            middle = {
                f"{k}x": round((y[k] - (y[lo] + slope * (rows[k] - rows[lo]))) / y[k], 3) for k in sizes[1:-1]
            }
            out[f"{prefix[:-2]}_{metric}"] = {
                "growth": {f"{k}x": round(y[k] / y[lo], 2) for k in sizes},
                "per_million_rows": round(slope * 1e6, 3),
                "fixed": round(y[lo] - slope * rows[lo], 3),
                "middle_deviation_from_line": middle,
            }
    return out


# --- output ---------------------------------------------------------------------------------


def _fmt(value, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "rows/s":
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _compared(key: str, fig: dict, figures: dict) -> str:
    notes = []
    if "ratio_to_floor" in fig:
        cpu = f"; CPU {fig['cpu_ratio_to_floor']}x" if "cpu_ratio_to_floor" in fig else ""
        notes.append(
            f"**{fig['ratio_to_floor']}x the floor**{cpu} ({fig.get('ratio_to_floor_with_checks', '–')}x "
            "the floor with checks; goal <= 5x)"
        )
        notes.append(
            f"{fig['overhead_ms_per_materialization']} ms overhead per partition materialization "
            f"({fig['materializations']:,} of them; {fig['events_total']:,} events in all)"
        )
    if "extrapolated_year_seconds_median" in fig:
        notes.append(
            "extrapolated, not measured: "
            f"365 x median = {fig['extrapolated_year_seconds_median'] / 60:.1f} min "
            f"(365 x mean: {fig['extrapolated_year_seconds_mean'] / 60:.1f} min); "
            f"{fig['materializations_per_run']} materializations per run"
        )
        start = figures.get("import_definitions", {}).get("median")
        if start:
            notes.append(
                f"a daemon-launched backfill adds a run-worker start per run (~{start:.1f} s, below)"
            )
    if key == "latency":
        notes.append(f"**p50 {fig['p50']} s, p95 {fig['p95']} s** (goal: p50 <= 45 s)")
    if "ratio_to_bare" in fig:
        notes.append(f"**{fig['ratio_to_bare']}x bare predict_proba** (goal >= 0.8)")
    if key == "training_run":
        notes.append(", ".join(f"{k.split('__')[-1]} {v:.1f}s" for k, v in fig["step_seconds"].items()))
    if key == "import_definitions":
        loaded = [m for m in ("mlflow", "sklearn", "matplotlib") if fig.get("modules_loaded", {}).get(m)]
        notes.append(
            "goal <= 3 s; " + (f"loads {', '.join(loaded)}" if loaded else "does not load mlflow or sklearn")
        )
    if key.startswith("backfill_x") and "floor_" + key[len("backfill_") :] in figures:
        floor = figures["floor_" + key[len("backfill_") :]]["median"]
        notes.append(f"{fig['median'] / floor:.1f}x its floor; {fig['flights_rows']:,} flights")
    if key.startswith("training_x"):
        notes.append(", ".join(f"{n} {s:.1f}s" for n, s in fig["fit_seconds"].items()))
    return "; ".join(notes)


def _earlier(report: dict) -> str:
    earlier = report.get("earlier")
    if not earlier or not earlier.get("machine"):
        return ""
    m = earlier["machine"]
    return f" Figures measured before {earlier['before']} come from a run on {m['cpu_model']}."


def markdown(report: dict) -> str:
    m, v, figures = report["machine"], report["versions"], report["figures"]
    dates = sorted({f["measured_at"][:16] for f in figures.values() if f.get("measured_at")})
    loads = [f["load_average"][0] for f in figures.values() if f.get("load_average")]
    when = dates[0] if len(dates) < 2 else f"{dates[0]} .. {dates[-1]}"
    lines = [
        "# Benchmark results",
        "",
        f"Measured {when} (UTC) on {m['cpu_model']}, {m['cpu_cores']} cores, {m['memory_gb']} GB RAM "
        f"({m['os']}).{_earlier(report)}",
        "",
        "Python {python}, dagster {dagster}, dagster-dbt {dagster-dbt}, dbt-core {dbt-core}, "
        "dbt-duckdb {dbt-duckdb}, duckdb {duckdb}, mlflow {mlflow}, scikit-learn {scikit-learn}, "
        "pandas {pandas}.".format(**v),
        "",
        f"1-minute load average while measuring: {min(loads, default=0):.1f} .. {max(loads, default=0):.1f} "
        f"on {m['cpu_cores']} cores. Above the core count, other work shared the machine: wall times "
        "are then inflated, CPU times much less so.",
        "",
        "Median of n runs, min and max; CPU is the median CPU time (the process and its waited-for "
        "children, such as dbt). Peak RSS is the largest single process over the runs, and the "
        "whole process tree where that is larger. What each figure measures: `benchmarks/README.md`.",
        "",
        "| Figure | Median | Min | Max | n | CPU s | Peak RSS (MB) | Compared with |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for key, fig in figures.items():
        if not fig.get("n"):
            continue
        unit = fig["unit"]
        label = f"{fig['label']} ({unit})"
        rss = f"{fig['peak_rss_mb']}" + (
            f" (tree {fig['peak_tree_rss_mb']})" if fig["peak_tree_rss_mb"] > 1.3 * fig["peak_rss_mb"] else ""
        )
        cpu = _fmt((fig.get("cpu_seconds") or {}).get("median"), "s")
        lines.append(
            f"| {label} | {_fmt(fig['median'], unit)} | {_fmt(fig['min'], unit)} | {_fmt(fig['max'], unit)} "
            f"| {fig['n']} | {cpu} | {rss} | {_compared(key, fig, figures)} |"
        )
    lin = report["details"].get("linearity")
    if lin:
        lines += [
            "",
            "## Scaling",
            "",
            "A line through the smallest and the largest size: a fixed part and a part per million "
            "flights; the middle sizes' distance from it says how linear the growth is.",
            "",
            "| Series | Growth by size | Per 1M flights | Fixed | Middle sizes off the line |",
            "|---|---|---:|---:|---|",
        ]
        for series, d in lin.items():
            growth = ", ".join(f"{k}: {g}x" for k, g in d["growth"].items())
            middle = (
                ", ".join(f"{k}: {dev:+.0%}" for k, dev in d["middle_deviation_from_line"].items()) or "–"
            )
            lines.append(f"| {series} | {growth} | {d['per_million_rows']} | {d['fixed']} | {middle} |")
    if report["errors"]:
        lines += ["", "## Failed cases", ""] + [f"- {e}" for e in report["errors"]]
    lines += ["", f"Last run: {report['total_seconds'] / 60:.1f} min, `{report['command']}`.", ""]
    return "\n".join(lines)


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
                    getattr(runner, group)()
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


def merge(old: dict, new: dict) -> dict:
    """The previous report with the figures, details and cases of this run laid over it."""
    out = {**old, **{k: new[k] for k in ("command", "machine", "versions", "postgres", "total_seconds")}}
    if old.get("machine") != new["machine"]:
        # Figures kept from the earlier run were measured there, not on this machine.
        started = min((f["measured_at"] for f in new["figures"].values() if f.get("measured_at")), default="")
        out["earlier"] = old.get("earlier") or {"before": started[:16], "machine": old.get("machine")}
    for part in ("figures", "details", "cases"):
        out[part] = {**old.get(part, {}), **new.get(part, {})}
    measured = {k.split("-")[0] for k in new.get("cases", {})}
    out["errors"] = [e for e in old.get("errors", []) if e.split(":")[0].split("-")[0] not in measured]
    out["errors"] += new["errors"]
    return out


def _postgres_answers(work: Path) -> bool:
    """Ask in a child process: the runner itself imports nothing heavy."""
    code = "import sys\nfrom benchmarks.support import postgres_answers as ok\nsys.exit(0 if ok() else 1)"
    return measure.run_child(
        [sys.executable, "-c", code], env=dict(os.environ), log=work / "logs" / "postgres.log", cwd=REPO
    ).ok


if __name__ == "__main__":
    main()
