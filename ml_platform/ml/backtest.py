"""The walk-forward backtest of several feature regimes on plain frames: per regime the weekly
and frozen AUC of each week and, for the last weekly model, its permutation importances.

Kept apart from the asset so the comparison can be run and tested without Dagster or MLflow."""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import pandas as pd

from ml_platform.ml.importance import permutation_importances
from ml_platform.ml.training import walk_forward

DAILY = "daily"  # the served model's regime: flight_features and the candidates' columns


@dataclass(frozen=True)
class RegimeSpec:
    """A regime as the backtest runs it: its columns (None: ``flight_features``'), its model and
    its training window."""

    name: str
    make_model: Callable[[], object]
    window_days: int
    columns: tuple[list[str], list[str]] | None = None
    importances: bool = True


@dataclass
class RegimeResult:
    name: str
    weeks: pd.DataFrame
    importances: pd.DataFrame | None = None
    skipped: str | None = None


@dataclass(frozen=True)
class Walk:
    """The cutoffs and policy every regime shares."""

    first_cutoff: date
    last_cutoff: date
    holdout_days: int
    frozen_until: date
    threshold: float
    threads: int = 1
    importance_repeats: int = 3
    importance_rows: int | None = 5000


def backtest_regime(features: pd.DataFrame, spec: RegimeSpec, walk: Walk) -> RegimeResult:
    """One regime's weeks; a regime without rows or without a scorable week is skipped (with the
    reason), so one missing feature table does not hide the others' results."""
    if features.empty:
        return RegimeResult(spec.name, pd.DataFrame(), skipped="its feature table has no rows")
    last: list = []

    def keep(model, x, y) -> None:
        last[:] = [model, x, y]

    weeks = walk_forward(
        features,
        spec.make_model,
        walk.first_cutoff,
        walk.last_cutoff,
        spec.window_days,
        walk.holdout_days,
        walk.frozen_until,
        walk.threshold,
        walk.threads,
        spec.columns,
        on_week=keep,
    )
    if weeks.empty:
        return RegimeResult(spec.name, weeks, skipped="no week had training rows and a two-class holdout")
    importances = None
    if spec.importances and last:
        importances = permutation_importances(
            *last, repeats=walk.importance_repeats, max_rows=walk.importance_rows
        )
    return RegimeResult(spec.name, weeks, importances)


def summary(results: list[RegimeResult]) -> dict[str, float]:
    """Mean AUC per regime and strategy; the daily regime keeps its historical unprefixed names."""
    out: dict[str, float] = {}
    for r in results:
        if r.skipped:
            continue
        prefix = "" if r.name == DAILY else f"{r.name}_"
        out[f"{prefix}mean_auc_weekly_retrain"] = float(r.weeks.auc_weekly_retrain.mean())
        out[f"{prefix}mean_auc_frozen"] = float(r.weeks.auc_frozen.mean())
        out[f"{prefix}weeks"] = float(len(r.weeks))
    return out


def weeks_table(results: list[RegimeResult]) -> pd.DataFrame:
    """Every regime's weeks in one table, a ``regime`` column first."""
    frames = [r.weeks.assign(regime=r.name) for r in results if not r.skipped]
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    table["week_start"] = pd.to_datetime(table.week_start).dt.strftime("%Y-%m-%d")
    return table[["regime", *[c for c in table.columns if c != "regime"]]]


def plot_series(table: pd.DataFrame) -> tuple[list[str], dict[str, list[float]]]:
    """Week labels and one line per regime and strategy (NaN where a regime lacks a week)."""
    wide = table.pivot(index="week_start", columns="regime", values=["auc_weekly_retrain", "auc_frozen"])
    series = {}
    for regime in dict.fromkeys(table.regime):
        series[f"{regime} weekly retrain"] = wide[("auc_weekly_retrain", regime)].tolist()
        series[f"{regime} frozen"] = wide[("auc_frozen", regime)].tolist()
    return [w[5:] for w in wide.index], series
