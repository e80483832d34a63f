"""Code versions, data versions, skip-if-unchanged, lineage and reproducibility, on real parts."""

import ast
import hashlib
import importlib.util
import inspect
import io
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import tokenize
import types
from datetime import date

import dagster as dg
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ml_platform.cli import main as cli_main
from ml_platform.config import load_settings
from ml_platform.ingestion.landing import land_days
from ml_platform.resources import build_resources
from ml_platform.versions import (
    FORCE_TAG,
    frame_hash,
    hash_of_rows,
    module_version,
    row_hashes,
    source_version,
)
from ml_platform_tests.conftest import REPO_ROOT, TEST_OUTPUT, local_instance
from ml_platform_tests.ml_support import (
    all_definitions,
    materialize_features,
    predict,
    train,
    training_config,
)

CUTOFF = "2013-01-19"
PREDICT_DAY = "2013-01-21"
FEATURES = dg.AssetKey(["features", "flight_features"])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Landing-zone source, features for 2013-01-05..01-22, one champion and a day's predictions."""
    root = tmp_path_factory.mktemp("versions")
    home = root / "dagster_home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ML_PLATFORM_DATA_DIR", str(root / "data"))
        mp.setenv("ML_PLATFORM_SOURCE", "landing")
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'data' / 'mlflow' / 'mlflow.db'}")
        mp.setenv("ML_PLATFORM_MLFLOW_ARTIFACTS", str(root / "data" / "mlflow" / "artifacts"))
        mp.setenv("DAGSTER_HOME", str(home))
        (root / "data" / "mlflow").mkdir(parents=True)
        settings = load_settings()
        land_days(date(2013, 1, 5), 18, settings.landing_root, echo=lambda _: None)
        with local_instance(home) as instance:
            started = time.perf_counter()
            assert materialize_features(settings, instance, "2013-01-05", "2013-01-22").success
            features_seconds = time.perf_counter() - started
            started = time.perf_counter()
            first = train(settings, instance, training_config(CUTOFF))
            training_seconds = time.perf_counter() - started
            assert first.success
            assert predict(settings, instance, PREDICT_DAY).success
            yield {
                "settings": settings,
                "instance": instance,
                "first": first,
                "home": home,
                "features_seconds": features_seconds,
                "training_seconds": training_seconds,
            }


def client(settings):
    return MlflowClient(settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri)


def mat(result, node):
    return result.asset_materializations_for_node(node)[0]


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
    assert frame_hash(pd.DataFrame({"a": [1, 2]})) == frame_hash(pd.DataFrame({"a": [2, 1]}))
    assert frame_hash(pd.DataFrame({"a": [1, 2]})) != frame_hash(pd.DataFrame({"a": [1, 3]}))


# Real modules whose code makes asset code versions; the tests edit copies of their text.
REAL_MODULES = [
    "ml_platform/ml/models.py",
    "ml_platform/ml/training.py",
    "ml_platform/features/assets.py",
    "ml_platform/training/candidates.py",
]
FSTRING_START = getattr(tokenize, "FSTRING_START", None)
FSTRING_END = getattr(tokenize, "FSTRING_END", None)


class Source:
    """A module's text with its tokens and syntax tree, to make edits at their positions."""

    def __init__(self, text: str):
        self.text = text
        self.lines = text.split("\n")
        self.line_starts = list(itertools.accumulate((len(line) + 1 for line in self.lines), initial=0))
        self.tree = ast.parse(text)
        self.tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
        in_fstrings = set()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.JoinedStr):  # positions inside f-strings differ by Python version
                in_fstrings.update(id(n) for n in ast.walk(node))
        self.nodes = [n for n in ast.walk(self.tree) if id(n) not in in_fstrings]

    def offset(self, row: int, col: int) -> int:
        return self.line_starts[row - 1] + col

    def start(self, node: ast.AST) -> int:
        return self._ast_offset(node.lineno, node.col_offset)

    def end(self, node: ast.AST) -> int:
        return self._ast_offset(node.end_lineno, node.end_col_offset)

    def _ast_offset(self, row: int, byte_col: int) -> int:
        return self.offset(row, len(self.lines[row - 1].encode()[:byte_col].decode()))

    def starts_its_line(self, node: ast.AST) -> bool:
        return not self.text[self.line_starts[node.lineno - 1] : self.start(node)].strip()

    def bracketed_tokens(self):
        """The tokens inside brackets, outside f-strings: where line breaks and spaces are free."""
        depth = in_fstring = 0
        for token in self.tokens:
            in_fstring += (token.type == FSTRING_START) - (token.type == FSTRING_END)
            if token.type == tokenize.OP and token.string in ")]}" and not in_fstring:
                depth -= 1
            if depth > 0 and not in_fstring:
                yield token
            if token.type == tokenize.OP and token.string in "([{" and not in_fstring:
                depth += 1

    def docstrings(self):
        """The docstring expressions, with the module, class or function they document."""
        for node in self.nodes:
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                first = node.body[0] if node.body else None
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                    if isinstance(first.value.value, str):
                        yield node, first

    def edit(self, changes) -> str:
        """The text with each ``(start, end, replacement)`` applied (offsets into the original)."""
        text = self.text
        for start, end, replacement in sorted(changes, key=lambda c: (c[0], c[1]), reverse=True):
            text = text[:start] + replacement + text[end:]
        return text

    def token_between(self, start: int, end: int, string: str) -> tokenize.TokenInfo | None:
        """The first operator or keyword token spelt ``string`` between two offsets."""
        for token in self.tokens:
            if start <= self.offset(*token.start) < end and token.type in (tokenize.OP, tokenize.NAME):
                if token.string == string:
                    return token
        return None


# Edits that leave the code as it was: comments, docstrings, formatting.


def comments_added(src: Source) -> str:
    """A comment at the end of every line and a line of comment before every statement."""
    ends = [src.offset(*t.start) for t in src.tokens if t.type in (tokenize.NEWLINE, tokenize.NL)]
    rows = {n.lineno for n in src.nodes if isinstance(n, ast.stmt) and src.starts_its_line(n)}
    starts = [src.line_starts[row - 1] for row in rows]
    return src.edit([(at, at, "  # a note") for at in ends] + [(at, at, "# a comment\n") for at in starts])


def comments_reworded(src: Source) -> str:
    comments = [t for t in src.tokens if t.type == tokenize.COMMENT]
    return src.edit((src.offset(*t.start), src.offset(*t.end), f"# {t.string[1:][::-1]}") for t in comments)


def comments_removed(src: Source) -> str:
    comments = [t for t in src.tokens if t.type == tokenize.COMMENT]
    return src.edit((src.offset(*t.start), src.offset(*t.end), "") for t in comments)


def docstrings_reworded(src: Source) -> str:
    docs = [doc for _, doc in src.docstrings()]
    return src.edit((src.start(d), src.end(d), '"""Reworded,\n\nover two paragraphs."""') for d in docs)


def docstrings_removed(src: Source) -> str:
    """Every docstring that is not its body's only statement, with its line."""
    changes = []
    for owner, doc in src.docstrings():
        rest_of_line = src.text[src.end(doc) : src.line_starts[doc.end_lineno]]
        if len(owner.body) > 1 and src.starts_its_line(doc) and not rest_of_line.strip():
            changes.append((src.line_starts[doc.lineno - 1], src.line_starts[doc.end_lineno], ""))
    return src.edit(changes)


def docstrings_added(src: Source) -> str:
    """A docstring for every function and class without one (and for the module)."""
    documented = {id(owner) for owner, _ in src.docstrings()}
    changes = [] if id(src.tree) in documented else [(0, 0, '"""Added."""\n')]
    for node in src.nodes:
        definition = isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        if definition and id(node) not in documented:
            first = node.body[0]
            row = min([first.lineno] + [d.lineno for d in getattr(first, "decorator_list", [])])
            if row > node.lineno and src.starts_its_line(first):
                at = src.line_starts[row - 1]
                changes.append((at, at, " " * first.col_offset + '"""Added."""\n'))
    return src.edit(changes)


def line_breaks_in_brackets(src: Source) -> str:
    """A line break after every opening bracket and comma and before every closing bracket."""
    changes = []
    for token in src.bracketed_tokens():
        if token.type == tokenize.OP and token.string in "([{,":
            changes.append((src.offset(*token.end), src.offset(*token.end), "\n"))
        if token.type == tokenize.OP and token.string in ")]}":
            changes.append((src.offset(*token.start), src.offset(*token.start), "\n"))
    return src.edit(changes)


def spaces_in_brackets(src: Source) -> str:
    """A space after every operator and punctuation inside brackets."""
    changes = [
        (src.offset(*t.end), src.offset(*t.end), " ") for t in src.bracketed_tokens() if t.type == tokenize.OP
    ]
    return src.edit(changes)


def blank_lines_added(src: Source) -> str:
    """Two blank lines before every statement."""
    rows = sorted({n.lineno for n in src.nodes if isinstance(n, ast.stmt) and src.starts_its_line(n)})
    return src.edit((src.line_starts[r - 1], src.line_starts[r - 1], "\n\n") for r in rows)


def rewritten_by_unparse(src: Source) -> str:
    """The same tree written out canonically: other quotes, parentheses, breaks and no comments."""
    return ast.unparse(src.tree)


def every_neutral_edit(src: Source) -> str:
    """Comments and docstrings reworded, comments added and calls broken over lines, together."""
    text = src.text
    for edit in (comments_reworded, docstrings_reworded, comments_added, line_breaks_in_brackets):
        text = edit(Source(text))
    return text


NEUTRAL_EDITS = [
    comments_added,
    comments_reworded,
    comments_removed,
    docstrings_reworded,
    docstrings_removed,
    docstrings_added,
    line_breaks_in_brackets,
    spaces_in_brackets,
    blank_lines_added,
    rewritten_by_unparse,
    every_neutral_edit,
]


# Edits that change what the code computes, one variant per place in the module.


def constants_changed(src: Source):
    """Each number, string (not a docstring) and bytes literal changed, one at a time."""
    docstrings = {id(doc.value) for _, doc in src.docstrings()}
    for node in src.nodes:
        if not isinstance(node, ast.Constant) or id(node) in docstrings:
            continue
        value = node.value
        if isinstance(value, bool) or value is None or value is Ellipsis:
            continue
        if isinstance(value, int | float) and value + 1 != value:
            yield src.edit([(src.start(node), src.end(node), repr(value + 1))])
        elif isinstance(value, str | bytes):
            suffix = "x" if isinstance(value, str) else b"x"
            yield src.edit([(src.start(node), src.end(node), repr(value + suffix))])


# The operator's spelling, and what it becomes.
SWAPPED = {
    **{ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.Mult: ("*", "/"), ast.Div: ("/", "*")},
    **{ast.FloorDiv: ("//", "/"), ast.Mod: ("%", "//"), ast.Pow: ("**", "*"), ast.MatMult: ("@", "*")},
    **{ast.LShift: ("<<", ">>"), ast.RShift: (">>", "<<"), ast.BitOr: ("|", "&"), ast.BitAnd: ("&", "|")},
    **{ast.BitXor: ("^", "|"), ast.Invert: ("~", "-"), ast.UAdd: ("+", "-"), ast.USub: ("-", "+")},
    **{ast.Lt: ("<", ">"), ast.Gt: (">", "<"), ast.LtE: ("<=", ">="), ast.GtE: (">=", "<=")},
    **{ast.Eq: ("==", "!="), ast.NotEq: ("!=", "=="), ast.In: ("in", "not in"), ast.NotIn: ("not", "")},
    **{ast.Is: ("is", "is not"), ast.IsNot: ("not", ""), ast.Not: ("not", "")},
    **{ast.And: ("and", "or"), ast.Or: ("or", "and")},
}


def operators_changed(src: Source):
    """Each binary, augmented, boolean, comparison and unary operator swapped, one at a time."""
    for node in src.nodes:
        places = []  # (operator, start, end): the operator is written between the two offsets
        if isinstance(node, ast.BinOp):
            places = [(node.op, src.end(node.left), src.start(node.right))]
        elif isinstance(node, ast.AugAssign):
            places = [(node.op, src.end(node.target), src.start(node.value))]
        elif isinstance(node, ast.BoolOp):
            places = [(node.op, src.end(a), src.start(b)) for a, b in itertools.pairwise(node.values)]
        elif isinstance(node, ast.Compare):
            pairs = itertools.pairwise([node.left, *node.comparators])
            places = [(op, src.end(a), src.start(b)) for op, (a, b) in zip(node.ops, pairs, strict=True)]
        elif isinstance(node, ast.UnaryOp):
            places = [(node.op, src.start(node), src.start(node.operand))]
        for op, start, end in places:
            spelling, replacement = SWAPPED[type(op)]
            if isinstance(node, ast.AugAssign):
                spelling, replacement = spelling + "=", replacement + "="
            token = src.token_between(start, end, spelling)
            assert token is not None, (ast.unparse(node), src.text[start:end])
            yield src.edit([(src.offset(*token.start), src.offset(*token.end), replacement)])


def called_names_changed(src: Source):
    """Each called function's or method's name changed, one at a time."""
    for node in src.nodes:
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name):
            start, end, name = src.start(func), src.end(func), func.id
        elif isinstance(func, ast.Attribute):
            start, end, name = src.end(func) - len(func.attr), src.end(func), func.attr
        else:
            continue
        assert src.text[start:end] == name
        yield src.edit([(start, end, name + "_renamed")])


CODE_EDITS = [constants_changed, operators_changed, called_names_changed]


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


def test_a_days_hash_from_the_whole_frames_row_hashes_equals_the_hash_of_that_day_alone():
    frame = pd.DataFrame(
        {
            "day": pd.to_datetime(["2013-01-02", "2013-01-01", "2013-01-02", "2013-01-03", "2013-01-01"]),
            "carrier": pd.Categorical(["UA", "AA", None, "UA", "B6"]),
            "flight": pd.array([1, None, 3, 4, 5], dtype="Int64"),
            "tailnum": ["N1", None, "N3", "N4", "N5"],
            "delay": [1.5, float("nan"), -2.0, 0.0, 7.25],
        }
    )
    hashes = row_hashes(frame)
    for day, rows in frame.groupby("day"):
        positions = frame.index.get_indexer(rows.index)
        assert hash_of_rows(frame.columns, hashes[positions]) == frame_hash(rows), day
    assert hash_of_rows(frame.columns, hashes) == frame_hash(frame)
    assert hash_of_rows(frame.columns, hashes[:0]) == frame_hash(frame.iloc[0:0])
    assert hash_of_rows(frame.columns, hashes[[0]]) != hash_of_rows(frame.columns, hashes[[2]])


def test_every_asset_has_a_code_version(env):
    specs = build_resources  # noqa: F841 - the definitions below use the module settings
    from ml_platform.definitions import build_definitions

    versions = {s.key.to_user_string(): s.code_version for s in build_definitions().resolve_all_asset_specs()}
    assert all(versions.values()), [k for k, v in versions.items() if not v]


def test_raw_data_version_is_the_content_and_a_changed_file_changes_it(env):
    settings, instance = env["settings"], env["instance"]
    select = dg.AssetSelection.assets(["raw", "flights"])
    kwargs = dict(selection=select, resources=build_resources(settings), instance=instance)
    first = dg.materialize(all_definitions(), partition_key="2013-01-22", **kwargs)
    again = dg.materialize(all_definitions(), partition_key="2013-01-22", **kwargs)
    version = mat(first, "raw__flights").tags["dagster/data_version"]
    assert mat(again, "raw__flights").tags["dagster/data_version"] == version
    path = settings.landing_root / "flights" / "2013-01-22.parquet"
    original = path.read_bytes()
    try:
        frame = pd.read_parquet(path)
        frame.iloc[:-1].to_parquet(path, index=False)
        changed = dg.materialize(all_definitions(), partition_key="2013-01-22", **kwargs)
        assert mat(changed, "raw__flights").tags["dagster/data_version"] != version
    finally:
        path.write_bytes(original)
        assert dg.materialize(all_definitions(), partition_key="2013-01-22", **kwargs).success


def test_an_unchanged_rerun_skips_dbt_and_training_and_says_so(env):
    settings, instance = env["settings"], env["instance"]
    registry = client(settings)
    versions_before = len(registry.search_model_versions(f"name='{settings.registered_model_name}'"))
    started = time.perf_counter()
    features = materialize_features(settings, instance, "2013-01-05", "2013-01-22")
    features_seconds = time.perf_counter() - started
    started = time.perf_counter()
    retrain = train(settings, instance, training_config(CUTOFF))
    training_seconds = time.perf_counter() - started
    assert features.success and retrain.success
    ff = [e for e in features.get_asset_materialization_events() if e.asset_key == FEATURES]
    assert len(ff) == 18 and all(e.materialization.metadata["unchanged"].value for e in ff)
    for node in ("training__candidate_logreg", "training__candidate_hgb", "training__candidate_forest"):
        assert mat(retrain, node).metadata["unchanged"].value is True
        first_version = mat(env["first"], node).tags["dagster/data_version"]
        assert mat(retrain, node).tags["dagster/data_version"] == first_version
    assert mat(retrain, "training__champion_model").metadata["unchanged"].value is True
    assert len(registry.search_model_versions(f"name='{settings.registered_model_name}'")) == versions_before
    report = {
        "features_first_seconds": env["features_seconds"],
        "features_unchanged_seconds": features_seconds,
        "training_first_seconds": env["training_seconds"],
        "training_unchanged_seconds": training_seconds,
    }
    report["features_fraction"] = features_seconds / env["features_seconds"]
    report["training_fraction"] = training_seconds / env["training_seconds"]
    (TEST_OUTPUT / "versions").mkdir(parents=True, exist_ok=True)
    (TEST_OUTPUT / "versions" / "skip_unchanged.json").write_text(json.dumps(report, indent=2))
    print(f"unchanged re-run cost: {report}")


def test_model_versions_carry_their_lineage_and_a_prediction_traces_back(env, capsys):
    settings = env["settings"]
    champion = client(settings).get_model_version_by_alias(settings.registered_model_name, "champion")
    tags = champion.tags
    assert tags["dagster.run_id"] == env["first"].run_id
    assert tags["code_version"] and tags["lineage.train_window"] == "2013-01-05..2013-01-18"
    assert tags["lineage.holdout_window"] == "2013-01-19..2013-01-22"
    assert tags["lineage.feature_partition_count"] == "18"
    run = client(settings).get_run(tags["source_run_id"])
    contexts = {i.tags[0].value for i in run.inputs.dataset_inputs}
    assert contexts == {"training", "evaluation"}
    flight = (
        build_resources(settings)["warehouse"]
        .query(
            "select flight_id from serving.predictions where flight_date = ? order by flight_id limit 1",
            [PREDICT_DAY],
        )
        .flight_id[0]
    )
    assert cli_main(["lineage", flight, "--json"]) == 0
    trace = json.loads(capsys.readouterr().out)
    assert trace["model"]["version"] == str(champion.version)
    assert trace["training"]["train_window"] == "2013-01-05..2013-01-18"
    assert trace["training"]["raw"]["flights"]["materialized_days"] == 14
    day_files = trace["raw_for_flight_day"]["flights"]["source_files"]
    assert day_files == str(settings.landing_root / "flights" / f"{PREDICT_DAY}.parquet")
    assert cli_main(["lineage", "no-such-flight"]) == 2


def test_retraining_from_the_same_inputs_reproduces_metrics_and_predictions(env):
    settings, instance = env["settings"], env["instance"]
    before = build_resources(settings)["warehouse"].query(
        "select flight_id, late_probability from serving.predictions where flight_date = ? order by 1",
        [PREDICT_DAY],
    )
    forced = dg.materialize(
        all_definitions(),
        selection=dg.AssetSelection.groups("training"),
        resources=build_resources(settings),
        instance=instance,
        run_config=training_config(CUTOFF),
        tags={FORCE_TAG: "true"},
    )
    assert forced.success
    for node in ("training__candidate_logreg", "training__candidate_hgb", "training__candidate_forest"):
        again, first = mat(forced, node).metadata, mat(env["first"], node).metadata
        assert again["unchanged"].value is False
        assert again["mlflow_run_id"].value != first["mlflow_run_id"].value  # really refitted
        for metric in ("roc_auc", "log_loss", "precision", "recall"):
            assert again[metric].value == first[metric].value
    assert predict(settings, instance, PREDICT_DAY).success
    after = build_resources(settings)["warehouse"].query(
        "select flight_id, late_probability from serving.predictions where flight_date = ? order by 1",
        [PREDICT_DAY],
    )
    pd.testing.assert_frame_equal(before, after)


def _statuses(env_vars: dict, *args: str) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, "-m", "ml_platform_tests.stale_status", PREDICT_DAY, *args],
        check=True,
        env=env_vars,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_editing_one_features_sql_marks_it_and_its_descendants_stale_and_nothing_else(env, tmp_path):
    home_env = {**os.environ, "DAGSTER_HOME": str(env["home"])}
    before = _statuses(home_env)
    assert not {k for k, v in before.items() if v == "STALE"}

    project = tmp_path / "dbt_project"
    shutil.copytree(REPO_ROOT / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs"))
    sql = project / "models" / "features" / "flight_features.sql"
    sql.write_text(sql.read_text().replace("arr_delay > 15", "arr_delay > 15.0"))
    edited = {**home_env, "ML_PLATFORM_DBT_PROJECT_DIR": str(project)}
    dbt = shutil.which("dbt", path=str(REPO_ROOT / ".venv" / "bin")) or "dbt"
    subprocess.run(
        [dbt, "parse", "--quiet", "--project-dir", str(project), "--profiles-dir", str(project)],
        check=True,
        env=edited,
    )
    # The edit itself: the feature model's code version changed, and with it the code versions
    # of what is computed from features (training set, models, predictions); the raw and staging
    # layers and monitoring are not affected.
    after_edit = _statuses(edited)
    assert {k for k, v in after_edit.items() if v == "STALE"} == {
        "features/flight_features",
        "training/training_set",
        "training/candidate_logreg",
        "training/candidate_hgb",
        "training/candidate_forest",
        "training/model_selection",
        "training/champion_model",
        "serving/predictions",
    }
    # Rebuilt with the new SQL, the features are fresh again; what reads them stays stale until
    # it is built again.
    after_rebuild = _statuses(edited, "2013-01-05", "2013-01-22")
    stale = {k for k, v in after_rebuild.items() if v == "STALE"}
    assert {"serving/predictions", "training/training_set"} <= stale
    assert not stale & {"raw/flights", "raw/weather", "raw/planes", "features/flight_features"}
    assert not {k for k in stale if k.startswith("staging/")}
