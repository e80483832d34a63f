"""Every shell command the README shows, run as a new user would: on a fresh copy of the checkout
after the documented set-up, from the repository root, in a shell that sets nothing. The commands
are read from the README itself, so the test fails when the README drifts from the platform."""

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ml_platform.keys import CHAMPION_MODEL, FLIGHT_FEATURES, HGB, PREDICTIONS, RAW_FLIGHTS
from ml_platform_tests.conftest import REPO_ROOT, TEST_OUTPUT

README = REPO_ROOT / "README.md"
# Not run here: the two set-up commands (the test runs the set-up itself, and `make test` is
# this suite), and the compose recipe (no container engine; test_compose checks its files).
NOT_RUN = re.compile(r"^(make (dev|test)\b|docker |cp deploy/env\.example )")
LOGS = TEST_OUTPUT / "readme"
PLATFORM_VARIABLES = ("ML_PLATFORM_", "DAGSTER_", "MLFLOW_", "PYTEST", "VIRTUAL_ENV", "PYTHONPATH")


def readme_commands(text: str) -> list[str]:
    """The commands of the README's ``bash``/``sh`` blocks, continuation lines joined and
    trailing comments dropped, in order."""
    commands = []
    for block in re.findall(r"^\s*```(?:bash|sh)\n(.*?)^\s*```", text, flags=re.S | re.M):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def fresh_checkout(target: Path) -> Path:
    """The checkout's files as git sees them (committed or not, ignored files left out)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def shell(command: str, cwd: Path, log: Path) -> subprocess.Popen:
    # The user's shell as it is (proxies, certificates, caches), minus anything this platform,
    # Dagster, MLflow or the test run would read: only the documented set-up may configure them.
    env = {k: v for k, v in os.environ.items() if not k.startswith(PLATFORM_VARIABLES)}
    with log.open("w") as out:
        return subprocess.Popen(
            ["bash", "-c", command], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def finish(proc: subprocess.Popen, command: str, log: Path, timeout: float = 600) -> None:
    assert proc.wait(timeout=timeout) == 0, f"{command}\n{log.read_text(errors='replace')[-4000:]}"
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, f"{command}\n{text[-4000:]}"


def test_the_readme_commands_parse_into_the_walkthrough():
    commands = readme_commands(README.read_text())
    run = [c for c in commands if not NOT_RUN.match(c)]
    tools = " ".join(c.split()[1] for c in run)
    assert tools == "dg dg dg dg dg dg lineage lineage land", run
    assert all(c.startswith(".venv/bin/ml-platform ") for c in run), run


@pytest.mark.walkthrough
@pytest.mark.timeout(1500)
def test_every_readme_command_works_first_time_on_a_fresh_checkout(tmp_path, monkeypatch):
    shutil.rmtree(LOGS, ignore_errors=True)
    LOGS.mkdir(parents=True)
    checkout = fresh_checkout(tmp_path / "ml_platform")
    started = time.monotonic()
    finish(shell("make setup", checkout, LOGS / "setup.log"), "make setup", LOGS / "setup.log", 900)
    timings = {"setup": time.monotonic() - started}
    # The addresses `make dev DAGSTER_PORT=3100 MLFLOW_PORT=5100` serves on, as it records them.
    ports = "make platform-env DAGSTER_PORT=3100 MLFLOW_PORT=5100"
    finish(shell(ports, checkout, LOGS / "ports.log"), ports, LOGS / "ports.log")
    commands = [c for c in readme_commands((checkout / "README.md").read_text()) if not NOT_RUN.match(c)]
    for i, command in enumerate(commands):
        log = LOGS / f"{i:02d}.log"
        began = time.monotonic()
        proc = shell(command, checkout, log)
        if "serving/predictions" in command:
            # A second shell scores a day of the same range at the same moment.
            other_log = LOGS / f"{i:02d}-concurrent.log"
            other = command.replace("--partition-range 2013-06-01...2013-06-07", "--partition 2013-06-07")
            assert other != command
            finish(shell(other, checkout, other_log), other, other_log)
        finish(proc, command, log)
        timings[f"{i:02d} {command[:70]}"] = time.monotonic() - began
    (LOGS / "timings.txt").write_text("\n".join(f"{s:7.1f} s  {c}" for c, s in timings.items()))

    # Every run landed in the instance `make dev` serves, and in its warehouse and tracking store.
    lineage = (LOGS / f"{commands.index(next(c for c in commands if ' lineage ' in c)):02d}.log").read_text()
    assert "20130603-UA-1496-EWR-0712" in lineage and "raw" in lineage
    monkeypatch.setenv("DAGSTER_HOME", str(checkout / ".dagster_home"))  # its dagster.yaml reads it
    instance = dg.DagsterInstance.from_config(str(checkout / ".dagster_home"))
    try:
        runs = instance.get_runs()
        assert len(runs) >= 6 and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs), [
            (r.job_name, r.status) for r in runs
        ]
        for key, partition in [
            (RAW_FLIGHTS, "2013-01-01"),
            (RAW_FLIGHTS, "2013-01-02"),
            (FLIGHT_FEATURES, "2013-06-07"),
            (PREDICTIONS, "2013-06-03"),
        ]:
            assert partition in instance.get_materialized_partitions(key), (key, partition)
        assert instance.get_latest_materialization_event(CHAMPION_MODEL) is not None
        candidate = instance.get_latest_materialization_event(HGB.key).asset_materialization
        mlflow_link = candidate.metadata["mlflow_run"].value
    finally:
        instance.dispose()
    with duckdb.connect(str(checkout / "data" / "warehouse.duckdb"), read_only=True) as conn:
        days = conn.execute("select count(distinct flight_date) from serving.predictions").fetchall()[0][0]
    assert days == 7
    assert len(list((checkout / "data" / "landing" / "flights").glob("2013-01-0*"))) == 7
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{checkout / 'data' / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    every_run = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert every_run and not [r.info.run_name for r in every_run if r.info.status != "FINISHED"]
    # Links follow the addresses the UIs are really served on.
    assert {r.data.tags["dagster.run_url"].split("/runs/")[0] for r in every_run} == {"http://127.0.0.1:3100"}
    assert "http://127.0.0.1:3100/runs/" in lineage
    assert mlflow_link.startswith("http://127.0.0.1:5100/#/experiments/"), mlflow_link
