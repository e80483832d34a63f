"""The candidate pipelines. Each is a full scikit-learn Pipeline from raw feature frame to
probability, so the logged model needs no preprocessing code beside it.

A builder's keyword arguments are its hyperparameters; their defaults and bounds (``Field``) are
the launchpad config of the candidate's asset, so they are declared here and nowhere else."""

# scikit-learn is imported inside each builder: every Dagster process imports this module, and
# only the processes that train pay for scikit-learn.
from typing import Annotated

import numpy as np
from pydantic import Field

from ml_platform.ml.frames import CATEGORICAL, NUMERIC

SEED = 0


def _ordinal_categoricals():
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder

    return make_pipeline(
        SimpleImputer(strategy="constant", fill_value="unknown"),
        OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan
        ),
    )


def logistic_regression(
    C: Annotated[float, Field(gt=0, description="Inverse regularization strength")] = 1.0,
    max_iter: Annotated[int, Field(ge=50)] = 500,
    min_frequency: Annotated[int, Field(ge=1, description="Rarer categories share one column")] = 20,
):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = ColumnTransformer(
        [
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="unknown"),
                    OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=min_frequency),
                ),
                CATEGORICAL,
            ),
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMERIC),
        ]
    )
    return Pipeline([("features", pre), ("model", LogisticRegression(C=C, max_iter=max_iter))])


def hist_gradient_boosting(
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 0.08,
    max_iter: Annotated[int, Field(ge=10)] = 300,
    max_leaf_nodes: Annotated[int, Field(ge=2)] = 31,
    l2_regularization: Annotated[float, Field(ge=0)] = 1.0,
):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    pre = ColumnTransformer(
        [("cat", _ordinal_categoricals(), CATEGORICAL), ("num", "passthrough", NUMERIC)],
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    model = HistGradientBoostingClassifier(
        learning_rate=learning_rate,
        max_iter=max_iter,
        max_leaf_nodes=max_leaf_nodes,
        l2_regularization=l2_regularization,
        categorical_features=CATEGORICAL,
        early_stopping=False,
        random_state=SEED,
    )
    return Pipeline([("features", pre), ("model", model)])


def random_forest(
    n_estimators: Annotated[int, Field(ge=10)] = 150,
    max_depth: Annotated[int, Field(ge=1)] = 14,
    min_samples_leaf: Annotated[int, Field(ge=1)] = 20,
):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline

    pre = ColumnTransformer(
        [("cat", _ordinal_categoricals(), CATEGORICAL), ("num", SimpleImputer(strategy="median"), NUMERIC)]
    )
    pre.set_params(cat__ordinalencoder__unknown_value=-1, cat__ordinalencoder__encoded_missing_value=-1)
    model = RandomForestClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth,
        min_samples_leaf=min_samples_leaf,
        n_jobs=1,  # ``fit`` sets the threads a fit may use
        random_state=SEED,
    )
    return Pipeline([("features", pre), ("model", model)])


def fit(model, x, y, threads: int = 1):
    """Fit on at most ``threads`` threads, then score on one. Steps that fit at once share the
    cores: OpenMP threads beyond them spin while they wait, and a fit slows several-fold. A
    forest's trees are the same on any number of threads (seeds drawn first), but votes summed
    across threads can differ in a probability's last bit from one call to the next."""
    from threadpoolctl import threadpool_limits

    if "model__n_jobs" in model.get_params():
        model.set_params(model__n_jobs=threads)
    with threadpool_limits(limits=threads):
        model.fit(x, y)
    if "model__n_jobs" in model.get_params():
        model.set_params(model__n_jobs=1)
    return model
