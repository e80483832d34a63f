"""One environment whatever the door: the platform's commands use the instance and addresses
`make dev` serves, name a missing setting instead of a traceback, and never override what the
environment already says."""

import os
import subprocess
import sys

import pytest

from ml_platform import local_env
from ml_platform.config import load_settings
from ml_platform.resources import build_tracking


@pytest.fixture
def home(tmp_path, monkeypatch):
    """The checkout's instance directory, moved to a temp dir for the test."""
    monkeypatch.setattr(local_env, "LOCAL_HOME", tmp_path / ".dagster_home")
    return tmp_path / ".dagster_home"


def test_locally_the_ui_instance_and_its_addresses_are_the_default(home, monkeypatch):
    home.mkdir()
    (home / local_env.PLATFORM_ENV).write_text(
        "# written by make dev\nML_PLATFORM_DAGSTER_URL=http://127.0.0.1:3100\n"
        "ML_PLATFORM_MLFLOW_UI_URL=http://127.0.0.1:5100\n"
    )
    environ = {"ML_PLATFORM_ENV": "local"}
    applied = local_env.apply(environ)
    assert environ["DAGSTER_HOME"] == str(home) == applied["DAGSTER_HOME"]
    assert (home / "dagster.yaml").read_text() == local_env.LOCAL_INSTANCE_CONFIG.read_text()
    # The links written into MLflow follow the port the UI is served on.
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert build_tracking(settings).dagster_url == "http://127.0.0.1:3100"
    assert settings.mlflow_ui_url == "http://127.0.0.1:5100"


def test_what_the_environment_says_wins(home, tmp_path):
    home.mkdir()
    (home / local_env.PLATFORM_ENV).write_text("ML_PLATFORM_DAGSTER_URL=http://127.0.0.1:3100\n")
    other = tmp_path / "elsewhere"
    environ = {"DAGSTER_HOME": str(other), "ML_PLATFORM_DAGSTER_URL": "https://dagster.example.com"}
    assert local_env.apply(environ) == {}
    assert environ["DAGSTER_HOME"] == str(other) and not other.exists()


def test_production_names_the_missing_instance_directory(home):
    with pytest.raises(local_env.MissingSetting, match="DAGSTER_HOME is not set"):
        local_env.apply({"ML_PLATFORM_ENV": "prod"})
    assert not home.exists()


def test_a_missing_setting_is_a_message_not_a_traceback(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update({"ML_PLATFORM_ENV": "prod", "ML_PLATFORM_DATA_DIR": str(tmp_path)})
    args = [sys.executable, "-m", "ml_platform.cli", "lineage", "20130125-UA-1545-EWR-0515"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("ml-platform lineage: ML_PLATFORM_ENV=prod needs") or (
        "DAGSTER_HOME is not set" in done.stderr
    ), done.stderr
