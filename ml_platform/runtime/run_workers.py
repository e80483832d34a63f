"""Run workers start from a process that has already imported the definitions.

The code server (Dagster's gRPC server) starts each launched run in a new process with
``multiprocessing``'s ``spawn`` method, hard-coded in ``DagsterApiServer``: every run first
imports dagster, dagster-dbt (which imports dbt-core), pandas and this code location: 5 s on a
2.8 GHz Xeon core, 8 s on a 2-core EPYC, a third of a daily run. Here the server takes its run
processes from a ``forkserver`` that imported the definitions once: each run is a fork of a
clean, single-threaded process (not of the threaded gRPC server), so what ``spawn`` protects
against does not arise, and the run starts with its modules loaded.

The forkserver is started by the first run and imports the definitions as they are then, and
parses the dbt project (``preparsed_dbt.py``); a code server is restarted when its code is
reloaded, and its forkserver with it.
"""

import inspect
import multiprocessing

from dagster._grpc.server import DagsterApiServer

from ml_platform.automation.execution import PRELOADED
from ml_platform.runtime.guard import LOG, RUN_WORKERS


def start_runs_from_preloaded_server() -> bool:
    """Applied by the instance (``ml_platform.runtime.apply_accelerators``), which a code server
    loads before it starts any run; only a code server starts runs this way. True when applied.

    ``DagsterApiServer`` keeps its context in ``self._mp_ctx``, set before the location loads; a
    property on the class takes precedence over that instance attribute."""
    if isinstance(DagsterApiServer.__dict__.get("_mp_ctx"), property):
        return True
    if not RUN_WORKERS.on():
        return False
    if "self._mp_ctx.Process(" not in inspect.getsource(DagsterApiServer):
        LOG.warning("accelerator run_workers is off: DagsterApiServer no longer starts runs from _mp_ctx")
        return False
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([*PRELOADED, "ml_platform.runtime.preparsed_dbt"])
    DagsterApiServer._mp_ctx = property(lambda self: context, lambda self, value: None)
    return True
