"""Which process started each run worker: sampled from /proc while runs are in flight, so a test
can check that runs launched through the code server fork from the server that preloaded the
definitions (``ml_platform/automation/run_workers.py``) instead of importing them anew, and
whether their dbt builds parsed the project or started from the manifest that server parsed."""

from __future__ import annotations

import os
import re
import threading
import time

import dagster as dg

from ml_platform.config import DBT_PROJECT_DIR

# The in-process executor names the run worker's own pid when it starts the steps.
STARTED = re.compile(r"Executing steps in process \(pid: (\d+)\)")


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    with open("/proc/stat") as stat:  # noqa: PTH123 - /proc
        return next(float(line.split()[1]) for line in stat if line.startswith("btime "))


class ProcessParents(threading.Thread):
    """Every ``pause`` seconds, each process started since the last sample: when it started and
    its parent's command line. Pids are reused (a year of runs wraps a 32,768 pid space twice),
    so a process is known by its pid and start time, and a run worker is matched by when it ran."""

    def __init__(self, pause: float = 0.5):
        super().__init__(daemon=True)
        self.pause = pause
        # pid -> [[start time, last seen alive, parent's command line]], one per process
        self.seen: dict[int, list[list]] = {}
        self._start_ticks: dict[int, str] = {}
        self._boot = _boot_time()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.pause)

    def sample(self) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                with open(f"/proc/{pid}/stat") as stat:  # noqa: PTH123 - /proc
                    # The command name in parentheses may hold spaces; the fields after it are fixed.
                    fields = stat.read().rsplit(")", 1)[1].split()
                if self._start_ticks.get(pid) == fields[19]:
                    self.seen[pid][-1][1] = time.time()
                    continue
                with open(f"/proc/{fields[1]}/cmdline", "rb") as cmdline:  # noqa: PTH123 - /proc
                    parent = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # gone between the listing and the read
            self._start_ticks[pid] = fields[19]
            started = self._boot + int(fields[19]) / CLOCK_TICKS
            self.seen.setdefault(pid, []).append([started, time.time(), parent])

    def parent_at(self, pid: int, alive_at: float) -> str | None:
        """The parent's command line of the process ``pid`` that was running at ``alive_at`` (a
        second either way: start times have clock-tick resolution, samples come every pause)."""
        running = [
            parent
            for start, last_seen, parent in self.seen.get(pid, [])
            if start <= alive_at + 1 and last_seen >= alive_at - 1
        ]
        return running[-1] if running else None

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def run_worker_pids(instance: dg.DagsterInstance, run_ids: list[str]) -> dict[str, tuple[int, float]]:
    """The run worker's pid of each run executed in one process, and a moment it was running,
    from its engine events."""
    pids = {}
    for run_id in run_ids:
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            found = STARTED.search(entry.user_message or "")
            if found:
                pids[run_id] = (int(found.group(1)), entry.timestamp)
    return pids


def parents_of_run_workers(sampler: ProcessParents, pids: dict[str, tuple[int, float]]) -> dict[str, str]:
    """For each run whose worker was seen alive: its parent's command line."""
    parents = {run_id: sampler.parent_at(pid, alive_at) for run_id, (pid, alive_at) in pids.items()}
    return {run_id: parent for run_id, parent in parents.items() if parent is not None}


def dbt_builds_that_parsed(run_ids: list[str]) -> dict[str, bool]:
    """For each run whose dbt target is still there (older ones are pruned): whether its build
    parsed the project, which dbt notes in the build's log; a run worker builds from the manifest
    its server parsed before forking it (``automation/preparsed_dbt.py``)."""
    parsed = {}
    for run_id in run_ids:
        for log in (DBT_PROJECT_DIR / "target").glob(f"dbt_features-{run_id[:7]}-*/dbt.log"):
            parsed[run_id] = "partial parsing" in log.read_text(errors="replace").lower()
    return parsed
