"""Which features a fitted model leans on: permutation importance on a holdout.

Permutation importance (the drop in holdout AUC when one column is shuffled) is used rather than
the trees' own split gains because it is measured on unseen weeks and treats every pipeline the
same, categorical columns included."""

import numpy as np
import pandas as pd

SEED = 0


def permutation_importances(
    model, x: pd.DataFrame, y: np.ndarray, repeats: int = 3, max_rows: int | None = 5000, seed: int = SEED
) -> pd.DataFrame:
    """Mean and standard deviation of the AUC drop per column, largest first. At most
    ``max_rows`` holdout rows (a fixed-seed sample) keep the cost of ``columns x repeats``
    predictions bounded."""
    from sklearn.inspection import permutation_importance

    y = np.asarray(y)
    if max_rows is not None and len(x) > max_rows:
        picked = np.sort(np.random.default_rng(seed).choice(len(x), size=max_rows, replace=False))
        x, y = x.iloc[picked], y[picked]
    if len(np.unique(y)) < 2:
        raise ValueError("permutation importance by AUC needs both classes in the holdout")
    result = permutation_importance(
        model, x, y, scoring="roc_auc", n_repeats=repeats, random_state=seed, n_jobs=1
    )
    frame = pd.DataFrame(
        {
            "feature": list(x.columns),
            "importance_mean": result.importances_mean,
            "importance_std": result.importances_std,
        }
    )
    return frame.sort_values(["importance_mean", "feature"], ascending=[False, True], ignore_index=True)


def top(importances: pd.DataFrame, n: int = 15) -> pd.DataFrame:
    return importances.head(n).reset_index(drop=True)


def _final_step(model, x: pd.DataFrame):
    """A pipeline whose steps before the estimator keep one column per input column (the
    regimes' ordinal encoding and passthrough) is scored on its transformed input: shuffling an
    encoded column is shuffling the raw one, and the per-call cost of the pipeline's dataframe
    steps (most of a small holdout's predict time) is paid once instead of per column and repeat."""
    steps = getattr(model, "steps", None)
    if not steps or len(steps) < 2:
        return model, x
    transformed = model[:-1].transform(x)
    if not isinstance(transformed, pd.DataFrame) or sorted(transformed.columns) != sorted(x.columns):
        return model, x
    return model[-1], transformed[list(x.columns)]
