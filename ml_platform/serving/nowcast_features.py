"""The features of the flights nowcast at one instant, computed by the same SQL that builds
``features.nowcast_features`` for training, from the raw tables as landed so far.

dbt compiles the ``nowcast_features`` model with the var ``nowcast_as_of`` (its flights filtered
to that instant, ``macros/nowcast_serving.sql``) and the window of the days those flights may
fall on; the compiled query is read straight from the warehouse. Nothing is written: the
published features table and its staging are never touched by serving, and hours served at
once do not contend for a relation.
"""

import functools
import hashlib
import json
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from ml_platform.ml.frames import feature_frame
from ml_platform.ml.regimes import Regime
from ml_platform.resources.dbt import DbtCli
from ml_platform.resources.warehouse import Warehouse
from ml_platform.runtime import dbt_in_process

MODEL = "nowcast_features"
AS_OF_FORMAT = "%Y-%m-%d %H:00"
DIGEST_DECIMALS = 6


def serving_vars(as_of: datetime, nowcast_hours: int) -> dict[str, str]:
    """dbt vars for the flights predicted at ``as_of`` (a UTC hour): they depart in the hour
    ``as_of + h``, whose New York day is that UTC date or the one before."""
    departing = as_of + timedelta(hours=nowcast_hours)
    return {
        "min_date": (departing.date() - timedelta(days=1)).isoformat(),
        "max_date": (departing.date() + timedelta(days=1)).isoformat(),
        "nowcast_hours": str(int(nowcast_hours)),
        "nowcast_as_of": as_of.strftime(AS_OF_FORMAT),
    }


@functools.cache
def _target_path() -> Path:
    """One dbt target folder per process, apart from the builds' (partial parse kept)."""
    return Path(tempfile.mkdtemp(prefix="nowcast-serving-dbt-"))


def compiled_sql(dbt: DbtCli, warehouse: Warehouse, variables: dict[str, str]) -> str:
    """The model's query for these vars, as dbt compiles it (refs resolved, ephemerals inlined)."""
    from dbt.cli.main import dbtRunner

    engine = warehouse.engine
    project_dir = Path(dbt.project_dir)
    target = _target_path()
    common = dbt_in_process.common_args(dbt, project_dir, target)
    with dbt_in_process.invoking(engine):
        try:
            manifest = dbt_in_process.parse(project_dir, engine, target, common)
            # A single node's compiled SQL is printed whatever --quiet says: silenced.
            args = ["compile", "--quiet", "--log-level", "none", "--select", MODEL]
            args += ["--vars", json.dumps(variables), *common]
            result = dbtRunner(manifest=manifest).invoke(args)
        finally:
            dbt_in_process.release_warehouse()
    if not result.success:
        raise RuntimeError(f"dbt could not compile {MODEL} for {variables}: {result.exception}")
    (node,) = [r.node for r in result.result.results if r.node.name == MODEL]
    return node.compiled_code


def features_at(dbt: DbtCli, warehouse: Warehouse, as_of: datetime, nowcast_hours: int) -> pd.DataFrame:
    """The flights predicted at ``as_of`` with their features, ordered by flight."""
    sql = compiled_sql(dbt, warehouse, serving_vars(as_of, nowcast_hours))
    with warehouse.connection(read_only=True) as conn:
        conn.execute("set TimeZone = 'UTC'")
        frame = conn.execute(f"select * from ({sql}) order by flight_id").fetchdf()  # noqa: S608 - dbt's own compiled model
    return frame


def feature_digests(frame: pd.DataFrame, regime: Regime) -> np.ndarray:
    """One digest per row of the values a model of ``regime`` is given (dtypes normalized as
    ``feature_frame`` does for scoring), numbers rounded to 1e-6: DuckDB's parallel sums may
    differ in the last bit from one run of the same query to the next."""
    x = feature_frame(frame, regime.categorical, regime.numeric)
    x[regime.numeric] = x[regime.numeric].round(DIGEST_DECIMALS) + 0.0  # + 0.0: no -0.0
    hashes = pd.util.hash_pandas_object(x, index=False).to_numpy()
    salt = hashlib.sha256(",".join(regime.columns).encode()).hexdigest()[:8]
    return np.array([f"{salt}{h:016x}" for h in hashes], dtype=object)
