"""Real service processes for integration tests: free ports, start, wait until healthy, stop."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def makefile_default(name: str) -> str:
    """A variable's default as the Makefile sets it (``NAME ?= value``): the deployment
    configuration, not the code, owns settings such as the event batch size."""
    for line in (REPO / "Makefile").read_text().splitlines():
        key, sep, value = line.partition("?=")
        if sep and key.strip() == name:
            return value.strip()
    raise KeyError(f"Makefile sets no default for {name}")


EVENT_BATCH_SIZE = makefile_default("DAGSTER_EVENT_BATCH_SIZE")
# As `make dev` starts `dagster dev`: on a stop the code server gives calls in flight 10 s, not
# Dagster's default 60 s; the daemon and webserver store the events of runs they create in batches.
DEV_ENV = {"DAGSTER_GRPC_SHUTDOWN_GRACE_PERIOD": "10", "DAGSTER_EVENT_BATCH_SIZE": EVENT_BATCH_SIZE}
# How long a Dagster service may take to stop (a clean stop takes a few seconds).
STOP_SECONDS = 60
# A code server waits for open calls up to the grace period, then 5 s more, before it exits: past
# that (and a margin for a loaded machine) it is not stopping.
CODE_SERVER_STOP_SECONDS = int(DEV_ENV["DAGSTER_GRPC_SHUTDOWN_GRACE_PERIOD"]) + 5 + 15


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(
    url: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}: {_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f}s ({last}): {_tail(log)}")


def _tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def interrupts_as_usual() -> None:
    """Run in the child before exec. A shell's background job starts with SIGINT ignored; Python
    then leaves it ignored, and Dagster's services map SIGTERM to the SIGINT handler, so they
    would ignore SIGTERM too and never stop. The child gets the default back."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def process(args: list[str], log: Path, env: dict | None = None, cwd: Path | None = None):
    """Run a command in its own process group; on exit, SIGTERM the group, then SIGKILL."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
            preexec_fn=interrupts_as_usual,
        )
        try:
            yield proc
        finally:
            stop(proc)


def group_processes(pgid: int) -> str:
    """The processes still in a process group (pid, parent, seconds alive, command): what a
    service that would not stop was waiting for."""
    columns = "pid=,ppid=,etimes=,args="
    out = subprocess.run(["ps", "-o", columns, "-g", str(pgid)], capture_output=True, text=True)
    return "\n".join(line[:200] for line in out.stdout.splitlines())


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # an exited process its parent has not reaped yet is done


def wait_for_exit(pids, timeout: float = 60) -> None:
    """Wait until the run workers of finished runs (their events carry the pid) have exited. A
    service stopped while one is still tearing down waits for it: stop it after they are gone,
    as an operator stops a deployment once its runs are over."""
    deadline = time.monotonic() + timeout
    alive = {int(p) for p in pids}
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if _running(p)}
        time.sleep(0.5)
    if alive:
        raise AssertionError(
            f"run workers {sorted(alive)} still running {timeout:.0f}s after their runs finished"
        )


def stop(proc: subprocess.Popen, timeout: float = 20) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            left = group_processes(proc.pid)
            print(f"group {proc.pid} ignored SIGTERM for {timeout:.0f}s:\n{left}", file=sys.stderr)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


@contextmanager
def mlflow_server(root: Path, backend_store_uri: str | None = None):
    """``mlflow server`` on a free loopback port over a store and artifact root under ``root``."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    backend = backend_store_uri or f"sqlite:///{root / 'mlflow.db'}"
    args = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        backend,
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
    ]
    log = root / "mlflow-server.log"
    # As make dev and compose start it: without the GenAI job runner and its consumer processes.
    with process(args, log, env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", timeout=120, proc=proc, log=log)
        yield url, proc


@contextmanager
def webhook_receiver():
    """A local HTTP endpoint that records every JSON POST: (path, content type, body)."""
    received: list[tuple[str, str, dict]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], json.loads(body)))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks/alerts", received
    finally:
        server.shutdown()
