"""docker-compose.yml, the Dockerfile, the instance and Helm values agree with the code.

No Docker engine runs here: test_production.py runs the same commands as processes; this reads the
files and checks every service's command, ports, environment and volumes against the platform's
configuration, and validates deploy/dagster.yaml with Dagster's own instance schema.
"""

import importlib.util
import os
import re
import tomllib
from urllib.parse import urlsplit

import pytest
import yaml

from ml_platform_tests.conftest import REPO_ROOT
from ml_platform_tests.integration.compose_files import (
    DAGSTER_SERVICES,
    DEPLOY,
    MODULE,
    MissingVariable,
    _env_refs,
    _mounts,
    _option,
    _under,
    active_services,
    interpolate,
    read_env_file,
)


@pytest.fixture(scope="module")
def raw_compose() -> dict:
    return yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def dotenv() -> dict[str, str]:
    """deploy/env.example as a user fills it in."""
    env = read_env_file(DEPLOY / "env.example")
    assert "POSTGRES_PASSWORD" in env and env["POSTGRES_PASSWORD"] == "", "the example holds no password"
    return {**env, "POSTGRES_PASSWORD": "s3cret-from-dotenv"}


@pytest.fixture(scope="module")
def compose(raw_compose, dotenv) -> dict:
    return interpolate(raw_compose, dotenv)


def test_every_service_has_healthcheck_and_restart_policy(compose):
    # `docker compose up` without a profile starts exactly these (test_compose_distributed.py: more).
    assert set(active_services(compose)) == {"postgres", "mlflow", *DAGSTER_SERVICES}
    for name, service in compose["services"].items():
        assert service.get("restart") in ("unless-stopped", "always"), name
        assert service["healthcheck"]["test"], name
    for name in ("mlflow", *DAGSTER_SERVICES):
        deps = compose["services"][name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
    for name in ("webserver", "daemon"):
        assert compose["services"][name]["depends_on"]["code"]["condition"] == "service_healthy"
    assert compose["services"]["code"]["depends_on"]["mlflow"]["condition"] == "service_healthy"


def test_images_are_built_from_the_repository_dockerfile(compose):
    for name in ("mlflow", *DAGSTER_SERVICES):
        build = compose["services"][name]["build"]
        assert build["context"] == "."
        assert (REPO_ROOT / build["dockerfile"]) == DEPLOY / "Dockerfile", name
        assert compose["services"][name]["image"] == compose["services"]["code"]["image"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    # The dbt manifest is parsed at build time, into the directory the code is told to use.
    workdir = re.search(r"^WORKDIR (\S+)", dockerfile, re.M).group(1)
    dbt_dir = re.search(r"ML_PLATFORM_DBT_PROJECT_DIR=(\S+)", dockerfile).group(1)
    assert dbt_dir == f"{workdir}/dbt_project"
    assert re.search(r"^COPY dbt_project \./dbt_project", dockerfile, re.M)
    assert "dbt parse" in dockerfile and "target/manifest.json" in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0"), "the image runs as a non-root user"
    # Files the build copies exist (README.md is the project's readme in pyproject.toml).
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.M):
        for path in source.split():
            if path != "README.md":
                assert (REPO_ROOT / path).exists(), path
    readme = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["readme"]
    assert f" {readme} " in dockerfile


def test_code_server_serves_the_definitions_module_on_the_workspace_port(compose):
    code = compose["services"]["code"]
    args = code["command"]
    assert args[:3] == ["dagster", "code-server", "start"] or args[:3] == ["dagster", "api", "grpc"]
    module = _option(args, "-m", "--module-name")
    assert module == MODULE
    assert importlib.util.find_spec(module) is not None
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["dagster"]["module_name"] == module
    assert _option(args, "-h", "--host") == "0.0.0.0"
    port = int(_option(args, "-p", "--port"))

    workspace = yaml.safe_load((DEPLOY / "workspace.grpc.yaml").read_text())
    [entry] = workspace["load_from"]
    server = entry["grpc_server"]
    assert server["host"] == "code", "the workspace reaches the code server by its compose service name"
    assert server["port"] == port
    assert server["location_name"] == _option(args, "--location-name")
    assert server["location_name"] == pyproject["tool"]["dagster"]["code_location_name"]
    assert str(port) in [str(p) for p in code["expose"]]
    health = code["healthcheck"]["test"]
    assert health[1:5] == ["dagster", "api", "grpc-health-check", "-p"] and health[5] == str(port)


def test_webserver_and_daemon_use_the_production_instance_and_grpc_workspace(compose):
    for name in DAGSTER_SERVICES:
        service = compose["services"][name]
        home = service["environment"]["DAGSTER_HOME"]
        mounts = _mounts(service)
        assert mounts[f"{home}/dagster.yaml"] == "./deploy/dagster.yaml", name
    for name, binary in (("webserver", "dagster-webserver"), ("daemon", "dagster-daemon")):
        service = compose["services"][name]
        args = service["command"]
        assert args[0] == binary
        workspace = _option(args, "-w", "--workspace")
        assert _mounts(service)[workspace] == "./deploy/workspace.grpc.yaml", name
    assert compose["services"]["daemon"]["command"][1] == "run"
    assert compose["services"]["daemon"]["healthcheck"]["test"][1:] == ["dagster-daemon", "liveness-check"]

    web = compose["services"]["webserver"]
    port = _option(web["command"], "-p", "--port")
    published = {p.split(":")[-1] for p in web["ports"]}
    assert published == {port}
    assert f"localhost:{port}/server_info" in " ".join(web["healthcheck"]["test"])


def test_every_instance_variable_is_provided_to_every_dagster_service(compose):
    instance = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    needed = _env_refs(instance)
    assert {
        "DAGSTER_PG_HOST",
        "DAGSTER_PG_PORT",
        "DAGSTER_PG_USER",
        "DAGSTER_PG_PASSWORD",
        "DAGSTER_PG_DB",
    } <= needed
    postgres = compose["services"]["postgres"]["environment"]
    for name in DAGSTER_SERVICES:
        service = compose["services"][name]
        env = service["environment"]
        missing = needed - set(env)
        assert not missing, f"{name} lacks {missing}"
        assert all(env[v] for v in needed), name
        assert env["DAGSTER_PG_HOST"] == "postgres"
        assert env["DAGSTER_PG_PORT"] == "5432"
        assert env["DAGSTER_PG_USER"] == postgres["POSTGRES_USER"]
        assert env["DAGSTER_PG_PASSWORD"] == postgres["POSTGRES_PASSWORD"] == "s3cret-from-dotenv"
        assert env["DAGSTER_PG_DB"] == postgres["POSTGRES_DB"]
        # Compute logs and artifacts on the volume all three share, so the UI can read what runs wrote.
        mounts = _mounts(service)
        for var in ("DAGSTER_STORAGE_DIR", "DAGSTER_COMPUTE_LOGS_DIR"):
            assert _under(env[var], mounts) == "dagster_storage", (name, var)


def test_secrets_only_from_the_environment(raw_compose, dotenv):
    secret_keys = re.compile(r"PASSWORD|SECRET|TOKEN|WEBHOOK")
    for name, service in raw_compose["services"].items():
        for key, value in service.get("environment", {}).items():
            if secret_keys.search(key):
                assert re.fullmatch(r"\$\{[A-Z_]+:[?-][^}]*\}", str(value)), f"{name}.{key}={value!r}"
                # Only an optional webhook may default (to nothing); a password never does.
                assert ":?" in value or (key == "ML_PLATFORM_ALERT_WEBHOOK_URL" and value.endswith(":-}"))
        for value in service.get("environment", {}).values():
            userinfo = urlsplit(str(value)).password if "://" in str(value) else None
            assert userinfo is None or userinfo.startswith("${"), f"{name}: literal credentials in {value!r}"
    # The MLflow store URI carries the password, from the same variable, not on the command line.
    mlflow = raw_compose["services"]["mlflow"]
    assert "${POSTGRES_PASSWORD:?" in mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert not any("postgresql" in str(a) for a in mlflow["command"])
    # Without a password, compose refuses to start rather than using a default.
    without = {k: v for k, v in dotenv.items() if k != "POSTGRES_PASSWORD"}
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        interpolate(raw_compose, without)
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        interpolate(raw_compose, {**without, "POSTGRES_PASSWORD": ""})


def test_mlflow_uses_postgres_and_served_artifacts_reachable_from_the_code_server(compose):
    from mlflow.server.security_utils import is_allowed_host_header

    mlflow = compose["services"]["mlflow"]
    args = mlflow["command"]
    assert args[:2] == ["mlflow", "server"]
    store = urlsplit(mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"])
    assert store.scheme.startswith("postgresql")
    assert (store.hostname, store.port) == ("postgres", 5432)
    database = store.path.lstrip("/")
    # That database is created by the init script the postgres service runs on first start.
    postgres_mounts = _mounts(compose["services"]["postgres"])
    [init] = [src for dst, src in postgres_mounts.items() if dst.startswith("/docker-entrypoint-initdb.d/")]
    assert re.search(rf"CREATE DATABASE {database}\b", (REPO_ROOT / init).read_text(), re.I)
    # ...and postgres is healthy only once that init is done (the init server has no TCP listener).
    assert "pg_isready -h 127.0.0.1" in " ".join(compose["services"]["postgres"]["healthcheck"]["test"])
    # Artifacts served by the tracking server from a named volume.
    assert "--no-serve-artifacts" not in args
    assert _under(_option(args, "--artifacts-destination"), _mounts(mlflow)) == "mlflow_artifacts"
    port = _option(args, "--port", "-p")
    assert {p.split(":")[-1] for p in mlflow["ports"]} == {port}
    assert f"localhost:{port}/health" in " ".join(mlflow["healthcheck"]["test"])
    # The code server's tracking URI names this service and port, and passes --allowed-hosts.
    tracking = urlsplit(compose["services"]["code"]["environment"]["MLFLOW_TRACKING_URI"])
    assert (tracking.hostname, str(tracking.port)) == ("mlflow", port)
    allowed = _option(args, "--allowed-hosts").split(",")
    assert "*" not in allowed
    assert is_allowed_host_header(allowed, tracking.netloc)
    assert is_allowed_host_header(
        allowed, f"localhost:{compose['services']['mlflow']['ports'][0].split(':')[0]}"
    )
    assert not is_allowed_host_header(allowed, "attacker.example.com")


def test_code_server_has_the_production_settings_and_data_volumes(compose, monkeypatch):
    from ml_platform.config import PROD_REQUIRED, load_settings

    code = compose["services"]["code"]
    env = code["environment"]
    assert env["ML_PLATFORM_ENV"] == "prod"
    assert all(env.get(name) for name in PROD_REQUIRED), PROD_REQUIRED
    mounts = _mounts(code)
    assert _under(env["ML_PLATFORM_DATA_DIR"], mounts) == "warehouse"
    assert _under(env["ML_PLATFORM_LANDING_ROOT"], mounts) == "landing"
    # The settings the code server computes from exactly this environment.
    for name in list(os.environ):
        if name.startswith("ML_PLATFORM_") or name.startswith("MLFLOW_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    settings = load_settings()
    assert settings.env == "prod" and settings.source == "landing"
    assert str(settings.warehouse_path).startswith(env["ML_PLATFORM_DATA_DIR"])
    assert settings.mlflow_tracking_uri == env["MLFLOW_TRACKING_URI"]
    assert settings.mlflow_artifact_location is None, "artifacts go through the tracking server"
    assert settings.mlflow_ui_url.startswith("http://localhost:")
    assert settings.partition_end is not None, "env.example ends the partitions with the demo data"


def test_named_volumes_are_declared_and_used(raw_compose):
    declared = set(raw_compose["volumes"])
    assert {"postgres_data", "mlflow_artifacts", "warehouse", "landing", "dagster_storage"} <= declared
    used = set()
    for name, service in raw_compose["services"].items():
        for source in _mounts(service).values():
            if not source.startswith((".", "/")):
                assert source in declared, f"{name} mounts undeclared volume {source}"
                used.add(source)
            else:
                assert (REPO_ROOT / source).exists(), f"{name} mounts missing {source}"
    assert used == declared
    assert _mounts(raw_compose["services"]["postgres"])["/var/lib/postgresql/data"] == "postgres_data"


def test_production_instance_passes_dagsters_own_validation(tmp_path, monkeypatch):
    """Dagster's instance schema and each configured class's config schema accept the file."""
    from dagster._config import process_config, resolve_to_config_type
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes.config_class import class_from_code_pointer

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_bytes((DEPLOY / "dagster.yaml").read_bytes())
    for name in _env_refs(yaml.safe_load((DEPLOY / "dagster.yaml").read_text())):
        monkeypatch.setenv(name, "5432" if name.endswith("_PORT") else f"/tmp/{name.lower()}")
    config, _ = dagster_instance_config(str(home))
    storage = config["storage"]["custom"]
    storage_class = class_from_code_pointer(storage["module"], storage["class"])
    assert process_config(resolve_to_config_type(storage_class.config_type()), storage["config"]).success
    assert storage["config"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    for section in ("run_coordinator", "run_launcher", "local_artifact_storage", "compute_logs"):
        cls = class_from_code_pointer(config[section]["module"], config[section]["class"])
        result = process_config(resolve_to_config_type(cls.config_type()), config[section].get("config", {}))
        assert result.success, (section, result.errors)
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert "max_concurrent_runs" not in config["run_coordinator"].get("config", {})
    assert config["concurrency"]["runs"]["max_concurrent_runs"] >= 1
    assert config["concurrency"]["pools"]["default_limit"] == 1
    limits = {
        (t["key"], t.get("value")): t["limit"]
        for t in config["concurrency"]["runs"]["tag_concurrency_limits"]
    }
    assert limits[("ml_platform/flow", "retraining")] == 1
    assert config["run_monitoring"]["enabled"] is True
    assert config["run_retries"]["enabled"] is True and config["run_retries"]["max_retries"] >= 1
    assert config["freshness"]["enabled"] is True
    assert config["retention"]["sensor"]["purge_after_days"]
    assert config["retention"]["schedule"]["purge_after_days"]


def test_local_instance_passes_dagsters_own_validation(tmp_path):
    from dagster._core.instance.config import dagster_instance_config

    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_bytes((DEPLOY / "dagster.local.yaml").read_bytes())
    config, _ = dagster_instance_config(str(home))
    assert config["concurrency"]["pools"]["default_limit"] == 1


def test_the_warehouse_pool_has_one_slot_in_both_instances():
    from ml_platform.resources.warehouse import WAREHOUSE_POOL

    for name in ("dagster.yaml", "dagster.local.yaml"):
        pools = yaml.safe_load((DEPLOY / name).read_text())["concurrency"]["pools"]
        # No per-pool override raises the default for the warehouse pool.
        assert pools["default_limit"] == 1 and WAREHOUSE_POOL not in pools, name


def test_helm_values_use_the_k8s_run_launcher_and_the_platform_code(compose):
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    [deployment] = values["dagster-user-deployments"]["deployments"]
    args = deployment.get("codeServerArgs") or deployment["dagsterApiGrpcArgs"]
    assert _option(args, "-m", "--module-name") == MODULE
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["ML_PLATFORM_ENV"] == "prod"
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    mounts = {m["mountPath"] for m in deployment["volumeMounts"]}
    assert {env["ML_PLATFORM_DATA_DIR"], env["ML_PLATFORM_LANDING_ROOT"]} <= mounts
    # MLFLOW_TRACKING_URI (the remaining required setting) comes from a secret.
    assert deployment["envSecrets"] and "MLFLOW_TRACKING_URI" not in env
    assert values["concurrency"]["enabled"] is True
    assert values["concurrency"]["pools"]["defaultLimit"] == 1
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"] is True
    assert values["additionalInstanceConfig"]["freshness"]["enabled"] is True
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"


def test_deployment_doc_lists_every_setting_the_code_reads():
    source = "\n".join(
        (REPO_ROOT / "ml_platform" / p).read_text()
        for p in ("config.py", "resources/__init__.py", "resources/warehouse.py")
    )
    names = set(re.findall(r"\"((?:ML_PLATFORM|MLFLOW)_[A-Z_]+)\"", source))
    assert {"ML_PLATFORM_ENV", "MLFLOW_TRACKING_URI", "ML_PLATFORM_ALERT_WEBHOOK_URL"} <= names
    instance = _env_refs(yaml.safe_load((DEPLOY / "dagster.yaml").read_text()))
    doc = (DEPLOY / "DEPLOYMENT.md").read_text()
    table = {m.group(1) for m in re.finditer(r"^\|\s*`([A-Z0-9_]+)`", doc, re.M)}
    missing = (names | instance) - table
    assert not missing, f"deploy/DEPLOYMENT.md's table lacks {sorted(missing)}"
