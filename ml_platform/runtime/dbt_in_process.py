"""``dbt build`` inside the step's process, by dbt's Python API, its events turned into Dagster
events exactly as dagster-dbt turns a dbt process's output into them.

``DbtCliResource.cli`` starts dbt as a new process for every build. That process imports
dbt-core and its adapter, reads the project and only then builds: 9 to 10.5 s for one day on a
2-core EPYC, of which the build itself is about 2 s, all of it inside the warehouse's
concurrency slot. Here the project is parsed (from the parse state the last build against the
same warehouse left) and the build runs from that manifest, so the partition window reaches dbt
as real ``--vars`` without re-parsing the project; a run worker forked from a server that parsed
it first (``preparse``, ``preparsed_dbt.py``) does not parse at all.

Internals used: dagster-dbt's ``get_updated_cli_invocation_params_for_context`` and
``DbtCoreCliEventMessage``; dbt-duckdb's ``DuckDBConnectionManager`` handle (released after each
build, or the file stays locked). Off (``guard.DBT_IN_PROCESS``), ``resources/dbt.py`` runs
dagster-dbt's stock ``cli(["build", ...])`` subprocess.
"""

import hashlib
import json
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext
from dagster_dbt import DbtCliResource
from dagster_dbt.asset_utils import get_updated_cli_invocation_params_for_context
from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage
from dagster_dbt.errors import DagsterDbtCliRuntimeError

from ml_platform.resources.warehouse_engines import DuckDbFile, DuckLake, Engine, engine_for

PARTIAL_PARSE = "partial_parse.msgpack"
PARSE_STATE_DIR = "parse_state"
RESULTS = {"LogSeedResult", "LogModelResult", "LogSnapshotResult", "LogTestResult"}
WAIT_SECONDS = 0.5  # how often the step looks up from dbt's events (interrupts arrive between)
STOP_SECONDS = 60  # how long a terminated step waits for a cancelled build to end
# One dbt invocation at a time per process: dbt keeps its flags and adapters in globals.
_INVOKE = threading.Lock()
_DONE = object()
# Manifests parsed before this process was forked from a run workers' server (``preparse``),
# each used by the process's first build for its warehouse.
_PREPARSED: dict[tuple, Any] = {}


def build(
    resource: DbtCliResource,
    context: AssetExecutionContext,
    warehouse: Engine | str,
    variables: Mapping[str, str],
    callbacks: list[Callable[[Any], None]],
) -> Iterator:
    """``dbt build`` of the models (and their tests) this step selected, as Dagster events.

    The warehouse is released when the build ends: dbt-duckdb keeps its connection open for
    the life of the process otherwise, and no other process could write the file."""
    warehouse = engine_of(warehouse)
    params = get_updated_cli_invocation_params_for_context(
        context=context, manifest={}, dagster_dbt_translator=None
    )
    project_dir = Path(params.dbt_project.project_dir if params.dbt_project else resource.project_dir)
    target = (project_dir / resource._get_unique_target_path(context=context)).resolve()
    common = common_args(resource, project_dir, target)
    indirect = ["--indirect-selection", params.indirect_selection] if params.indirect_selection else []
    events = Events(callbacks)
    with invoking(warehouse):
        try:
            # A manifest serves one build: dbt marks the ephemeral models it inlines as
            # injected, and a second build from it would not inline them.
            manifest = _PREPARSED.pop(_key(resource, project_dir, warehouse), None) or parse(
                project_dir, warehouse, target, common
            )
            args = ["build", *params.selection_args, *indirect, "--vars", json.dumps(dict(variables))]
            events.start(manifest, [*resource.global_config_flags, *args, *common])
            for raw in events:
                event = DbtCoreCliEventMessage(raw_event=raw, event_history_metadata={})
                yield from event.to_default_asset_events(
                    manifest=params.manifest,
                    dagster_dbt_translator=params.dagster_dbt_translator,
                    context=context,
                    target_path=target,
                    project=params.dbt_project,
                )
            events.raise_on_error(f"dbt {' '.join(args)}", target)
        finally:
            # Left early (the run was terminated): dbt's running query is cancelled (its
            # transaction rolls back and the models that depend on it are skipped; each model is
            # atomic either way), and the handle is closed only once dbt has let go of it.
            if events.stop():
                release_warehouse()


def preparse(resource: DbtCliResource, warehouse: Engine | str) -> None:
    """Parse the project for this warehouse now, in a process that run workers are forked
    from: their builds then start from this manifest instead of parsing inside the
    warehouse slot (1.2 to 2 s a run). The manifest is the project as it is now; a code
    server (and the process run workers fork from) is restarted when its code is reloaded."""
    warehouse = engine_of(warehouse)
    project_dir = Path(resource.project_dir)
    target = Path(tempfile.mkdtemp(prefix="dbt-preparse-"))
    common = common_args(resource, project_dir, target)
    try:
        with invoking(warehouse):
            _PREPARSED[_key(resource, project_dir, warehouse)] = parse(project_dir, warehouse, target, common)
    finally:
        release_warehouse()
        shutil.rmtree(target, ignore_errors=True)


def engine_of(warehouse: Engine | str) -> Engine:
    """The warehouse dbt builds into: an engine, or a file's path."""
    return warehouse if isinstance(warehouse, (DuckDbFile, DuckLake)) else engine_for(str(warehouse))


def _key(resource: DbtCliResource, project_dir: Path, warehouse: Engine) -> tuple:
    return (
        str(project_dir.resolve()),
        warehouse.key(),
        resource.profiles_dir,
        resource.profile,
        resource.target,
    )


def common_args(resource: DbtCliResource, project_dir: Path, target: Path) -> list[str]:
    return [
        "--project-dir", str(project_dir),
        "--target-path", str(target),
        "--log-path", str(target),
        *(["--profiles-dir", str(resource.profiles_dir)] if resource.profiles_dir else []),
        *(["--profile", resource.profile] if resource.profile else []),
        *(["--target", resource.target] if resource.target else []),
    ]  # fmt: skip


@contextmanager
def invoking(warehouse: Engine) -> Iterator[None]:
    """This process's one dbt invocation at a time, with the warehouse dbt's profile reads."""
    with _INVOKE, environment(warehouse.environment()):
        yield


def parse(project_dir: Path, warehouse: Engine, target: Path, common: list[str]):
    """The project's manifest for this warehouse. dbt keys its partial parsing on the connection
    (the warehouse path, or the lake target) and re-parses the whole project when that differs
    from the state it is given (3 s here), so the state is kept per warehouse, starting from the
    one prepared with the manifest (``make manifest``, the image) for the default path; dbt still
    checks it (files, versions, profile)."""
    from dbt.cli.main import dbtRunner

    state = parse_state_path(project_dir, warehouse)
    prepared = project_dir / "target" / PARTIAL_PARSE
    target.mkdir(parents=True, exist_ok=True)
    for start in (state, prepared):
        if start.exists():
            shutil.copyfile(start, target / PARTIAL_PARSE)
            break
    result = dbtRunner().invoke(["parse", "--no-write-json", "--quiet", *common])
    if not result.success:
        raise DagsterDbtCliRuntimeError(
            description=f"dbt could not parse {project_dir}: {result.exception or 'see ' + str(target)}"
        )
    keep_parse_state(target / PARTIAL_PARSE, state)
    return result.result


class Events:
    """A dbt invocation on its own thread, its result events handed to the step as dicts (the
    form of a dbt process's JSON log lines) while it runs."""

    def __init__(self, callbacks: list[Callable[[Any], None]]):
        self.callbacks = callbacks
        self.queue: queue.Queue = queue.Queue()
        self.errors: list[str] = []
        self.result = None
        self.failure: BaseException | None = None
        self.thread: threading.Thread | None = None

    def start(self, manifest, args: list[str]) -> None:
        from dbt.cli.main import dbtRunner

        runner = dbtRunner(manifest=manifest, callbacks=[*self.callbacks, self._receive])

        def invoke() -> None:
            try:
                self.result = runner.invoke(args)
            except BaseException as error:  # noqa: BLE001 - handed to the step's thread
                self.failure = error
            finally:
                self.queue.put(_DONE)

        self.thread = threading.Thread(target=invoke, name="dbt", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = STOP_SECONDS) -> bool:
        """Cancel a build still running and wait for it; True once dbt's thread has ended."""
        if self.thread is None or not self.thread.is_alive():
            return True
        try:
            from dbt.adapters.factory import get_adapter_by_type

            get_adapter_by_type("duckdb").cancel_open_connections()
        except Exception:  # noqa: BLE001 - best effort: the wait below still bounds it
            pass
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _receive(self, msg) -> None:
        if msg.info.level == "error":
            self.errors.append(msg.info.msg)
        if msg.info.name in RESULTS:
            from dbt_common.events.functions import msg_to_dict

            self.queue.put(msg_to_dict(msg))

    def __iter__(self) -> Iterator[dict]:
        while True:
            try:
                item = self.queue.get(timeout=WAIT_SECONDS)
            except queue.Empty:
                continue
            if item is _DONE:
                self.thread.join()  # it has put its last item: only its return is left
                return
            yield item

    def raise_on_error(self, command: str, target: Path) -> None:
        if self.failure is not None:
            description = f"`{command}` raised: {self.failure}"
            raise DagsterDbtCliRuntimeError(description=description) from self.failure
        if self.result is None or not self.result.success:
            cause = self.result.exception if self.result is not None else None
            details = "\n".join(self.errors) or (str(cause) if cause else "")
            raise DagsterDbtCliRuntimeError(
                description=f"`{command}` failed (dbt log: {target / 'dbt.log'}).\n{details}"
            )


def release_warehouse() -> None:
    """Close dbt-duckdb's database handle: it outlives the build (``close_all_connections``
    only forgets it), and the file stays locked against every other process until it is closed."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        if DuckDBConnectionManager._ENV is not None:
            DuckDBConnectionManager._ENV.close()
        DuckDBConnectionManager.close_all_connections()


def parse_state_path(project_dir: Path, warehouse: Engine | str) -> Path:
    """The parse state kept for builds into ``warehouse`` (a file's path, or a lake: its catalog
    without password and its data path)."""
    key = hashlib.sha256(engine_of(warehouse).key().encode()).hexdigest()[:16]
    return project_dir / "target" / PARSE_STATE_DIR / f"{key}.msgpack"


def keep_parse_state(produced: Path, state: Path) -> None:
    """Replace the kept state atomically: a concurrent build reads the old file or the new one."""
    if not produced.exists():
        return
    state.parent.mkdir(parents=True, exist_ok=True)
    partial = state.with_suffix(f".{os.getpid()}.tmp")
    shutil.copyfile(produced, partial)
    partial.replace(state)


@contextmanager
def environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Variables dbt reads (the warehouse, in ``profiles.yml``), set for one invocation; None
    unsets one."""
    previous = {name: os.environ.get(name) for name in values}
    try:
        _set(values)
        yield
    finally:
        _set(previous)


def _set(values: Mapping[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
