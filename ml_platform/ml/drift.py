"""Population stability index of features against a reference (the champion's training set)."""

import numpy as np
import pandas as pd

EPS = 1e-4


def numeric_profile(values: pd.Series, bins: int = 10) -> dict:
    clean = pd.to_numeric(values, errors="coerce").dropna()
    if clean.empty:
        return {"kind": "numeric", "edges": [], "fractions": []}
    edges = np.unique(np.quantile(clean, np.linspace(0, 1, bins + 1)))
    inner = edges[1:-1].tolist()
    return {"kind": "numeric", "edges": inner, "fractions": _numeric_fractions(clean, inner)}


def _numeric_fractions(values: pd.Series, inner_edges: list[float]) -> list[float]:
    idx = np.digitize(values.to_numpy(dtype=float), inner_edges)
    counts = np.bincount(idx, minlength=len(inner_edges) + 1)
    return (counts / max(counts.sum(), 1)).tolist()


def categorical_profile(values: pd.Series, top: int = 20) -> dict:
    freq = values.astype("object").fillna("<null>").value_counts(normalize=True)
    kept = freq.head(top)
    return {"kind": "categorical", "categories": kept.index.tolist(), "fractions": kept.tolist()}


def build_profile(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> dict:
    profile = {c: numeric_profile(frame[c]) for c in numeric}
    profile.update({c: categorical_profile(frame[c]) for c in categorical})
    return profile


def psi(expected: list[float], actual: list[float]) -> float:
    e = np.clip(np.asarray(expected, dtype=float), EPS, None)
    a = np.clip(np.asarray(actual, dtype=float), EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def feature_psi(frame: pd.DataFrame, profile: dict) -> dict[str, float]:
    """PSI per profiled feature; features with no data in ``frame`` are NaN (not drift)."""
    out = {}
    for col, ref in profile.items():
        values = frame[col]
        if ref["kind"] == "numeric":
            clean = pd.to_numeric(values, errors="coerce").dropna()
            if clean.empty or not ref["fractions"]:
                out[col] = float("nan")
                continue
            out[col] = psi(ref["fractions"], _numeric_fractions(clean, ref["edges"]))
        else:
            cats = ref["categories"]
            observed = values.astype("object").fillna("<null>")
            share = observed.value_counts(normalize=True)
            actual = [float(share.get(c, 0.0)) for c in cats]
            expected = list(ref["fractions"])
            actual.append(max(0.0, 1.0 - sum(actual)))
            expected.append(max(0.0, 1.0 - sum(expected)))
            out[col] = psi(expected, actual)
    return out
