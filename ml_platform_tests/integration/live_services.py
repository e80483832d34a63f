"""The running production services as a test drives them: the webserver's GraphQL API (as the
UI calls it) and the service processes (started, health-checked and stopped as docker compose
does it), with a diagnosis of failed runs from their events and compute logs."""

import json
import os
import signal
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from ml_platform_tests.conftest import TEST_OUTPUT
from ml_platform_tests.services import STOP_SECONDS, group_processes, process, stop

LOCATION = "ml_platform"
LOGS = TEST_OUTPUT / "production"

RUN_STATUS = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status jobName tags { key value } }
    ... on PythonError { message }
  }
}"""

RUN_FAILURES = """
query Failures($runId: ID!) {
  logsForRun(runId: $runId, limit: 5000) {
    ... on EventConnection {
      events {
        __typename
        ... on ExecutionStepFailureEvent { stepKey error { message } }
        ... on RunFailureEvent { message }
        ... on EngineEvent { message error { message } }
      }
    }
  }
}"""

LAUNCH_RUN = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId status } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}"""

LAUNCH_BACKFILL = """
mutation Backfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}"""

BACKFILL_STATUS = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      numPartitions
      isAssetBackfill
      runs(limit: 100) { runId status }
      error { message }
    }
    ... on PythonError { message }
  }
}"""

CHECK_EXECUTIONS = """
query Checks($assetKey: AssetKeyInput!, $checkName: String!) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, limit: 50) {
    runId
    status
    partition
    evaluation { success }
  }
}"""


# --- GraphQL, as the UI sends it ---------------------------------------------------------------


def graphql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{url}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        payload = json.loads(resp.read())
    assert not payload.get("errors"), payload["errors"]
    return payload["data"]


def launch_run(url: str, job: str, *, assets=None, tags=None, run_config=None) -> str:
    selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "jobName": job}
    if assets is not None:
        selector["assetSelection"] = [{"path": path} for path in assets]
    params = {
        "selector": selector,
        "runConfigData": run_config or {},
        "mode": "default",
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
    }
    result = graphql(url, LAUNCH_RUN, {"executionParams": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def await_run(url: str, run_id: str, timeout: float, services: "Services") -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = graphql(url, RUN_STATUS, {"runId": run_id})["runOrError"]
        assert run["__typename"] == "Run", run
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            assert run["status"] == "SUCCESS", f"run {run_id} {run['status']}: {services.diagnose(run_id)}"
            return run
        assert time.monotonic() < deadline, f"run {run_id} still {run['status']}: {services.diagnose(run_id)}"
        services.assert_alive()
        time.sleep(1)


def await_backfill(url: str, backfill_id: str, timeout: float, services: "Services") -> dict:
    deadline = time.monotonic() + timeout
    while True:
        backfill = graphql(url, BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        assert backfill["__typename"] == "PartitionBackfill", backfill
        if backfill["status"] not in ("REQUESTED", "CANCELING", "FAILING"):
            failed = [r["runId"] for r in backfill["runs"] if r["status"] != "SUCCESS"]
            assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS") and not failed, (
                backfill,
                [services.diagnose(r) for r in failed],
            )
            return backfill
        assert time.monotonic() < deadline, f"backfill {backfill_id} still {backfill}"
        services.assert_alive()
        time.sleep(2)


# --- The services ------------------------------------------------------------------------------


class Services:
    """The running processes, their logs, and how to tell why a run failed."""

    def __init__(self, env: dict):
        self.env = env
        self.url = ""
        self.procs: dict[str, object] = {}
        self.logs: dict[str, Path] = {}

    def assert_alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}: {_tail(self.logs[name])}"

    def diagnose(self, run_id: str) -> str:
        """Why a run failed: its failure events first, then the stderr its steps wrote."""
        failures = []
        if self.url:
            events = graphql(self.url, RUN_FAILURES, {"runId": run_id})["logsForRun"].get("events", [])
            failures = [
                f"{e['__typename']} {e.get('stepKey') or ''}: {e.get('message') or ''} "
                f"{(e.get('error') or {}).get('message', '')}"
                for e in events
                if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent") or e.get("error")
            ]
        found = sorted((Path(self.env["DAGSTER_COMPUTE_LOGS_DIR"]) / run_id).rglob("*.err"))
        texts = [f"{p.name}: {p.read_text(errors='replace')[-1500:]}" for p in found]
        return "\n".join(failures + texts) or f"no logs for {run_id}; code server: {_tail(self.logs['code'])}"


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@contextmanager
def service(services: Services, name: str, args: list[str], cwd: Path):
    log = LOGS / f"{name}.log"
    services.logs[name] = log
    with process(args, log, env=services.env, cwd=cwd) as proc:
        services.procs[name] = proc
        yield proc


def shut_down(services: Services, name: str, timeout: float = STOP_SECONDS) -> int:
    """SIGTERM to the service's main process, as `docker compose stop` sends it; it must exit, and
    take the processes it started with it."""
    proc = services.procs.pop(name)
    assert proc.poll() is None, f"{name} died before shutdown: {_tail(services.logs[name])}"
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        left = group_processes(proc.pid)
        stop(proc)
        message = f"{name} ignored SIGTERM for {timeout:.0f}s; still running:\n{left}"
        raise AssertionError(f"{message}\n{_tail(services.logs[name])}") from None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError(f"{name} left child processes running after SIGTERM")
    return code


def wait_for_command(args: list[str], env: dict, timeout: float, what: str, services: Services) -> None:
    """Retry a health-check command (the one docker compose runs) until it succeeds."""
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(args, env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        if done.returncode == 0:
            return
        assert time.monotonic() < deadline, (
            f"{what} never healthy: {done.stdout[-2000:]} {done.stderr[-2000:]}"
        )
        services.assert_alive()
        time.sleep(2)
