"""The platform's dbt resource with one injected fault, run through dbt's own event callbacks.

* ``kill_at_insert``: the process (the Dagster run, in which dbt builds) is SIGKILLed at the
  moment dbt sends the insert into ``features.flight_features``, i.e. after the pre-hook deleted
  the window inside the model's transaction and before that transaction commits.
* ``reader:<seconds>``: when dbt acquires its first connection (its first event of that name,
  before the lazy open of the warehouse), another process opens the warehouse read-only and
  holds it for that long, as a sensor, check or analyst reading at the wrong moment would.
  When ``report`` is set, the timings are written there (JSON).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from ml_platform.config import DBT_PROJECT_DIR
from ml_platform.resources.dbt import DbtCli
from ml_platform.resources.warehouse import WAREHOUSE_ENV_VAR

INSERT = re.compile(r"insert\s+into\s+\S*flight_features", re.IGNORECASE)
HOLD = (
    "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); "
    "c.execute('select 1').fetchall(); print('held', flush=True); time.sleep(float(sys.argv[2]))"
)


class FaultyDbt(DbtCli):
    fault: str
    report: str | None = None

    def event_callbacks(self) -> list:
        if self.fault == "kill_at_insert":
            return [_kill_at_insert]
        if self.fault.startswith("reader:"):
            return [_ReaderAtFirstConnection(float(self.fault.split(":", 1)[1]), self.report)]
        raise ValueError(f"unknown dbt fault {self.fault!r}")


def faulty_dbt(fault: str, report: Path | None = None) -> FaultyDbt:
    return FaultyDbt(
        project_dir=str(DBT_PROJECT_DIR),
        profiles_dir=str(DBT_PROJECT_DIR),
        fault=fault,
        report=str(report) if report else None,
    )


def _kill_at_insert(event) -> None:
    if event.info.name == "SQLQuery" and INSERT.search(event.data.sql):
        os.kill(os.getpid(), signal.SIGKILL)


class _ReaderAtFirstConnection:
    """Start the reader (and wait until it holds the file) at the first connection; note when
    the reader took the file and when dbt's first query completed (the warehouse is opened
    lazily, between that query's ``SQLQuery`` and ``SQLQueryStatus`` events)."""

    def __init__(self, seconds: float, report: str | None):
        self.seconds = seconds
        self.report = report
        self.reader: subprocess.Popen | None = None
        self.times: dict[str, float] = {}

    def __call__(self, event) -> None:
        if self.reader is None and event.info.name == "NewConnection":
            self.reader = _hold_warehouse(self.seconds)
            self._note("reader_holds")
        elif self.reader is not None and event.info.name == "SQLQueryStatus":
            self._note("first_query_done")

    def _note(self, moment: str) -> None:
        if moment in self.times:
            return
        self.times[moment] = time.time()
        if self.report:
            Path(self.report).write_text(json.dumps(self.times))


def _hold_warehouse(seconds: float) -> subprocess.Popen:
    warehouse = os.environ[WAREHOUSE_ENV_VAR]  # set by the resource for dbt's profile
    reader = subprocess.Popen(
        [sys.executable, "-c", HOLD, warehouse, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    if reader.stdout.readline().strip() != "held":
        raise RuntimeError("the reader could not open the warehouse")
    return reader
