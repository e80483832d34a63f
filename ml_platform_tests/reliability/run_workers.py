"""Which process started each run worker: sampled from /proc while runs are in flight, so a test
can check that runs launched through the code server fork from the server that preloaded the
definitions (``ml_platform/automation/run_workers.py``) instead of importing them anew."""

from __future__ import annotations

import os
import re
import threading

import dagster as dg

from ml_platform.config import DBT_PROJECT_DIR

# The in-process executor names the run worker's own pid when it starts the steps.
STARTED = re.compile(r"Executing steps in process \(pid: (\d+)\)")


class ProcessParents(threading.Thread):
    """Every ``pause`` seconds, the parent and command line of every process started since the
    last sample (a pid reused by a later process is read again: its start time differs)."""

    def __init__(self, pause: float = 0.5):
        super().__init__(daemon=True)
        self.pause = pause
        self.parents: dict[int, int] = {}
        self.cmdlines: dict[int, str] = {}
        self._start_times: dict[int, str] = {}
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
                if self._start_times.get(pid) == fields[19]:
                    continue
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:  # noqa: PTH123 - /proc
                    command = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # gone between the listing and the read
            self._start_times[pid], self.parents[pid], self.cmdlines[pid] = (
                fields[19],
                int(fields[1]),
                command,
            )

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def run_worker_pids(instance: dg.DagsterInstance, run_ids: list[str]) -> dict[str, int]:
    """The run worker's pid of each run executed in one process, from its engine events."""
    pids = {}
    for run_id in run_ids:
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            found = STARTED.search(entry.user_message or "")
            if found:
                pids[run_id] = int(found.group(1))
    return pids


def parents_of_run_workers(sampler: ProcessParents, pids: dict[str, int]) -> dict[str, str]:
    """For each run whose worker was seen alive: its parent's command line."""
    return {
        run_id: sampler.cmdlines.get(sampler.parents[pid], "?")
        for run_id, pid in pids.items()
        if pid in sampler.parents
    }


def dbt_builds_that_parsed(run_ids: list[str]) -> dict[str, bool]:
    """For each run whose dbt target is still there (older ones are pruned): whether its build
    parsed the project, which dbt notes in the build's log; a run worker builds from the manifest
    its server parsed before forking it (``automation/preparsed_dbt.py``)."""
    parsed = {}
    for run_id in run_ids:
        for log in (DBT_PROJECT_DIR / "target").glob(f"dbt_features-{run_id[:7]}-*/dbt.log"):
            parsed[run_id] = "partial parsing" in log.read_text(errors="replace").lower()
    return parsed
