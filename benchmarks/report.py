"""Rendering and merging apart from measuring: a report can be redone from its JSON without running a case."""

from __future__ import annotations


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
        pairs = fig.get("paired_ratios")
        if pairs:
            notes.append(
                f"median of {pairs['n']} rounds, each against the bare calls either side of it: "
                f"{pairs['min']}x to {pairs['max']}x"
            )
    if "asset_ratio" in fig:
        notes.append(f"the asset is {fig['asset_ratio']}x this")
    if "ratio_to_daily_hgb" in fig:
        run = figures.get("training_run", {}).get("median")
        budget = f"; the training run, measured in its own group: {run:.1f} s" if run else ""
        notes.append(f"**{fig['ratio_to_daily_hgb']}x the daily hgb fit**, at the same load{budget}")
    if "fit_peak_rss_mb" in fig:
        notes.append(f"peak RSS during the fit {fig['fit_peak_rss_mb']:.0f} MB")
    if key.startswith("pit_build_") and key != "pit_build_days_30":
        days30 = figures.get("pit_build_days_30", {}).get("median")
        if days30:
            notes.append(f"{fig['median'] / days30:.2f}x the 30-day build")
    if key == "training_run":
        notes.append(
            "median per step: "
            + ", ".join(f"{k.split('__')[-1]} {v:.1f}s" for k, v in fig["step_seconds"].items())
        )
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
