"""Measuring from outside a process: wall time, peak memory, and the machine it ran on.

Only the standard library: the runner imports this and nothing heavy, so it stays small and
does not compete with the process being measured.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
PACKAGES = [
    "dagster",
    "dagster-dbt",
    "dagster-postgres",
    "dbt-core",
    "dbt-duckdb",
    "duckdb",
    "mlflow",
    "scikit-learn",
    "pandas",
    "pyarrow",
]


@dataclass
class ChildRun:
    """One measured process: its exit code, wall time, and memory."""

    args: list[str]
    returncode: int
    wall_seconds: float
    # ru_maxrss from wait4: the largest resident set of the process or any descendant it waited
    # for (the peak of one process, not a sum).
    max_rss_mb: float
    # Sum of the resident sets of the whole process tree, sampled every ``interval`` seconds:
    # what a multi-process case (webserver, daemon, run workers, dbt) holds at once.
    peak_tree_rss_mb: float
    log: Path
    result: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
        except OSError:
            continue
        # The command name may hold spaces or parentheses; fields follow the last ")".
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree_rss_bytes(root: int) -> int:
    """Resident bytes of ``root`` and all its descendants, now."""
    children = _children_map()
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            pass
        stack.extend(children.get(pid, []))
    return total


def run_child(
    args: list[str],
    *,
    env: dict[str, str],
    log: Path,
    result_path: Path | None = None,
    timeout: float = 1800,
    interval: float = 0.5,
    cwd: Path | None = None,
) -> ChildRun:
    """Run ``args`` in a new session, sample its tree's memory, and reap it with ``wait4``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    peak = 0
    with open(log, "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            deadline = time.monotonic() + timeout
            while not done.wait(interval):
                peak = max(peak, tree_rss_bytes(proc.pid))
                if time.monotonic() > deadline:  # ask first, so that the case can clean up
                    os.killpg(proc.pid, signal.SIGTERM)
                    if not done.wait(30):
                        os.killpg(proc.pid, signal.SIGKILL)
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            done.set()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        sampler.join()
    try:  # anything the case left behind in its session
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    result = {}
    if result_path is not None and result_path.exists():
        result = json.loads(result_path.read_text())
    return ChildRun(
        args=args,
        returncode=proc.returncode,
        wall_seconds=wall,
        max_rss_mb=usage.ru_maxrss / 1024,
        peak_tree_rss_mb=peak / 2**20,
        log=log,
        result=result,
    )


def summary(values: list[float], digits: int = 3) -> dict:
    """Median, min and max of the measured values, and the values themselves."""
    if not values:
        return {"n": 0}
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "n": len(values),
        "values": [round(v, digits) for v in values],
    }


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), without numpy."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "memory_gb": memory_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
