"""The backtest's plain logic: permutation importances and the regime table, on small frames."""

from datetime import date

import numpy as np
import pandas as pd

from ml_platform.ml import backtest, importance
from ml_platform.ml.backtest import RegimeSpec, Walk


def test_permutation_importance_ranks_the_column_the_label_depends_on_first():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    x = pd.DataFrame({"signal": rng.normal(size=600), "noise": rng.normal(size=600)})
    y = (x.signal + 0.3 * rng.normal(size=600) > 0).astype(int).to_numpy()
    model = LogisticRegression().fit(x, y)
    ranked = importance.permutation_importances(model, x, y, repeats=2, max_rows=300)
    assert ranked.feature.tolist() == ["signal", "noise"]
    assert ranked.importance_mean[0] > 0.2 > abs(ranked.importance_mean[1])
    again = importance.permutation_importances(model, x, y, repeats=2, max_rows=300)
    pd.testing.assert_frame_equal(ranked, again)  # fixed seed: the same sample and shuffles


def test_an_empty_regime_is_skipped_with_its_reason_and_left_out_of_the_summary():
    walk = Walk(date(2013, 1, 15), date(2013, 1, 21), 3, date(2013, 1, 12), 0.5)
    skipped = backtest.backtest_regime(pd.DataFrame(), RegimeSpec("nowcast", object, 10), walk)
    assert skipped.skipped == "its feature table has no rows"
    measured = backtest.RegimeResult(
        "daily",
        pd.DataFrame(
            {"week_start": pd.to_datetime(["2013-01-15"]), "auc_weekly_retrain": [0.7], "auc_frozen": [0.6]}
        ),
    )
    assert backtest.summary([skipped, measured]) == {
        "mean_auc_weekly_retrain": 0.7,
        "mean_auc_frozen": 0.6,
        "weeks": 1.0,
    }
    table = backtest.weeks_table([skipped, measured])
    assert table.columns[0] == "regime" and table.week_start.tolist() == ["2013-01-15"]
    weeks, series = backtest.plot_series(table)
    assert weeks == ["01-15"] and series == {"daily weekly retrain": [0.7], "daily frozen": [0.6]}
