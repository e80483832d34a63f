"""Settings read once from the environment, so the same code runs on a laptop and in production.

``ML_PLATFORM_ENV`` picks the profile (``local`` by default); every other variable overrides one
setting. Nothing here holds a secret: secrets reach resources through ``EnvVar`` only.

``load_settings`` is called where a process enters the platform (the code location's ``defs``,
the command line); everything else receives the ``Settings`` it was built with, so definitions
built from other settings in the same process differ accordingly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = Path(os.environ.get("ML_PLATFORM_DBT_PROJECT_DIR", REPO_ROOT / "dbt_project"))
# Derived files that can be rebuilt at any time (the packaged dataset as Parquet).
CACHE_DIR = Path(os.environ.get("ML_PLATFORM_CACHE_DIR", REPO_ROOT / "data" / "cache"))
ENVIRONMENTS = ("local", "prod")
# Production names its storage explicitly; nothing falls back to a directory inside the checkout.
PROD_REQUIRED = ("ML_PLATFORM_DATA_DIR", "ML_PLATFORM_LANDING_ROOT", "MLFLOW_TRACKING_URI")
# Where a run's steps execute: processes beside the run (the default), or Celery workers.
EXECUTORS = ("multiprocess", "celery")
# The Celery broker URL may carry a password: only its name is kept, the value read at run time.
CELERY_BROKER_ENV = "ML_PLATFORM_CELERY_BROKER"


class SettingsError(ValueError):
    """A setting from the environment is missing or malformed."""


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _date(name: str, default: str | None) -> date | None:
    raw = _env(name, default)
    if raw is None:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not an ISO date (YYYY-MM-DD)") from exc


def public_url(uri: str) -> str | None:
    """An http(s) URI without any user:password part, fit for links in metadata; else None."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return None
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _float(name: str, default: float) -> float:
    raw = _env(name, str(default))
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a number") from exc


def _int(name: str, default: int) -> int:
    raw = _env(name, str(default))
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not an integer") from exc


@dataclass(frozen=True)
class Settings:
    env: str
    data_dir: Path
    # ML_PLATFORM_WAREHOUSE: a resolved file path, or a ducklake:postgres: URL (with its data path).
    warehouse: str
    lake_data_path: str | None
    landing_root: Path
    source: str
    partition_start: date
    partition_end: date | None
    mlflow_tracking_uri: str
    mlflow_experiment: str
    registered_model_name: str
    training_window_days: int
    holdout_days: int
    decision_threshold: float
    promotion_auc_floor: float
    quality_min_auc: float
    drift_max_psi: float
    drift_max_psi_weather: float
    mlflow_artifact_location: str | None
    replay_days_per_tick: int
    automation_on: bool
    retrain_cooldown_hours: float
    mlflow_ui_url: str | None
    dagster_url: str
    fit_threads: int
    # Where small Python objects (candidate summaries, gate decisions) are stored: a directory,
    # or a URL (s3://, gs://, ...) every step of a run can reach.
    objects_path: str
    # ML_PLATFORM_EXECUTOR: one of EXECUTORS.
    executor: str
    # Celery's result backend (rpc:// or redis://...); the broker is read from CELERY_BROKER_ENV.
    celery_backend: str

    @property
    def warehouse_is_lake(self) -> bool:
        return self.lake_data_path is not None

    @property
    def warehouse_path(self) -> Path:
        """The warehouse file; a lake has none."""
        if self.warehouse_is_lake:
            raise SettingsError("ML_PLATFORM_WAREHOUSE is a lake, not a DuckDB file")
        return Path(self.warehouse)


def _warehouse(data_dir: Path) -> tuple[str, str | None]:
    from ml_platform.resources.warehouse_engines import parse_location

    try:
        return parse_location(
            _env("ML_PLATFORM_WAREHOUSE", str(data_dir / "warehouse.duckdb")),
            _env("ML_PLATFORM_LAKE_DATA_PATH"),
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from exc


def _objects_path(data_dir: Path, lake_data_path: str | None) -> str:
    default = lake_data_path.rstrip("/") + "/objects" if lake_data_path else str(data_dir / "objects")
    return _env("ML_PLATFORM_OBJECTS_PATH", default)


def _executor(warehouse: str, lake_data_path: str | None, mlflow_uri: str) -> tuple[str, str]:
    """The executor and Celery result backend. Celery workers may run on other machines, so
    every step's state must be shared: a lake warehouse, an MLflow server, a broker."""
    executor = _env("ML_PLATFORM_EXECUTOR", "multiprocess")
    if executor not in EXECUTORS:
        raise SettingsError(f"ML_PLATFORM_EXECUTOR={executor!r} is not one of {', '.join(EXECUTORS)}")
    backend = _env("ML_PLATFORM_CELERY_BACKEND", "rpc://")
    if executor != "celery":
        return executor, backend
    if lake_data_path is None:
        raise SettingsError(
            f"ML_PLATFORM_EXECUTOR=celery needs a lake warehouse, but ML_PLATFORM_WAREHOUSE={warehouse!r} "
            "is a DuckDB file that workers on other machines cannot share "
            "(set ML_PLATFORM_WAREHOUSE=ducklake:postgres:... and ML_PLATFORM_LAKE_DATA_PATH)"
        )
    if not _env(CELERY_BROKER_ENV):
        raise SettingsError(f"ML_PLATFORM_EXECUTOR=celery needs {CELERY_BROKER_ENV} (the broker URL) set")
    if public_url(mlflow_uri) is None:
        raise SettingsError(
            f"ML_PLATFORM_EXECUTOR=celery needs MLFLOW_TRACKING_URI to be an MLflow server (http or "
            f"https) every worker reaches, not {urlsplit(mlflow_uri).scheme or 'a path'}"
        )
    if not backend.startswith(("rpc://", "redis://", "rediss://")):
        raise SettingsError(f"ML_PLATFORM_CELERY_BACKEND={backend!r} is not rpc:// or a redis:// URL")
    return executor, backend


def load_settings() -> Settings:
    env = _env("ML_PLATFORM_ENV", "local")
    if env not in ENVIRONMENTS:
        raise SettingsError(f"ML_PLATFORM_ENV={env!r} is not one of {', '.join(ENVIRONMENTS)}")
    if env == "prod":
        missing = [name for name in PROD_REQUIRED if not _env(name)]
        if missing:
            raise SettingsError(f"ML_PLATFORM_ENV=prod needs {', '.join(missing)} set in the environment")
    data_dir = Path(_env("ML_PLATFORM_DATA_DIR", str(REPO_ROOT / "data"))).resolve()
    source = _env("ML_PLATFORM_SOURCE", "packaged" if env == "local" else "landing")
    if source not in ("packaged", "landing"):
        raise SettingsError(f"ML_PLATFORM_SOURCE={source!r} is not 'packaged' or 'landing'")
    start = _date("ML_PLATFORM_PARTITION_START", "2013-01-01")
    # The packaged data ends on 2013-12-31; a real deployment sets ML_PLATFORM_PARTITION_END=open.
    end_raw = _env("ML_PLATFORM_PARTITION_END", "2014-01-01" if env == "local" else "open")
    end = None if end_raw == "open" else _date("ML_PLATFORM_PARTITION_END", end_raw)
    if end is not None and end <= start:
        raise SettingsError(f"ML_PLATFORM_PARTITION_END={end} is not after the start {start}")
    # The candidates train at once, each in its own process: a share of the cores each.
    fit_threads = _int("ML_PLATFORM_FIT_THREADS", max(1, (os.cpu_count() or 1) // 3))
    if fit_threads < 1:
        raise SettingsError(f"ML_PLATFORM_FIT_THREADS={fit_threads} is not a positive integer")
    warehouse, lake_data_path = _warehouse(data_dir)
    mlflow_uri = _env("MLFLOW_TRACKING_URI", f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}")
    executor, celery_backend = _executor(warehouse, lake_data_path, mlflow_uri)
    return Settings(
        env=env,
        data_dir=data_dir,
        warehouse=warehouse,
        lake_data_path=lake_data_path,
        landing_root=Path(_env("ML_PLATFORM_LANDING_ROOT", str(data_dir / "landing"))).resolve(),
        source=source,
        partition_start=start,
        partition_end=end,
        mlflow_tracking_uri=mlflow_uri,
        mlflow_experiment=_env("ML_PLATFORM_MLFLOW_EXPERIMENT", "flight-delays"),
        registered_model_name=_env("ML_PLATFORM_MODEL_NAME", "flight_delay_classifier"),
        training_window_days=_int("ML_PLATFORM_TRAINING_WINDOW_DAYS", 28),
        holdout_days=_int("ML_PLATFORM_HOLDOUT_DAYS", 7),
        # Late flights are about a fifth of all; 0.3 trades precision for recall on that class.
        decision_threshold=_float("ML_PLATFORM_DECISION_THRESHOLD", 0.3),
        promotion_auc_floor=_float("ML_PLATFORM_PROMOTION_AUC_FLOOR", 0.65),
        quality_min_auc=_float("ML_PLATFORM_QUALITY_MIN_AUC", 0.6),
        drift_max_psi=_float("ML_PLATFORM_DRIFT_MAX_PSI", 0.25),
        drift_max_psi_weather=_float("ML_PLATFORM_DRIFT_MAX_PSI_WEATHER", 1.0),
        mlflow_artifact_location=_env(
            "ML_PLATFORM_MLFLOW_ARTIFACTS",
            None
            if mlflow_uri.startswith(("http://", "https://"))
            else str(data_dir / "mlflow" / "artifacts"),
        ),
        replay_days_per_tick=_int("ML_PLATFORM_REPLAY_DAYS_PER_TICK", 1),
        # Sensors and schedules start running by default in prod, or locally when asked to.
        automation_on=_env("ML_PLATFORM_AUTOMATION", "on" if env == "prod" else "off") == "on",
        retrain_cooldown_hours=_float("ML_PLATFORM_RETRAIN_COOLDOWN_HOURS", 24.0),
        mlflow_ui_url=_env("ML_PLATFORM_MLFLOW_UI_URL", public_url(mlflow_uri)),
        dagster_url=_env("ML_PLATFORM_DAGSTER_URL", "http://127.0.0.1:3000"),
        fit_threads=fit_threads,
        objects_path=_objects_path(data_dir, lake_data_path),
        executor=executor,
        celery_backend=celery_backend,
    )
