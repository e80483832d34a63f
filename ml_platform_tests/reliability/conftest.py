"""The suite's record: every test here writes what fault it injected, what was expected, what was
observed and whether it passed to ``test-output/reliability.json``; ``report.py`` turns that file
into the README's table.

A test describes its case with the ``record`` fixture::

    record(fault="empty file", expected="clear error naming the file",
           observed=message, bad_input=True, clear_error=True)

Figures summed in the totals: ``lock_failures``, ``rows_lost``, ``rows_duplicated``, and the
flags ``bad_input`` / ``clear_error``. Entries of earlier sessions are kept (keyed by test id), so
the default run and the ``long`` run add up to one record.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from datetime import datetime
from pathlib import Path

import pytest

from ml_platform_tests.conftest import TEST_OUTPUT

RECORD = TEST_OUTPUT / "reliability.json"
AREAS = {
    "test_concurrent_backfill": "1. Concurrent backfills",
    "test_killed_writes": "2. Killed mid-write",
    "test_bad_landing_files": "3. Bad landing files",
    "test_hostile_deliveries": "3. Bad landing files",
    "test_landing_sensor_refusals": "3. Bad landing files",
    "test_fuzz_landing": "3. Bad landing files",
    "test_schema_evolution": "4. Schema evolution",
    "test_mlflow_faults": "5. MLflow unavailable or slow",
    "test_idempotency": "6. Idempotency",
    "test_security": "7. Security",
    "test_security_inputs": "7. Security",
    "test_write_audit_publish": "8. Write-audit-publish",
}
_STASH: pytest.StashKey[list[dict]] = pytest.StashKey()


class Recorder:
    def __init__(self, item: pytest.Item):
        self.item = item
        self.entries: list[dict] = []
        item.stash[_STASH] = self.entries

    def __call__(self, fault: str, expected: str, observed: str, **figures) -> None:
        self.entries.append(
            {"fault": fault, "expected": expected, "observed": str(observed)[:600], "figures": figures}
        )


@pytest.fixture(autouse=True)
def record(request) -> Recorder:
    return Recorder(request.node)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    report = yield
    entries = item.stash.get(_STASH, None)
    if entries is None or report.when not in ("call", "setup"):
        return report
    if report.when == "setup" and report.passed:
        return report
    module = item.module.__name__.rsplit(".", 1)[-1]
    summary = (item.function.__doc__ or item.name).strip().splitlines()[0]
    outcome = "passed" if report.passed else "failed"
    if hasattr(report, "wasxfail"):
        outcome = "known gap (xfail)" if report.skipped else "xpassed"
    if not entries:
        entries.append({"fault": summary, "expected": "", "observed": "", "figures": {}})
    if outcome == "failed":
        problem = report.longreprtext.strip().splitlines()[-1] if report.longreprtext else outcome
        for entry in entries:
            entry["observed"] = (entry["observed"] + " | " if entry["observed"] else "") + problem[:400]
    entries_out = [
        {
            **entry,
            "area": AREAS.get(module, module),
            "test": item.nodeid,
            "passed": report.passed and outcome == "passed",
            "outcome": outcome,
            "seconds": round(report.duration, 1),
            "recorded_at": datetime.now().isoformat(timespec="seconds"),
        }
        for entry in entries
    ]
    _update(item.nodeid, entries_out)
    return report


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    """Forget recorded cases that no longer exist: for every test file of this package that was
    collected (before any deselection), keep only the ids it still has; drop deleted files."""
    here = Path(__file__).parent
    ours = [item for item in items if Path(str(item.fspath)).parent == here]
    if not ours:
        return
    files = {item.nodeid.split("::")[0] for item in ours}
    ids = {item.nodeid for item in ours}
    root = Path(str(config.rootpath))

    def keep(test: str) -> bool:
        file = test.split("::")[0]
        return (root / file).exists() and (file not in files or test in ids)

    _change(lambda cases: {test: entries for test, entries in cases.items() if keep(test)})


def _update(test: str, entries: list[dict]) -> None:
    _change(lambda cases: {**cases, test: entries})


def _change(change) -> None:
    """Read, change and write the record under a lock: pytest-xdist workers share it."""
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{RECORD}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            cases = json.loads(RECORD.read_text())["cases"] if RECORD.exists() else {}
        except (ValueError, KeyError):
            cases = {}
        cases = change(cases)
        tmp = Path(f"{RECORD}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"updated": time.time(), "cases": cases}, indent=2, sort_keys=True))
        tmp.replace(RECORD)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, worker_id):
    """One platform with features, a real MLflow server and a gated champion, shared by the
    registry, MLflow and idempotency cases (each compares against the state it starts from).

    Built once per test session, whatever the number of workers: the first worker to need it
    trains it into a shared directory; every worker then runs on a copy of that directory, with
    its own ``mlflow server`` over the copied store."""
    from ml_platform_tests.reliability.support import PlatformEnv, TrainedPlatform
    from ml_platform_tests.services import mlflow_server

    session_root = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # under pytest-xdist each worker has its own base below the session's
        session_root = session_root.parent
    snapshot = session_root / "trained-snapshot"
    with open(session_root / "trained-snapshot.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (snapshot / "complete").exists():
            shutil.rmtree(snapshot, ignore_errors=True)
            _train_snapshot(snapshot)
            (snapshot / "complete").touch()
    root = tmp_path_factory.mktemp("trained")
    shutil.copytree(snapshot, root, dirs_exist_ok=True)
    with mlflow_server(root / "mlflow-server") as (url, _):
        extra = {"MLFLOW_TRACKING_URI": url, "ML_PLATFORM_PROMOTION_AUC_FLOOR": "0.5"}
        yield TrainedPlatform(PlatformEnv(root, extra=extra), url)


def _train_snapshot(root: Path) -> None:
    from ml_platform_tests.ml_support import materialize_features, train
    from ml_platform_tests.reliability.support import FEATURE_DAYS, TrainedPlatform, platform
    from ml_platform_tests.services import mlflow_server

    with mlflow_server(root / "mlflow-server") as (url, _):
        extra = {"MLFLOW_TRACKING_URI": url, "ML_PLATFORM_PROMOTION_AUC_FLOOR": "0.5"}
        with platform(root, **extra) as (env, settings, instance):
            world = TrainedPlatform(env, url)
            assert materialize_features(settings, instance, *FEATURE_DAYS).success
            assert train(settings, instance, world.run_config()).success
