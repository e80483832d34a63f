"""Code versions: what an edit to the code that computes an asset does to its version. Comments,
docstrings and formatting change nothing; constants, operators and called names do; every process
agrees."""

import ast
import hashlib
import importlib.util
import inspect
import os
import subprocess
import sys
import types

import pytest

from ml_platform.versions import module_version, source_version
from ml_platform_tests.conftest import REPO_ROOT
from ml_platform_tests.source_edits import CODE_EDITS, NEUTRAL_EDITS, Source, every_neutral_edit


def test_source_version_changes_with_the_code(tmp_path, monkeypatch):
    module = tmp_path / "some_logic.py"
    module.write_text("def f(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    import some_logic

    before = source_version(some_logic.f)
    module.write_text("def f(x):\n    return x + 2\n")
    importlib.reload(some_logic)
    assert source_version(some_logic.f) != before


# Real modules whose code makes asset code versions; the tests edit copies of their text.
REAL_MODULES = [
    "ml_platform/ml/models.py",
    "ml_platform/ml/training.py",
    "ml_platform/features/assets.py",
    "ml_platform/training/candidates.py",
]


def version_of_text(directory, text: str) -> str:
    """``source_version`` of a module whose file holds ``text``. The module is not executed, so an
    edit that would fail on import (a renamed function) still gets a version."""
    path = directory / f"copy_{hashlib.sha256(text.encode()).hexdigest()[:16]}.py"
    path.write_text(text)
    module = types.ModuleType(path.stem)
    module.__file__ = str(path)
    return source_version(module)


@pytest.mark.parametrize("edit", NEUTRAL_EDITS, ids=lambda e: e.__name__)
@pytest.mark.parametrize("relative", REAL_MODULES)
def test_comments_docstrings_and_formatting_leave_a_modules_code_version_alone(relative, edit, tmp_path):
    src = Source((REPO_ROOT / relative).read_text())
    edited = edit(src)
    if edited == src.text:
        pytest.skip(f"{relative} has nothing that {edit.__name__} changes")
    ast.parse(edited)
    assert version_of_text(tmp_path, edited) == version_of_text(tmp_path, src.text)


@pytest.mark.parametrize("edit", CODE_EDITS, ids=lambda e: e.__name__)
@pytest.mark.parametrize("relative", REAL_MODULES)
def test_a_changed_constant_operator_or_called_name_changes_a_modules_code_version(relative, edit, tmp_path):
    src = Source((REPO_ROOT / relative).read_text())
    original = version_of_text(tmp_path, src.text)
    variants = list(edit(src))
    assert variants
    same = []
    for edited in variants:
        ast.parse(edited)  # still code, so it is the tree that tells them apart
        if version_of_text(tmp_path, edited) == original:
            same.append(next(line for line in edited.split("\n") if line not in src.lines))
    assert not same, same


def load_copy(path, name: str, monkeypatch) -> types.ModuleType:
    """The module in ``path`` imported under ``name``, so its functions and classes are real."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # classes find their source through it
    spec.loader.exec_module(module)
    return module


def code_objects(module: types.ModuleType) -> dict[str, object]:
    """The functions and classes written in the module's file, methods included, by qualified name
    (not what decorators generate, such as a dataclass's ``__init__``)."""

    def written_here(obj) -> bool:
        if inspect.isclass(obj):
            return obj.__module__ == module.__name__
        return inspect.isfunction(obj) and obj.__code__.co_filename == module.__file__

    found = {}
    for value in vars(module).values():
        if written_here(value):
            found[value.__qualname__] = value
            if inspect.isclass(value):
                found.update((f.__qualname__, f) for f in vars(value).values() if written_here(f))
    return found


SYNTHETIC = '''
"""A module whose methods and nested functions are indented."""
import math


class Scaler:
    """Scales."""

    def __init__(self, factor):
        self.factor = factor

    def scale(self, x):
        """A docstring whose continuation lines
start at column 0, so that the method's source cannot be dedented."""
        def inner(y):
            return math.floor(y * self.factor)  # why not round
        return inner(x) + 1
'''


@pytest.mark.parametrize("relative", ["ml_platform/ml/models.py", "ml_platform/ml/training.py", "synthetic"])
def test_each_function_class_and_method_keeps_its_code_version_through_neutral_edits(
    relative, tmp_path, monkeypatch
):
    text = SYNTHETIC if relative == "synthetic" else (REPO_ROOT / relative).read_text()
    edited = every_neutral_edit(Source(text))
    (tmp_path / "original.py").write_text(text)
    (tmp_path / "edited.py").write_text(edited)
    tag = hashlib.sha256(relative.encode()).hexdigest()[:8]
    original = code_objects(load_copy(tmp_path / "original.py", f"original_{tag}", monkeypatch))
    copy = code_objects(load_copy(tmp_path / "edited.py", f"edited_{tag}", monkeypatch))
    assert original and original.keys() == copy.keys()
    for name, obj in original.items():
        assert inspect.getsource(obj) != inspect.getsource(copy[name]), name
        assert source_version(obj) == source_version(copy[name]), name
    if relative == "synthetic":
        (tmp_path / "changed.py").write_text(text.replace("+ 1", "+ 2"))
        changed = load_copy(tmp_path / "changed.py", f"changed_{tag}", monkeypatch)
        assert source_version(changed.Scaler.scale) != source_version(original["Scaler.scale"])
        assert source_version(changed.Scaler.__init__) == source_version(original["Scaler.__init__"])


def test_code_versions_are_the_same_in_every_process():
    """No ``hash()`` or object ids: other processes, with other string hashing, agree."""
    import ml_platform.ml.models as models
    import ml_platform.ml.training as training

    program = (
        "import ml_platform.ml.models as m, ml_platform.ml.training as t\n"
        "from ml_platform.versions import module_version, source_version\n"
        "print(source_version(m), source_version(t.fit_and_evaluate, t.FitResult),"
        " module_version(m.__name__, t))"
    )
    here = [
        source_version(models),
        source_version(training.fit_and_evaluate, training.FitResult),
        module_version(models.__name__, training),
    ]
    runs = {
        seed: subprocess.Popen(
            [sys.executable, "-c", program],
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        for seed in ("1", "2")
    }
    for seed, run in runs.items():
        out, _ = run.communicate(timeout=300)
        assert run.returncode == 0 and out.split()[-3:] == here, seed
