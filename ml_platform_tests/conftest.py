"""Shared fixtures: every test gets its own data directory, warehouse file and Dagster instance."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance, instance_for_test

from ml_platform.config import Settings, load_settings
from ml_platform.resources import build_resources

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_OUTPUT = Path(os.environ.get("ML_PLATFORM_TEST_OUTPUT", REPO_ROOT / "test-output"))


def local_environment(mp: pytest.MonkeyPatch, data_dir: Path, source: str | None = None) -> Settings:
    """The local profile's environment, pointed at ``data_dir`` (``source`` None: the packaged
    data), set through ``mp``; returns the settings it gives."""
    mp.setenv("ML_PLATFORM_ENV", "local")
    mp.setenv("ML_PLATFORM_DATA_DIR", str(data_dir))
    for name in (
        "ML_PLATFORM_WAREHOUSE",
        "ML_PLATFORM_LANDING_ROOT",
        "ML_PLATFORM_SOURCE",
        "ML_PLATFORM_EXECUTOR",
        "ML_PLATFORM_OBJECTS_PATH",
    ):
        mp.delenv(name, raising=False)
    if source:
        mp.setenv("ML_PLATFORM_SOURCE", source)
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{data_dir / 'mlflow' / 'mlflow.db'}")
    mp.setenv("ML_PLATFORM_MLFLOW_ARTIFACTS", str(data_dir / "mlflow" / "artifacts"))
    (data_dir / "mlflow").mkdir(parents=True)
    return load_settings()


@contextmanager
def local_platform(root: Path, source: str | None = None) -> Iterator[tuple[Settings, dict, DagsterInstance]]:
    """Settings, resources and a local instance under ``root``, the environment set while open:
    for module-scoped fixtures, which cannot use ``monkeypatch``."""
    with pytest.MonkeyPatch.context() as mp:
        settings = local_environment(mp, root / "data", source)
        (root / "dagster_home").mkdir()
        with local_instance(root / "dagster_home") as instance:
            yield settings, build_resources(settings), instance


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings of the local profile, pointed at a temp data directory."""
    return local_environment(monkeypatch, tmp_path / "data")


@pytest.fixture
def landing_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Same, but reading upstream from a landing directory instead of the packaged data."""
    monkeypatch.setenv("ML_PLATFORM_SOURCE", "landing")
    return load_settings()


@pytest.fixture
def resources(settings: Settings) -> dict:
    return build_resources(settings)


@pytest.fixture
def landing_resources(landing_settings: Settings) -> dict:
    return build_resources(landing_settings)


def local_instance(home: Path, plain: bool = False):
    """A Dagster instance in ``home`` on the storage `make dev` uses (deploy/dagster.local.yaml;
    ``plain``: Dagster's own SQLite storage, the same files)."""
    if plain:
        return instance_for_test(temp_dir=str(home))
    storage = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.local.yaml").read_text())["storage"]
    storage["custom"]["config"]["base_dir"] = str(home)
    return instance_for_test(temp_dir=str(home), overrides={"storage": storage})


# The PostgreSQL server tests create their throwaway databases on (PGHOST, PGPORT, PGUSER).
PG_SERVER = {
    k: os.environ.get(f"PG{k.upper()}", d)
    for k, d in (("host", "127.0.0.1"), ("port", "5432"), ("user", "postgres"))
}


@contextmanager
def throwaway_database(prefix: str) -> Iterator[str]:
    """The name of a new PostgreSQL database on ``PG_SERVER``, dropped afterwards; skips where no
    PostgreSQL answers."""
    import uuid

    import psycopg2

    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG_SERVER)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"no PostgreSQL answers at {PG_SERVER} ({' '.join(str(exc).split())})")
    admin.autocommit = True
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def throwaway_broker(prefix: str = "mlp") -> Iterator[str]:
    """A broker URL on this machine's RabbitMQ with a virtual host of its own (deleted afterwards):
    steps sent there reach only the workers started on it, never another test's. Skips where no
    RabbitMQ answers or ``rabbitmqctl`` cannot be run."""
    import shutil
    import socket
    import subprocess
    import uuid

    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=3).close()
    except OSError as exc:
        pytest.skip(f"no RabbitMQ answers at 127.0.0.1:5672 ({exc})")
    ctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([ctl, *args], capture_output=True, text=True, timeout=120)

    try:
        made = run("add_vhost", name)
    except OSError as exc:
        pytest.skip(f"cannot run rabbitmqctl to make a virtual host ({exc})")
    if made.returncode != 0:
        pytest.skip(f"rabbitmqctl add_vhost failed: {made.stderr.strip()[:200]}")
    try:
        granted = run("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        assert granted.returncode == 0, granted.stderr
        yield f"pyamqp://guest:guest@127.0.0.1:5672/{name}"
    finally:
        run("delete_vhost", name)


@contextmanager
def production_instance(home: Path, plain: bool = False) -> Iterator[DagsterInstance]:
    """An instance on the production storage (deploy/dagster.yaml; ``plain``: Dagster's own
    ``storage: postgres``) in a new PostgreSQL database (``throwaway_database``)."""
    server = f"postgresql://{PG_SERVER['user']}@{PG_SERVER['host']}:{PG_SERVER['port']}"
    with throwaway_database("mlp_test") as name:
        storage = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.yaml").read_text())["storage"]
        storage["custom"]["config"] = {"postgres_url": f"{server}/{name}"}
        if plain:
            storage = {"postgres": storage["custom"]["config"]}
        with instance_for_test(temp_dir=str(home), overrides={"storage": storage}) as instance:
            yield instance


@pytest.fixture
def instance(tmp_path: Path):
    """A real (SQLite-backed) Dagster instance in a temp directory."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    with local_instance(home) as inst:
        yield inst


@pytest.fixture(params=["duckdb", "ducklake"])
def where(request, tmp_path: Path):
    """An empty warehouse on each engine: a DuckDB file, and a DuckLake over a throwaway
    PostgreSQL catalog (``lake_support.Where``)."""
    from ml_platform_tests.lake_support import Where, lake_catalog

    if request.param == "duckdb":
        yield Where(str(tmp_path / "warehouse.duckdb"))
    else:
        with lake_catalog(tmp_path) as lake:
            yield lake


@pytest.fixture
def seeded(where):
    """The warehouse with an empty ``scratch.readings`` whose day column is a DATE; constraints:
    NOT NULL, and on the file a CHECK as well (a DuckLake enforces NOT NULL only)."""
    from ml_platform_tests.lake_support import TABLE

    check = "" if where.data_path else " CHECK (value >= 0)"
    with where.warehouse().connection() as conn:
        conn.execute("create schema scratch")
        conn.execute(
            f"create table {TABLE} (reading_date DATE NOT NULL, value BIGINT NOT NULL{check}, label VARCHAR)"
        )
    return where


def warehouse_count(settings: Settings, sql: str, params=None) -> int:
    import duckdb

    with duckdb.connect(str(settings.warehouse_path), read_only=True) as conn:
        return conn.execute(sql, params or []).fetchall()[0][0]


__all__ = ["DagsterInstance", "TEST_OUTPUT", "warehouse_count"]


@pytest.fixture(autouse=True)
def _no_definitions_load_context_across_tests():
    """Dagster keeps the context of the last definitions load in a global, and the state storage
    of the last instance entered in a context variable, both holding that instance; a later test
    must not reach a previous test's (disposed) instance through them."""
    from dagster._core.definitions.definitions_load_context import DefinitionsLoadContext
    from dagster._core.storage.defs_state.base import _current_storage

    DefinitionsLoadContext._instance = None
    _current_storage.set(None)
    yield
    DefinitionsLoadContext._instance = None
    _current_storage.set(None)


# Files whose cases start services and run through a daemon take minutes each; started first, the
# quick files fill the other worker around them instead of leaving one worker alone at the end.
# The first file that needs the shared trained platform (reliability/conftest.py) goes first and
# builds it, while the other worker starts the production-topology case; the other files that
# need it come late enough to find it built.
SLOW_FIRST = [
    "reliability/test_killed_writes.py",
    "integration/test_production.py",
    "integration/test_readme.py",
    "integration/test_daemon_e2e.py",
    "test_mlflow_server.py",
    "integration/test_browser.py",
    "test_versions.py",
    "reliability/test_idempotency.py",
    "reliability/test_mlflow_faults.py",
]


def pytest_collection_modifyitems(session, config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return next((i for i, slow in enumerate(SLOW_FIRST) if path.endswith(slow)), len(SLOW_FIRST))

    items.sort(key=rank)  # stable: the order within a file is kept
