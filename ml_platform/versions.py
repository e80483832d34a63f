"""Code and data versions derived from what they describe, never maintained by hand.

A code version is a hash of the source of the functions and modules that compute an asset, so
editing an asset's logic changes its version (and marks it and its descendants stale in the UI).
A content hash identifies a frame's rows whatever their order, so identical data delivered
twice is recognised as unchanged.
"""

import hashlib
import inspect
import json

import pandas as pd

# Run tag that recomputes even when inputs and code are unchanged (e.g. to prove reproducibility).
FORCE_TAG = "ml_platform/force_rebuild"


def source_version(*objects) -> str:
    """Hash of the source code of functions, classes or modules (order-sensitive)."""
    digest = hashlib.sha256()
    for obj in objects:
        digest.update(inspect.getsource(obj).encode())
    return digest.hexdigest()[:16]


def frame_hash(frame: pd.DataFrame) -> str:
    """Order-independent hash of a frame's columns and rows."""
    digest = hashlib.sha256(json.dumps([str(c) for c in frame.columns]).encode())
    if len(frame):
        rows = pd.util.hash_pandas_object(frame, index=False).to_numpy()
        rows.sort()
        digest.update(rows.tobytes())
    return digest.hexdigest()[:16]


def combine(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def module_version(module_name: str, *helpers) -> str:
    """Code version of the assets defined in a module: its own source and its helpers'. Call it
    at module level while the module is being imported (``module_version(__name__, ...)``)."""
    import sys

    return source_version(sys.modules[module_name], *helpers)
