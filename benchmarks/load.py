"""Code-location load: how long until a webserver reports the ``ml_platform`` location loaded."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks import support

LOCATION = "ml_platform"
QUERY = """{ workspaceOrError { __typename ... on Workspace {
  locationEntries { name loadStatus locationOrLoadError { __typename } } } } }"""


def location_status(url: str) -> str | None:
    """``LOADED``, ``LOADING``, ``ERROR`` (loaded with a load error), or None if no answer."""
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            body = json.loads(resp.read())
    except Exception:  # noqa: BLE001 - not up yet
        return None
    workspace = (body.get("data") or {}).get("workspaceOrError") or {}
    for entry in workspace.get("locationEntries", []):
        if entry["name"] == LOCATION:
            if entry["loadStatus"] != "LOADED":
                return entry["loadStatus"]
            kind = (entry.get("locationOrLoadError") or {}).get("__typename")
            return "ERROR" if kind == "PythonError" else "LOADED"
    return None


def wait_until_loaded(url: str, proc, started: float, timeout: float = 300) -> dict:
    """Seconds from ``started`` until the server answers HTTP, and until the location is loaded."""
    http = None
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        status = location_status(url)
        if status is not None and http is None:
            http = time.perf_counter() - started
        if status == "ERROR":
            raise RuntimeError(f"location {LOCATION} failed to load")
        if status == "LOADED":
            return {"http_seconds": http, "location_loaded_seconds": time.perf_counter() - started}
        time.sleep(0.1)
    raise TimeoutError(f"location {LOCATION} not loaded within {timeout:.0f}s")


@contextmanager
def served(command: list[str], log: Path, env: dict | None = None) -> Iterator[tuple]:
    """``command`` (``dagster dev``, ``dagster-webserver``) with the repository's workspace on a free
    loopback port, once GraphQL reports the location loaded: (process, url, start-up timing, the
    ``perf_counter`` it was started at)."""
    port = support.free_port()
    args = [*command, "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]
    started = time.perf_counter()
    with support.process(args, log, env=env) as proc:
        url = f"http://127.0.0.1:{port}"
        yield proc, url, wait_until_loaded(url, proc, started), started


def webserver_load(work: Path) -> dict:
    """Start ``dagster-webserver -w workspace.yaml`` and time it until the location is loaded."""
    home = support.write_dagster_home(work / "dagster_home")
    command = [str(support.BIN / "dagster-webserver")]
    with served(command, work / "webserver.log", env={"DAGSTER_HOME": str(home)}) as (_, _, startup, _):
        return startup
