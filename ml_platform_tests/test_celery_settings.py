"""The executor setting: the default stays the multiprocess executor on the DuckDB file; Celery
(``ML_PLATFORM_EXECUTOR=celery``) is taken only with what workers on other machines can share,
and its broker is read from the environment where a run executes. Steps on real workers are
tested in reliability/test_celery_workers.py."""

import dagster as dg
import pytest
import yaml

from ml_platform.automation.execution import celery_executor_config
from ml_platform.automation.jobs import IN_ONE_PROCESS
from ml_platform.automation.worker import main as worker_main
from ml_platform.automation.worker import worker_argv
from ml_platform.config import SettingsError, load_settings
from ml_platform.definitions import build_definitions
from ml_platform.resources import build_resources
from ml_platform_tests.conftest import REPO_ROOT

# Parsed, never connected to: settings and definitions do not open the warehouse.
LAKE = "ducklake:postgres:dbname=lake host=127.0.0.1 user=postgres"
CELERY = "ML_PLATFORM_EXECUTOR=celery"
BROKER = "pyamqp://platform:s3cret-value@broker.internal:5672//"


@pytest.fixture
def celery_env(settings, monkeypatch, tmp_path):
    """The environment of a Celery deployment, over the local profile's temp directories."""
    monkeypatch.setenv("ML_PLATFORM_EXECUTOR", "celery")
    monkeypatch.setenv("ML_PLATFORM_CELERY_BROKER", BROKER)
    monkeypatch.setenv("ML_PLATFORM_WAREHOUSE", LAKE)
    monkeypatch.setenv("ML_PLATFORM_LAKE_DATA_PATH", str(tmp_path / "lake") + "/")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.delenv("ML_PLATFORM_MLFLOW_ARTIFACTS")
    return monkeypatch


def test_the_default_is_unchanged(settings):
    assert settings.executor == "multiprocess"
    assert settings.objects_path == str(settings.data_dir / "objects")
    assert build_resources(settings)["model_io_manager"].base_dir == settings.objects_path
    job = build_definitions(settings).resolve_job_def("ingest_days")
    assert job.executor_def.name == "multi_or_in_process_executor"


def test_celery_takes_its_broker_from_the_environment_and_keeps_the_run_config(celery_env, tmp_path):
    settings = load_settings()
    assert settings.executor == "celery"
    # Small objects go where every worker reads and writes them: under the lake's data path.
    assert settings.objects_path == str(tmp_path / "lake" / "objects")
    assert build_resources(settings)["model_io_manager"].base_dir == settings.objects_path
    config = celery_executor_config(settings)
    assert config["broker"] == {"env": "ML_PLATFORM_CELERY_BROKER"}
    assert "s3cret" not in repr(config)
    job = build_definitions(settings).resolve_job_def("ingest_days")
    assert job.executor_def.name == "celery_executor"
    # Run configs written for the default executor (the job's own, the sensors') stay valid.
    assert dg.validate_run_config(job, IN_ONE_PROCESS) is not None


def test_an_objects_path_of_its_own(celery_env):
    celery_env.setenv("ML_PLATFORM_OBJECTS_PATH", "/shared/objects")
    assert load_settings().objects_path == "/shared/objects"


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("ML_PLATFORM_WAREHOUSE", None, (CELERY, "ML_PLATFORM_WAREHOUSE", "DuckDB file")),
        ("ML_PLATFORM_CELERY_BROKER", None, (CELERY, "ML_PLATFORM_CELERY_BROKER")),
        ("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db", (CELERY, "MLFLOW_TRACKING_URI")),
        ("ML_PLATFORM_CELERY_BACKEND", "db+sqlite:///r.db", ("ML_PLATFORM_CELERY_BACKEND",)),
        ("ML_PLATFORM_EXECUTOR", "dask", ("ML_PLATFORM_EXECUTOR", "'dask'")),
    ],
)
def test_celery_is_refused_without_what_workers_share(celery_env, name, value, named):
    if value is None:
        celery_env.delenv(name)
    else:
        celery_env.setenv(name, value)
    with pytest.raises(SettingsError) as refused:
        load_settings()
    assert all(part in str(refused.value) for part in named), refused.value
    assert "s3cret" not in str(refused.value)


def test_the_worker_refuses_what_the_executor_refuses(celery_env):
    celery_env.delenv("ML_PLATFORM_WAREHOUSE")
    with pytest.raises(SystemExit, match="ML_PLATFORM_WAREHOUSE"):
        worker_main([])
    celery_env.setenv("ML_PLATFORM_WAREHOUSE", LAKE)
    celery_env.setenv("ML_PLATFORM_EXECUTOR", "multiprocess")
    with pytest.raises(SystemExit, match="ML_PLATFORM_EXECUTOR is not 'celery'"):
        worker_main([])


def test_the_lake_instance_is_production_but_for_concurrency():
    production = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.yaml").read_text())
    lake = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.lake.yaml").read_text())
    concurrency = lake.pop("concurrency")
    production.pop("concurrency")
    assert lake == production
    runs = concurrency["runs"]
    assert runs["max_concurrent_runs"] == 4
    per_day = [limit for limit in runs["tag_concurrency_limits"] if limit["key"] == "dagster/partition"]
    assert per_day == [{"key": "dagster/partition", "limit": 1, "value": {"applyLimitPerUniqueValue": True}}]
    # Every root writer of every run in flight gets a slot: the pool never serializes days.
    assert concurrency["pools"]["default_limit"] >= 2 * runs["max_concurrent_runs"]


def test_the_worker_keeps_the_prefork_pool_and_a_name_of_its_own():
    argv = worker_argv(["--concurrency", "2"])
    assert argv[argv.index("--pool") + 1] == "prefork"
    assert argv[argv.index("--queues") + 1] == "dagster"
    assert argv[argv.index("--hostname") + 1].startswith("ml-platform-")
    assert "--hostname" not in worker_argv(["-n", "w1@%h"])
    for refused in (["--pool", "solo"], ["-P", "threads"], ["--pool=solo"]):
        with pytest.raises(SystemExit, match="not supported"):
            worker_argv(refused)


def test_production_on_the_lake_and_celery_has_what_make_dev_has(settings, celery_env, tmp_path):
    """The same assets, checks, jobs, sensors and schedules as the default location: only where
    steps run and where tables live differ."""
    local = build_definitions(settings)
    celery_env.setenv("ML_PLATFORM_ENV", "prod")
    celery_env.setenv("ML_PLATFORM_DATA_DIR", str(tmp_path / "prod-data"))
    celery_env.setenv("ML_PLATFORM_LANDING_ROOT", str(tmp_path / "landing"))
    prod_settings = load_settings()
    assert (prod_settings.env, prod_settings.executor, prod_settings.warehouse_is_lake) == (
        "prod",
        "celery",
        True,
    )
    prod = build_definitions(prod_settings)

    def shape(defs: dg.Definitions) -> dict:
        graph = defs.resolve_asset_graph()
        return {
            "assets": set(graph.get_all_asset_keys()),
            "checks": set(graph.asset_check_keys),
            "jobs": {job.name for job in defs.resolve_all_job_defs()},
            "sensors": {sensor.name for sensor in defs.sensors or []},
            "schedules": {schedule.name for schedule in defs.schedules or []},
        }

    assert shape(prod) == shape(local)
    assert prod.resolve_job_def("retrain").executor_def.name == "celery_executor"
