"""Which columns a model sees, and the split of a training frame in time."""

from datetime import date, timedelta

import numpy as np
import pandas as pd

CATEGORICAL = ["carrier", "origin", "dest"]
NUMERIC = [
    "distance",
    "sched_dep_hour",
    "day_of_week",
    "month",
    "temp",
    "dewp",
    "humid",
    "wind_speed",
    "precip",
    "pressure",
    "visib",
    "plane_age",
]
FEATURES = CATEGORICAL + NUMERIC
LABEL = "arrived_late"
KEY = "flight_id"
DAY = "flight_date"


def feature_frame(
    frame: pd.DataFrame, categorical: list[str] | None = None, numeric: list[str] | None = None
) -> pd.DataFrame:
    """The model input: declared feature columns (``flight_features``' unless given), in order,
    with stable dtypes (categories as Python objects with None for missing, numbers as float64,
    finite or NaN). Columns already in those dtypes are passed through without conversion: this
    runs on every scored row."""
    categorical = CATEGORICAL if categorical is None else categorical
    numeric = NUMERIC if numeric is None else numeric
    missing = [c for c in categorical + numeric if c not in frame.columns]
    if missing:
        raise ValueError(f"feature frame lacks column(s) {', '.join(missing)}")
    columns = {col: _categories(frame[col]) for col in categorical}
    columns.update({col: _numbers(frame[col]) for col in numeric})
    infinite = [col for col in numeric if np.isinf(columns[col]).any()]
    if infinite:
        raise ValueError(f"feature column(s) {', '.join(infinite)} hold infinite values")
    return pd.DataFrame(columns, copy=False)


def _categories(column: pd.Series) -> np.ndarray:
    values = column.to_numpy(dtype=object)
    if pd.api.types.infer_dtype(values, skipna=False) == "string":
        return values  # all strings, nothing missing: a scan a fifth as long as ``pd.isna``
    missing = pd.isna(values)
    if missing.any():
        values = values.copy()  # never write into the caller's frame
        values[missing] = None
    return values


def _numbers(column: pd.Series) -> np.ndarray:
    if column.dtype == np.float64:
        return column.to_numpy(copy=True)
    if pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
        return column.to_numpy(dtype="float64", na_value=np.nan)
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)


def labels(frame: pd.DataFrame) -> pd.Series:
    return frame[LABEL].astype(bool).astype(int).reset_index(drop=True)


def training_windows(cutoff: date, window_days: int, holdout_days: int) -> dict[str, tuple[date, date]]:
    """Half-open windows: training strictly before the cutoff, holdout from it."""
    if window_days < 1 or holdout_days < 1:
        raise ValueError("training and holdout windows must each be at least one day")
    return {
        "train": (cutoff - timedelta(days=window_days), cutoff),
        "holdout": (cutoff, cutoff + timedelta(days=holdout_days)),
    }


def split_training_set(
    features: pd.DataFrame, cutoff: date, window_days: int, holdout_days: int
) -> pd.DataFrame:
    """Labelled rows of the two windows, tagged with their split; nothing after the cutoff trains."""
    windows = training_windows(cutoff, window_days, holdout_days)
    days = pd.to_datetime(features[DAY])
    parts = []
    for split, (start, end) in windows.items():
        mask = (days >= pd.Timestamp(start)) & (days < pd.Timestamp(end)) & features[LABEL].notna()
        parts.append(features.loc[mask].assign(split=split))
    out = pd.concat(parts, ignore_index=True)
    out[LABEL] = out[LABEL].astype(bool)
    out["cutoff_date"] = pd.Timestamp(cutoff)
    return out.sort_values(["split", DAY, KEY], kind="stable").reset_index(drop=True)
