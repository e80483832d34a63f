"""One environment whatever the door: the UI that `make dev` serves, a shell, a CI job.

`make dev` runs Dagster with ``DAGSTER_HOME=.dagster_home`` and writes the addresses it serves on
to ``.dagster_home/platform.env``. The platform's own commands (``ml-platform ...``, and
``ml-platform dagster|dg ...`` for Dagster's CLIs) apply the same environment to themselves: the
same instance, warehouse and tracking store as the UI, and links that point at the UI's real
port. A variable already set in the environment always wins.

Dagster's CLI would also read a ``.env`` file in the working directory, but over the
environment: a ``DAGSTER_HOME`` there would steer every Dagster process started from the checkout
(a test's or a benchmark's throwaway instance) into the UI's instance. So the file lives in the
instance's own directory and only the platform's commands read it.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import MutableMapping
from pathlib import Path

from ml_platform.config import REPO_ROOT

LOCAL_HOME = REPO_ROOT / ".dagster_home"
PLATFORM_ENV = "platform.env"
LOCAL_INSTANCE_CONFIG = REPO_ROOT / "deploy" / "dagster.local.yaml"


class MissingSetting(RuntimeError):
    """A setting a command needs is missing; the message names it and how to set it."""


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines; blank lines and ``#`` comments skipped."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def apply(environ: MutableMapping[str, str] = os.environ) -> dict[str, str]:
    """Fill in what `make dev` gives its processes; returns what was set. Locally the instance
    is ``.dagster_home`` (created from ``deploy/dagster.local.yaml`` when missing); production
    names its own and nothing is guessed there."""
    applied: dict[str, str] = {}
    if environ.get("ML_PLATFORM_ENV", "local") != "local":
        if not environ.get("DAGSTER_HOME"):
            raise MissingSetting(
                "DAGSTER_HOME is not set: production commands need the instance's directory "
                "(the one holding its dagster.yaml), e.g. export DAGSTER_HOME=/opt/dagster/dagster_home"
            )
        return applied
    if not environ.get("DAGSTER_HOME"):
        applied["DAGSTER_HOME"] = str(LOCAL_HOME)
    home = Path(environ.get("DAGSTER_HOME") or LOCAL_HOME)
    if home == LOCAL_HOME and not (home / "dagster.yaml").exists():
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(LOCAL_INSTANCE_CONFIG, home / "dagster.yaml")
    env_file = home / PLATFORM_ENV
    if env_file.exists():
        applied.update({k: v for k, v in read_env_file(env_file).items() if not environ.get(k)})
    environ.update(applied)
    return applied


def exec_tool(tool: str, args: list[str]) -> int:
    """Replace this process with one of Dagster's CLIs (``dagster``, ``dg``) in the platform's
    environment, from the same installation."""
    try:
        apply()
    except MissingSetting as exc:
        print(f"ml-platform {tool}: {exc}", file=sys.stderr)
        return 2
    executable = Path(sys.executable).parent / tool
    os.execv(str(executable), [str(executable), *args])
    return 0  # not reached
