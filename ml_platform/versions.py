"""Code and data versions derived from what they describe, never maintained by hand.

A code version is a hash of the source of the functions and modules that compute an asset, so
editing an asset's logic changes its version (and marks it and its descendants stale in the UI).
A content hash identifies a frame's rows whatever their order, so identical data delivered
twice is recognised as unchanged.
"""

import hashlib
import inspect
import json

import numpy as np
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
