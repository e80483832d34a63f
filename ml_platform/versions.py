"""Code and data versions derived from what they describe, never maintained by hand.

A code version is a hash of the code of the functions and modules that compute an asset: their
syntax tree, docstrings left out, so editing an asset's logic changes its version (and marks it and
its descendants stale in the UI) while comments, docstrings and formatting do not.
A content hash identifies a frame's rows whatever their order, so identical data delivered
twice is recognised as unchanged.
"""

import ast
import functools
import hashlib
import inspect
import json
import textwrap

import numpy as np
import pandas as pd

# Run tag that recomputes even when inputs and code are unchanged (e.g. to prove reproducibility).
FORCE_TAG = "ml_platform/force_rebuild"


def source_version(*objects) -> str:
    """Hash of the code of functions, classes or modules (order-sensitive). Comments, docstrings
    and formatting do not count: a reworded comment must not mark every model stale."""
    digest = hashlib.sha256()
    for obj in objects:
        digest.update(_code_digest(inspect.getsource(obj)).encode())
    return digest.hexdigest()[:16]


@functools.lru_cache(maxsize=128)
def _code_digest(source: str) -> str:
    """Hash of what of ``source`` counts: its syntax tree without positions or docstrings. Source
    that does not parse on its own (a lambda cut out of a call) counts as written. Cached, as
    several assets share helper modules and every process computes the versions on import."""
    tree = _parse(source)
    fingerprint = "source:" + source if tree is None else "ast:" + _dump(tree)
    return hashlib.sha256(fingerprint.encode()).hexdigest()


def _parse(source: str) -> ast.Module | None:
    """``source`` parsed; a method's or nested function's source is indented, and a multi-line
    string in it can keep ``dedent`` from removing that indentation, so it is parsed as a block."""
    try:
        return ast.parse(textwrap.dedent(source))
    except SyntaxError:
        pass
    try:
        block = ast.parse("if True:\n" + source).body[0]
    except SyntaxError:
        return None
    return ast.Module(body=block.body, type_ignores=[])


_DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _dump(node) -> str:
    """``ast.dump`` without positions, docstrings or empty fields: a field a newer Python adds
    empty (``type_params`` in 3.12) leaves the version of unchanged code unchanged. Values are
    written with ``repr`` of plain constants, the same in every process."""
    if isinstance(node, list):
        return f"[{', '.join([_dump(item) for item in node])}]"
    if not isinstance(node, ast.AST):
        return repr(node)
    fields = []
    for name in node._fields:
        value = getattr(node, name, None)
        if name == "body" and isinstance(node, _DOCUMENTED) and value and _is_docstring(value[0]):
            value = value[1:]
        if value is not None and value != []:
            fields.append(f"{name}={_dump(value)}")
    return f"{type(node).__name__}({', '.join(fields)})"


def _is_docstring(statement: ast.stmt) -> bool:
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def frame_hash(frame: pd.DataFrame) -> str:
    """Order-independent hash of a frame's columns and rows."""
    return hash_of_rows(frame.columns, row_hashes(frame))


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row, from that row's values only: any subset of the rows hashes to
    what the subset alone would (``hash_of_rows``), so a frame is hashed once, not per group."""
    if not len(frame):
        return np.empty(0, dtype=np.uint64)
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def hash_of_rows(columns, hashes: np.ndarray) -> str:
    """``frame_hash`` of the rows whose ``row_hashes`` are given."""
    digest = hashlib.sha256(json.dumps([str(c) for c in columns]).encode())
    if len(hashes):
        digest.update(np.sort(hashes).tobytes())
    return digest.hexdigest()[:16]


def combine(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def module_version(module_name: str, *helpers) -> str:
    """Code version of the assets defined in a module: its own source and its helpers'. Call it
    at module level while the module is being imported (``module_version(__name__, ...)``)."""
    import sys

    return source_version(sys.modules[module_name], *helpers)
