"""What the measured cases share: instances, definitions, event counts and service processes.

Imported only inside the case processes, after the runner has set the ``ML_PLATFORM_*``
environment of the case (settings are read when ``ml_platform`` is imported).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
INSTANCE_YAML = REPO_ROOT / "deploy" / "dagster.local.yaml"
PRODUCTION_YAML = REPO_ROOT / "deploy" / "dagster.yaml"
POSTGRES_ENV_VAR = "BENCH_POSTGRES_URL"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def cpu_seconds() -> float:
    """CPU time of this process and of the children it has waited for (dbt, for one): unlike
    wall time, it hardly grows when other work shares the machine."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class PeakMemory:
    """The peak resident set of one repeat inside a process that runs several: before it, freed
    memory goes back to the system (``malloc_trim``) and the kernel's high-water mark is reset
    (``/proc/self/clear_refs``); after it, ``VmHWM`` is that repeat's peak. None where Linux
    offers neither (the process's own peak then stands for every repeat)."""

    def __enter__(self) -> PeakMemory:
        import ctypes
        import gc

        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            Path("/proc/self/clear_refs").write_text("5")
            self.available = True
        except OSError:
            self.available = False
        self.mb: float | None = None
        return self

    def __exit__(self, *exc) -> None:
        if not self.available:
            return
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                self.mb = int(line.split()[1]) / 1024


# --- Dagster instances -------------------------------------------------------------------------


def postgres_admin_url() -> str:
    return os.environ.get(POSTGRES_ENV_VAR, DEFAULT_POSTGRES)


def postgres_answers(url: str | None = None) -> bool:
    import psycopg2

    try:
        psycopg2.connect(url or postgres_admin_url(), connect_timeout=3).close()
    except psycopg2.Error:
        return False
    return True


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, uniquely named database on the benchmark server, dropped afterwards."""
    import psycopg2

    admin = postgres_admin_url()
    name = f"bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(admin, connect_timeout=5)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f'create database "{name}"')
        base = admin.rsplit("/", 1)[0]
        yield f"{base}/{name}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f'drop database if exists "{name}" with (force)')
        conn.close()


def write_dagster_home(home: Path, postgres_url: str | None = None) -> Path:
    """The instance of ``make dev`` (deploy/dagster.local.yaml), optionally with the production
    storage on PostgreSQL."""
    home.mkdir(parents=True, exist_ok=True)
    text = INSTANCE_YAML.read_text()
    if postgres_url:
        import yaml

        config = yaml.safe_load(text)
        # The production storage (deploy/dagster.yaml), pointed at the benchmark's database.
        storage = yaml.safe_load(PRODUCTION_YAML.read_text())["storage"]
        storage["custom"]["config"] = {"postgres_url": postgres_url}
        config["storage"] = storage
        text = yaml.safe_dump(config, sort_keys=False)
    (home / "dagster.yaml").write_text(text)
    return home


@contextmanager
def instance(home: Path, storage: str = "sqlite"):
    """A Dagster instance in ``home`` on SQLite (the embedded default) or a fresh PostgreSQL db."""
    import dagster as dg

    # The local instance's storage finds its files through DAGSTER_HOME, as `make dev` sets it.
    os.environ["DAGSTER_HOME"] = str(home)
    if storage == "postgres":
        with postgres_database() as url:
            write_dagster_home(home, url)
            inst = dg.DagsterInstance.from_config(str(home))
            try:
                yield inst
            finally:
                inst.dispose()
        return
    write_dagster_home(home)
    inst = dg.DagsterInstance.from_config(str(home))
    try:
        yield inst
    finally:
        inst.dispose()


# --- Definitions and runs ----------------------------------------------------------------------


def all_definitions():
    from ml_platform.definitions import build_definitions

    defs = build_definitions()
    return [*defs.assets, *defs.asset_checks]


def warm_up() -> None:
    """What a run worker has done before its run starts, done outside any timed region: it is
    forked from a server that has imported the code location, built its definitions and parsed
    the dbt project for the warehouse (``automation/run_workers.py``, ``preparsed_dbt.py``). A
    parsed manifest serves one build, so a case warms up again before each run."""
    from ml_platform.config import load_settings
    from ml_platform.resources import build_resources

    all_definitions()
    resources = build_resources(load_settings())
    resources["dbt"].preparse(resources["warehouse"].engine)


def empty_warehouse() -> None:
    """Remove this case's warehouse file, for the next repeat in the same process."""
    from ml_platform.config import load_settings

    path = Path(load_settings().warehouse_path)
    for stale in (path, path.with_name(path.name + ".wal")):
        stale.unlink(missing_ok=True)


@contextmanager
def new_lake(data: Path) -> Iterator[None]:
    """A new lake for this case (a catalog database on the benchmark server, dropped afterwards,
    and a data directory): ``ML_PLATFORM_WAREHOUSE`` and ``ML_PLATFORM_LAKE_DATA_PATH`` point at it
    while the block runs."""
    from urllib.parse import urlsplit

    with postgres_database() as url:
        parts = urlsplit(url)
        os.environ["ML_PLATFORM_WAREHOUSE"] = (
            f"ducklake:postgres:dbname={parts.path.lstrip('/')} host={parts.hostname} "
            f"port={parts.port or 5432} user={parts.username or 'postgres'}"
        )
        os.environ["ML_PLATFORM_LAKE_DATA_PATH"] = f"{data}/"
        try:
            yield
        finally:
            os.environ.pop("ML_PLATFORM_WAREHOUSE")
            os.environ.pop("ML_PLATFORM_LAKE_DATA_PATH")


def selections():
    import dagster as dg

    from ml_platform.keys import (
        DAY_AHEAD_FEATURES,
        NOWCAST_FEATURES,
        PREDICTIONS,
        RAW_DAILY,
        RAW_HOURLY,
        RAW_SCHEDULE,
    )

    daily = dg.AssetSelection.assets(*RAW_DAILY)
    # The intraday feed is hourly (one run cannot mix it with daily partitions), and the
    # point-in-time models are built from it: neither belongs to a run of the daily tables.
    intraday = dg.AssetSelection.assets(
        RAW_SCHEDULE, *RAW_HOURLY.values(), DAY_AHEAD_FEATURES, NOWCAST_FEATURES
    )
    return {
        "raw_and_features": dg.AssetSelection.groups("ingestion", "features") - intraday,
        "daily_and_features": daily | (dg.AssetSelection.groups("features") - intraday),
        "references": dg.AssetSelection.groups("ingestion") - daily - intraday,
        "training": dg.AssetSelection.groups("training"),
        "predictions": dg.AssetSelection.assets(PREDICTIONS),
    }


def materialize(
    instance,
    selection,
    *,
    start: str | None = None,
    end: str | None = None,
    tags: dict | None = None,
    **kwargs,
):
    """One in-process run; ``start``/``end`` (inclusive) make it a single-run range backfill."""
    import dagster as dg

    from ml_platform.config import load_settings
    from ml_platform.resources import build_resources

    tags = {**({RANGE_START_TAG: start, RANGE_END_TAG: end} if start else {}), **(tags or {})} or None
    return dg.materialize(
        all_definitions(),
        selection=selection,
        resources=build_resources(load_settings()),
        instance=instance,
        tags=tags,
        **kwargs,
    )


def run_events(instance, run_id: str) -> dict:
    """Event counts of a run by type, and the wall time of each step."""
    records = instance.get_records_for_run(run_id, limit=1_000_000).records
    counts = Counter()
    starts, steps = {}, {}
    for record in records:
        entry = record.event_log_entry
        event = entry.dagster_event
        counts[event.event_type_value if event else "log_message"] += 1
        if event is None or not entry.step_key:
            continue
        if event.event_type_value == "STEP_START":
            starts[entry.step_key] = entry.timestamp
        elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and entry.step_key in starts:
            steps[entry.step_key] = round(entry.timestamp - starts[entry.step_key], 3)
    return {
        "events_total": sum(counts.values()),
        "materializations": counts.get("ASSET_MATERIALIZATION", 0),
        "by_type": dict(sorted(counts.items())),
        "step_seconds": steps,
    }


# --- Service processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str, timeout: float = 2) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status == 200
    except Exception:  # noqa: BLE001 - not up (yet)
        return False


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> float:
    """Poll until ``predicate()``; returns the seconds waited. Fails if ``proc`` exits."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what or proc.args}: process exited with {proc.returncode}")
        if predicate():
            return time.monotonic() - started
        time.sleep(0.2)
    raise TimeoutError(f"{what}: not ready within {timeout:.0f}s")


def interrupts_as_usual() -> None:
    """Run in the child before exec. A shell's background job starts with SIGINT ignored; Python
    then leaves it ignored, and Dagster's services map SIGTERM to the SIGINT handler, so they
    would ignore SIGTERM too and never stop. The child gets the default back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def process(args: list[str], log: Path, env: dict | None = None, cwd: Path | None = None):
    """A command in its own session; on exit SIGTERM its group, then SIGKILL."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd or REPO_ROOT,
            start_new_session=True,
            preexec_fn=interrupts_as_usual,
        )
        try:
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """``mlflow server`` on a free loopback port over a SQLite store under ``root``."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    args = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
    ]
    with process(args, root / "mlflow-server.log") as proc:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_ok(f"{url}/health"), timeout=120, proc=proc, what="mlflow server")
        yield url
