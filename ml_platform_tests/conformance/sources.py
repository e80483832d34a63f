"""The upstream test sources of the installed versions, laid out under the build folder
``.conformance/`` (gitignored), reused from one run to the next:

- ``sdists/``: the source distributions of dagster and dagster-postgres, as the package index
  serves them (the wheels carry no tests).
- ``src/<sdist>/``: only their test packages, ``dagster_tests`` and ``dagster_postgres_tests``, so
  that the path never puts the sdists' copies of ``dagster`` ahead of the installed one; likewise
  ``dagster_celery_tests`` from dagster-celery's sdist, for ``celery_run``.
- ``shims/``: what those tests import and upstream does not publish (``dagster_test``), or the
  project does not install (``objgraph``).
- ``suites/``: the files pytest collects, each importing the wired classes of a ``*_suites``
  module, and ``pytest.ini``: pytest's settings for this run alone, not the project's.
- ``work/``: where a run without a tmpfs at /dev/shm makes its scratch directory.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Distribution -> its test package inside the sdist.
TEST_PACKAGES = {"dagster": "dagster_tests", "dagster-postgres": "dagster_postgres_tests"}
# dagster-celery's tests are collected from its sdist as they are (``celery_run``).
CELERY_TEST_PACKAGES = {"dagster-celery": "dagster_celery_tests"}
SUITE_MODULES = {
    "test_sqlite_storages.py": "ml_platform_tests.conformance.sqlite_suites",
    "test_postgres_storages.py": "ml_platform_tests.conformance.postgres_suites",
}
PYTEST_INI = """\
# Written by python -m ml_platform_tests.conformance for its own pytest run.
[pytest]
addopts = -ra
# A test that hangs (a lock, a watcher thread) fails after this instead of stalling the run.
timeout = 600
# Marks of plugins upstream's CI has (pytest-asyncio, pytest-rerunfailures): here they do nothing.
markers =
    asyncio: pytest-asyncio
    flaky: pytest-rerunfailures
filterwarnings =
    ignore::DeprecationWarning
    ignore::dagster.BetaWarning
    ignore::dagster.PreviewWarning
"""


@dataclass(frozen=True)
class Layout:
    root: Path
    pythonpath: tuple[Path, ...]
    suites: Path
    ini: Path
    work: Path


def installed_versions() -> dict[str, str]:
    return {dist: version(dist) for dist in TEST_PACKAGES}


def prepare(root: Path, versions: dict[str, str]) -> Layout:
    sdists = download(root / "sdists", versions)
    paths = [extract(sdists[dist], TEST_PACKAGES[dist], root / "src") for dist in TEST_PACKAGES]
    shims = write_shims(root / "shims")
    suites = root / "suites"
    suites.mkdir(parents=True, exist_ok=True)
    for filename, module in SUITE_MODULES.items():
        header = f"# Written by python -m ml_platform_tests.conformance: the classes of {module}.\n"
        (suites / filename).write_text(f"{header}from {module} import *  # noqa: F403\n")
    ini = root / "pytest.ini"
    ini.write_text(PYTEST_INI)
    work = root / "work"
    work.mkdir(exist_ok=True)
    repo = HERE.parent.parent
    return Layout(root, (repo, *paths, shims), suites, ini, work)


def prepare_celery(root: Path) -> Layout:
    """dagster-celery's tests at the installed version; ``suites`` is its test package."""
    versions = {dist: version(dist) for dist in CELERY_TEST_PACKAGES}
    sdists = download(root / "sdists", versions)
    [(dist, package)] = CELERY_TEST_PACKAGES.items()
    source = extract(sdists[dist], package, root / "src")
    ini = root / "pytest.ini"
    ini.write_text(PYTEST_INI)
    work = root / "work"
    work.mkdir(exist_ok=True)
    return Layout(root, (HERE.parent.parent, source), source / package, ini, work)


def _sdist_file(directory: Path, dist: str, version_: str) -> Path | None:
    for stem in {dist, dist.replace("-", "_")}:
        path = directory / f"{stem}-{version_}.tar.gz"
        if path.is_file():
            return path
    return None


def download(directory: Path, versions: dict[str, str]) -> dict[str, Path]:
    """The sdists of ``versions``, downloaded once. Only these two are taken from source: with
    ``--no-binary :all:`` pip also builds the sdists' build backend from source just to read their
    metadata, a minute more for the same files."""
    directory.mkdir(parents=True, exist_ok=True)
    missing = [dist for dist, v in versions.items() if _sdist_file(directory, dist, v) is None]
    if missing:
        print(f"conformance: downloading the sdists of {', '.join(missing)}", flush=True)
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check"]
        command += ["--no-deps", "--no-binary", ",".join(missing), "--dest", str(directory)]
        subprocess.run(command + [f"{dist}=={versions[dist]}" for dist in missing], check=True)
    found = {dist: _sdist_file(directory, dist, v) for dist, v in versions.items()}
    absent = [dist for dist, path in found.items() if path is None]
    if absent:
        raise RuntimeError(f"pip download gave no sdist for {', '.join(absent)} in {directory}")
    return found


def extract(sdist: Path, package: str, directory: Path) -> Path:
    """``package`` of ``sdist`` into ``directory/<sdist name>/``, which goes on the path."""
    target = directory / sdist.name.removesuffix(".tar.gz")
    if (target / package / "__init__.py").is_file():
        return target
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(sdist) as archive:
        members = []
        for member in archive.getmembers():
            top, _, inside = member.name.partition("/")
            if inside == package or inside.startswith(package + "/"):
                member.name = inside
                members.append(member)
        if not members:
            raise RuntimeError(f"{sdist.name} has no {package}/")
        archive.extractall(partial, members=members, filter="data")
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def write_shims(directory: Path) -> Path:
    utils = directory / "dagster_test" / "utils"
    utils.mkdir(parents=True, exist_ok=True)
    for package in (directory / "dagster_test", utils):
        (package / "__init__.py").write_text('"""Written by python -m ml_platform_tests.conformance."""\n')
    shutil.copyfile(HERE / "data_factory.py", utils / "data_factory.py")
    stand_in = directory / "objgraph.py"
    stand_in.unlink(missing_ok=True)  # never in front of an installed objgraph
    if importlib.util.find_spec("objgraph") is None:
        shutil.copyfile(HERE / "objgraph_stand_in.py", stand_in)
    return directory


def scratch_directory(layout: Layout) -> Path:
    """The tests' working and temporary directory: in memory where the machine has a tmpfs at
    /dev/shm. The suites make some thousands of SQLite files and otherwise wait for the disk at each
    commit; on a busy disk the SQLite suites took several times as long."""
    parent = Path("/dev/shm")
    if not (parent.is_dir() and os.access(parent, os.W_OK)):
        parent = layout.work
    return Path(tempfile.mkdtemp(prefix="ml_platform_conformance_", dir=parent))
