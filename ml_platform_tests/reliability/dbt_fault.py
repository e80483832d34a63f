"""dbt with one injected fault, chosen by ``RELIABILITY_DBT_FAULT``; used as the ``dbt`` executable.

* ``kill_at_insert``: the process group (the Dagster run and dbt) is SIGKILLed at the moment
  dbt sends the insert into ``features.flight_features``, i.e. after the pre-hook deleted the
  window inside the model's transaction and before that transaction commits.
* ``reader:<seconds>``: when dbt acquires its first connection (its first event of that name,
  before the lazy open of the warehouse), another process opens the warehouse read-only and
  holds it for that long, as a sensor, check or analyst reading at the wrong moment would.

Any other dbt command (``--version``, ``parse``) runs unchanged.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

FAULT_ENV_VAR = "RELIABILITY_DBT_FAULT"
REPORT_ENV_VAR = "RELIABILITY_DBT_FAULT_REPORT"  # where ``reader:`` writes its timings (JSON)
INSERT = re.compile(r"insert\s+into\s+\S*flight_features", re.IGNORECASE)
HOLD = (
    "import duckdb, sys, time; c = duckdb.connect(sys.argv[1], read_only=True); "
    "c.execute('select 1').fetchall(); print('held', flush=True); time.sleep(float(sys.argv[2]))"
)


def fault_dbt_executable() -> str:
    """An executable ``dbt`` that runs this module (the fault is read from the environment)."""
    import stat
    import tempfile

    script = Path(tempfile.mkdtemp(prefix="dbt-fault-")) / "dbt"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m ml_platform_tests.reliability.dbt_fault "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def _kill_at_insert(event) -> None:
    if event.info.name == "SQLQuery" and INSERT.search(event.data.sql):
        os.killpg(os.getpgid(0), signal.SIGKILL)


class _ReaderAtFirstConnection:
    """dbt callback: start the reader (and wait until it holds the file) at the first connection;
    note when the reader took the file and when dbt's first query completed (the warehouse is
    opened lazily, between that query's ``SQLQuery`` and ``SQLQueryStatus`` events)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.reader: subprocess.Popen | None = None
        self.times: dict[str, float] = {}

    def __call__(self, event) -> None:
        if self.reader is None and event.info.name == "NewConnection":
            self.reader = _hold_warehouse(self.seconds)
            self.times["reader_holds"] = time.time()
        elif self.reader is not None and event.info.name == "SQLQueryStatus":
            self.times.setdefault("first_query_done", time.time())


def _hold_warehouse(seconds: float) -> subprocess.Popen:
    warehouse = os.environ["ML_PLATFORM_WAREHOUSE"]  # exported by the features asset for dbt
    reader = subprocess.Popen(
        [sys.executable, "-c", HOLD, warehouse, str(seconds)], stdout=subprocess.PIPE, text=True
    )
    if reader.stdout.readline().strip() != "held":
        raise RuntimeError("the reader could not open the warehouse")
    return reader


def main() -> int:
    args = sys.argv[1:]
    fault = os.environ.get(FAULT_ENV_VAR, "")
    if "build" not in args and "run" not in args:
        return subprocess.call([str(Path(sys.executable).parent / "dbt"), *args])
    from dbt.cli.main import dbtRunner

    reader = _ReaderAtFirstConnection(float(fault.split(":", 1)[1])) if fault.startswith("reader:") else None
    callbacks = [_kill_at_insert] if fault == "kill_at_insert" else [reader] if reader else []
    try:
        result = dbtRunner(callbacks=callbacks).invoke(args)
    finally:
        if reader is not None and reader.reader is not None:
            reader.reader.wait()
            if os.environ.get(REPORT_ENV_VAR):
                Path(os.environ[REPORT_ENV_VAR]).write_text(json.dumps(reader.times))
    if result.exception is not None:
        return 2
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main())
