"""One function per group of figures, apart from the runner: a new measurement leaves how cases run alone."""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable
from datetime import date, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING

from benchmarks import measure, pit_cost
from benchmarks.measure import summary
from benchmarks.report import linearity

if TYPE_CHECKING:
    from benchmarks.measure import ChildRun
    from benchmarks.run import Runner

DAYS_IN_YEAR = 365
# Features the default training set reads: 28 days before the 2013-06-01 cutoff, 7 after.
TRAINING_WINDOW = ("2013-05-04", "2013-06-07")


def _timed(runner: Runner, key: str, label: str, runs: list[ChildRun], results: list[dict], **extra) -> None:
    """A figure of the seconds and CPU seconds each repeat timed inside its case process. Where
    the repeats shared one process, the peak memory is the first repeat's own (later repeats
    start on memory the earlier ones left allocated), and every repeat's is kept."""
    runner.figure(
        key,
        label,
        [r["seconds"] for r in results],
        runs,
        cpu=[r["cpu_seconds"] for r in results],
        **extra,
    )
    peaks = [r.get("peak_rss_mb") for r in results]
    if len(runs) == 1 and len(results) > 1 and all(peaks):
        runner.figures[key].update(
            repeats_in_one_process=len(results),
            repeat_peak_rss_mb=[round(p) for p in peaks],
            process_peak_rss_mb=round(runs[0].max_rss_mb),
            peak_rss_mb=round(peaks[0]),
            peak_tree_rss_mb=round(peaks[0]),  # no child processes: the repeat is the tree
        )


def _separate(runner: Runner, group: str, case: str, params: dict | None = None):
    """Each repeat in a fresh process, as each run worker starts: cold caches, its own memory."""
    ok = runner.repeat(group, case, params)
    return ok, [r.result["runs"][0] for r in ok]


def floor(runner: Runner) -> None:
    ok, results = _separate(runner, "floor", "floor")
    if results:
        _timed(runner, "floor", "Floor: pandas + DuckDB, year of raw + features", ok, results)
        runner.details["floor_stages"] = [r["stages"] for r in results]
    ok, results = _separate(runner, "floor_checks", "floor", {"checks": True})
    if results:
        _timed(runner, "floor_checks", "Floor with the same checks (raw rules + dbt tests)", ok, results)


# The runtime accelerators (ml_platform/runtime) on, and off (Dagster's and dbt's stock behaviour),
# measured side by side so that what they save stays measured.
ACCELERATORS = {"on": "", "off": ", accelerators off"}


def backfill(runner: Runner) -> None:
    storages = ["sqlite", "postgres"] if runner.postgres else ["sqlite"]
    for storage, accelerators in [(s, a) for s in storages for a in ACCELERATORS]:
        name = f"single_{storage}" + ("" if accelerators == "on" else "_stock")
        params = {"storage": storage, "accelerators": accelerators}
        ok, results = _separate(runner, name, "single_run", params)
        if not results:
            continue
        events = results[0]
        _timed(
            runner,
            name,
            f"Year backfill, one run, {'SQLite' if storage == 'sqlite' else 'PostgreSQL'}"
            + ACCELERATORS[accelerators],
            ok,
            results,
            materializations=events["materializations"],
            events_total=events["events_total"],
            events_by_type=events["by_type"],
            step_seconds=[r["step_seconds"] for r in results],
        )
        _compare_with_floor(runner, name)


def _compare_with_floor(runner: Runner, key: str) -> None:
    fig = runner.figures[key]
    for floor_key in ("floor", "floor_checks"):
        floor = runner.figures.get(floor_key, {}).get("median")
        if not floor:
            continue
        suffix = "" if floor_key == "floor" else "_with_checks"
        fig[f"ratio_to_floor{suffix}"] = round(fig["median"] / floor, 2)
        floor_cpu = (runner.figures[floor_key].get("cpu_seconds") or {}).get("median")
        if floor_cpu and fig.get("cpu_seconds"):
            fig[f"cpu_ratio_to_floor{suffix}"] = round(fig["cpu_seconds"]["median"] / floor_cpu, 2)
        fig[f"overhead_ms_per_materialization{suffix}"] = round(
            1000 * (fig["median"] - floor) / fig["materializations"], 2
        )
    fig["overhead_ms_per_event"] = (
        round(1000 * (fig["median"] - runner.figures["floor"]["median"]) / fig["events_total"], 2)
        if "floor" in runner.figures
        else None
    )


def partitions(runner: Runner) -> None:
    storages = [("sqlite", runner.plan.sample_days)]
    if runner.postgres and runner.plan.pg_sample_days:
        storages.append(("postgres", runner.plan.pg_sample_days))
    for (storage, count), accelerators in [(s, a) for s in storages for a in ACCELERATORS]:
        name = f"per_partition_{storage}" + ("" if accelerators == "on" else "_stock")
        params = {"storage": storage, "count": count, "accelerators": accelerators}
        run = runner.child("per_partition", name, params, timeout=3600)
        runner.clean(name)
        if not run.ok:
            continue
        per_run = [r["seconds"] for r in run.result["runs"]]
        median, mean = statistics.median(per_run), statistics.mean(per_run)
        runner.figure(
            name,
            f"Per-partition run of one day, {'SQLite' if storage == 'sqlite' else 'PostgreSQL'} "
            f"(sample of {count} days){ACCELERATORS[accelerators]}",
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


def _imports(runner: Runner, what: str, n: int) -> list[ChildRun]:
    runs = [runner.script(f"import_{what}-{i + 1}", "benchmarks.imports", what) for i in range(n)]
    return [r for r in runs if r.ok]


def load(runner: Runner) -> None:
    ok = _imports(runner, "definitions", runner.plan.import_runs)
    runner.figure(
        "import_definitions",
        "`import ml_platform.definitions` (fresh interpreter)",
        [r.result["seconds"] for r in ok],
        ok,
        process_wall_seconds=summary([r.wall_seconds for r in ok]),
        modules_loaded=ok[0].result["modules_loaded"] if ok else {},
    )
    ok = _imports(runner, "heavy", runner.plan.repeats)
    runner.figure(
        "import_heavy",
        "`import dagster, dagster_dbt, mlflow, sklearn` (reference)",
        [r.result["seconds"] for r in ok],
        ok,
    )
    ok = runner.repeat("webserver_load", "webserver_load", n=runner.plan.webserver_runs)
    runner.figure(
        "webserver_load",
        "Webserver start until the location is loaded",
        [r.result["location_loaded_seconds"] for r in ok],
        ok,
        http_seconds=summary([r.result["http_seconds"] for r in ok if r.result.get("http_seconds")]),
    )


def training(runner: Runner) -> None:
    run = runner.child("training", "training", {"repeats": runner.plan.repeats})
    runner.clean("training")
    if not run.ok:
        return
    res = run.result
    for name, seconds in res["fit_seconds"].items():
        runner.figure(
            f"fit_{name}",
            f"Fit {name}, {res['window_days']}-day window ({res['train_rows']} rows)",
            seconds,
            [run],
            cpu=res["fit_cpu_seconds"][name],
        )
    runner.figure(
        "training_run",
        "Training run: training set, 3 candidates, gate, registry (fits forced)",
        res["training_run_seconds"],
        [run],
        step_seconds={
            k: statistics.median(r[k] for r in res["training_run"]) for k in res["training_run"][0]
        },
    )
    preds = res["predictions_runs"]
    asset_rps = [p["scoring_rows_per_second"] for p in preds]
    rows = res["bare"]["rows"]
    bare_rps = [rows / s for s in res["bare"]["predict_proba_seconds"]]
    framed_rps = [rows / s for s in res["bare"]["feature_frame_and_predict_proba_seconds"]]
    # Each asset run sits between two bare measurements (the process and the CPU clock drift over
    # seconds): its ratio is to their mean throughput, and the headline is the median ratio.
    paired = [a / statistics.mean(pair) for a, pair in zip(asset_rps, pairwise(bare_rps), strict=True)]
    ratio = statistics.median(paired)
    runner.figure(
        "scoring_asset",
        f"Scoring in serving/predictions ({preds[0]['rows']} rows, {res['bare']['model']})",
        asset_rps,
        [run],
        unit="rows/s",
        ratio_to_bare=round(ratio, 2),
        ratio_of_medians=round(statistics.median(asset_rps) / statistics.median(bare_rps), 2),
        paired_ratios=summary(paired, 2),
        run_seconds=summary([p["run_seconds"] for p in preds]),
        run_rows_per_second=summary([p["rows"] / p["run_seconds"] for p in preds], 0),
    )
    runner.figure(
        "scoring_bare",
        "Bare `predict_proba` of the same model, same rows: first call on a freshly loaded model",
        bare_rps,
        [run],
        unit="rows/s",
    )
    warm_rps = [rows / s for s in res["bare"].get("warm_predict_proba_seconds", [])]
    if warm_rps:
        runner.figure(
            "scoring_bare_warm",
            "Bare `predict_proba`, second call on the same model object (reference)",
            warm_rps,
            [run],
            unit="rows/s",
            asset_ratio=round(statistics.median(asset_rps) / statistics.median(warm_rps), 2),
        )
    runner.figure(
        "scoring_bare_with_frame",
        "`feature_frame` + `predict_proba`, same rows",
        framed_rps,
        [run],
        unit="rows/s",
    )


def latency(runner: Runner) -> None:
    run = runner.child("latency", "latency", {"days": runner.plan.latency_days}, timeout=2400)
    runner.clean("latency")
    if not run.ok:
        return
    days = run.result["days"]
    steady = [d["latency_seconds"] for d in days if not d["warmup"]]
    runner.figure(
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


def scaling(runner: Runner) -> None:
    rows: dict[int, int] = {}
    for k in sorted(set(runner.plan.sizes) | set(runner.plan.training_sizes)):
        root = runner.work / "landing" / f"x{k}"
        build = runner.child("scaling_landing", f"landing_x{k}", {"root": str(root), "factor": k})
        if not build.ok:
            continue
        rows[k] = build.result["rows"]["flights"]
        runner.details[f"landing_x{k}_build_seconds"] = round(build.result["seconds"], 1)
        landing = {"ML_PLATFORM_SOURCE": "landing", "ML_PLATFORM_LANDING_ROOT": str(root)}
        keep = None
        if k in runner.plan.sizes:
            n = runner.plan.scaling_repeats
            run, results = runner.in_process(f"floor_x{k}", "floor", {"landing": str(root)}, n=n)
            runner.clean(f"floor_x{k}")
            if results:
                _timed(runner, f"floor_x{k}", f"Floor from landing files, {k}x flights", [run], results)
            run, results = runner.in_process(f"backfill_x{k}", "single_run", n=n, **landing)
            if results:
                keep = f"backfill_x{k}"  # its warehouse holds the year: the training reads it
                _timed(
                    runner,
                    f"backfill_x{k}",
                    f"Year backfill from landing files, one run, SQLite, {k}x flights",
                    [run],
                    results,
                    flights_rows=rows[k],
                    materializations=results[0]["materializations"],
                    step_seconds=[r["step_seconds"] for r in results],
                )
        if k in runner.plan.training_sizes:
            if keep is None:  # only the training window's features, not the whole year
                keep = f"window_x{k}"
                window = {"start": TRAINING_WINDOW[0], "end": TRAINING_WINDOW[1]}
                if not runner.child("single_run", keep, window, timeout=3600, **landing).ok:
                    keep = None
            if keep is not None:
                warehouse = runner.work / keep / "data" / "warehouse.duckdb"
                # The fits repeat in one process, which has read the window once.
                params = {"warehouse": str(warehouse), "repeats": runner.plan.scaling_repeats}
                run = runner.child("scaling_training", f"training_x{k}", params)
                runner.clean(f"training_x{k}")
                if run.ok:
                    per_fit = run.result["fit_seconds"]
                    rounds = range(runner.plan.scaling_repeats)
                    runner.figure(
                        f"training_x{k}",
                        f"Fit all 3 candidates, {k}x flights ({run.result['train_rows']} rows)",
                        [sum(s[i] for s in per_fit.values()) for i in rounds],
                        [run],
                        cpu=[sum(s[i] for s in run.result["fit_cpu_seconds"].values()) for i in rounds],
                        fit_seconds={n: statistics.median(s) for n, s in per_fit.items()},
                        train_rows=run.result["train_rows"],
                    )
        if keep is not None:
            runner.clean(keep)
        shutil.rmtree(root, ignore_errors=True)
    runner.details["scaling_rows"] = rows
    runner.details["linearity"] = linearity(runner.figures, rows)


def distributed(runner: Runner) -> None:
    """The lake with steps on Celery workers against the single-writer file, side by side: daily
    runs through the daemon, then the range as one single-run backfill."""
    if not runner.postgres:
        runner.errors.append("distributed: needs PostgreSQL (the instances and the lake's catalog)")
        return
    days = runner.plan.distributed_days
    label = {"file": "DuckDB file, one writer", "lake": "lake, Celery workers, 4 runs in flight"}
    for engine in ("file", "lake"):
        name = f"daily_runs_{engine}"
        params = {"engine": engine, "days": days}
        run = runner.child("daily_runs", name, params, timeout=900 + 150 * days)
        runner.clean(name)
        if run.ok:
            r = run.result["runs"][0]
            extra = {k: r[k] for k in ("failed_runs", "flights", "feature_rows", "workers", "steps")}
            extra.update(
                queue_seconds_median=r["queue_seconds_median"], run_seconds_median=r["run_seconds_median"]
            )
            _timed(runner, name, f"{days} daily runs via the daemon, {label[engine]}", [run], [r], **extra)
    for engine in ("file", "lake"):
        name = f"single_run_{engine}"
        end = (date(2013, 1, 1) + timedelta(days=days - 1)).isoformat()
        params = {"storage": "postgres", "engine": engine, "end": end}
        ok, results = _separate(runner, name, "single_run", params)
        if results:
            _timed(
                runner,
                name,
                f"{days} days as one single-run backfill, PostgreSQL, {engine}",
                ok,
                results,
            )
    for key in ("daily_runs", "single_run"):
        file, lake = runner.figures.get(f"{key}_file"), runner.figures.get(f"{key}_lake")
        if file and lake:
            lake["speedup_vs_file"] = round(file["median"] / lake["median"], 2)


# In the order they run: the backfill compares with the floor.
GROUP_FUNCTIONS: dict[str, Callable[[Runner], None]] = {
    "floor": floor,
    "backfill": backfill,
    "partitions": partitions,
    "load": load,
    "training": training,
    "pit_cost": pit_cost.group,
    "latency": latency,
    "scaling": scaling,
    "distributed": distributed,
}
