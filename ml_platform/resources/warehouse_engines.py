"""Where the warehouse lives and how a write reaches it, chosen by ``ML_PLATFORM_WAREHOUSE``.

* a path: the embedded DuckDB file. One writer at a time (DuckDB's file lock); a connection waits
  with backoff while another process holds it.
* ``ducklake:postgres:<libpq parameters>`` with ``ML_PLATFORM_LAKE_DATA_PATH``: a DuckLake whose
  catalog is a PostgreSQL database and whose rows are Parquet files under the data path. Many
  processes write at once. DuckLake alone does not make a partition replace safe: writes to
  different days of one table conflict at commit, and two first writes of the same day both
  commit (duplicates). So a lake write holds a PostgreSQL advisory lock per (table, day) for
  its whole transaction, and reruns the transaction when the commit reports a conflict.

Every connection of the lake ends with ``USE lake``, so the SQL of the callers (``raw.flights``)
is the same on both engines.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TypeVar

import duckdb

WAREHOUSE_ENV_VAR = "ML_PLATFORM_WAREHOUSE"
LAKE_DATA_ENV_VAR = "ML_PLATFORM_LAKE_DATA_PATH"
LAKE_PREFIX = "ducklake:postgres:"
LOCK_RETRY_SECONDS = 120.0
# A conflicting commit is rerun this many times in all, with a growing, jittered pause.
COMMIT_ATTEMPTS = 8
T = TypeVar("T")
# Extensions come from their wheels (``load_extensions``), never downloaded at first use.
OFFLINE = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


class WarehouseError(RuntimeError):
    """A warehouse operation failed; the message names the table and partition."""


@dataclass(frozen=True)
class WriteScope:
    """What one write replaces: days of a table, or (no days) the whole table."""

    table: str
    days: tuple[date, ...] = ()


def redact(text: str) -> str:
    """``text`` with any libpq ``password=...`` (or URL password) replaced, for messages."""
    text = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", text, flags=re.IGNORECASE)
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", text)


@contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """Everything done in the block commits together when it ends, or not at all."""
    conn.execute("begin transaction")
    try:
        yield conn
        conn.execute("commit")
    except BaseException:
        # Best effort: a failed commit has already ended the transaction, and a failing
        # rollback must not hide the error that caused it.
        try:
            conn.execute("rollback")
        except duckdb.Error:
            pass
        raise


def connect_file(path: str | Path, *, read_only: bool = False, timeout: float = LOCK_RETRY_SECONDS):
    """Open the warehouse file, waiting with backoff while another process holds its lock."""
    path = str(path)
    if not read_only:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        try:
            return duckdb.connect(path, read_only=read_only)
        except (duckdb.IOException, duckdb.ConnectionException) as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise WarehouseError(f"cannot open warehouse {path}: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def is_conflict(exc: BaseException) -> bool:
    """A DuckLake commit that lost to a concurrent one: rerunning the transaction may succeed."""
    return isinstance(exc, duckdb.TransactionException) and "conflict" in str(exc).lower()


class DuckDbFile:
    """The embedded DuckDB file: today's single-writer warehouse."""

    name = "duckdb"

    def __init__(self, path: str | Path):
        self.url = str(path)
        self.database = Path(path).stem  # DuckDB's name for the file's database

    def describe(self) -> str:
        return self.url

    def connect(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        return connect_file(self.url, read_only=read_only)

    def environment(self) -> dict[str, str | None]:
        """The settings that name this file, for a process (dbt) that reads them."""
        return {WAREHOUSE_ENV_VAR: self.key(), LAKE_DATA_ENV_VAR: None}

    def key(self) -> str:
        return str(Path(self.url).resolve())

    @contextmanager
    def locked(self, scope: WriteScope, timeout: float | None = None) -> Iterator[None]:
        yield  # the file lock already admits one writer

    def attempts(self) -> int:
        return 1


class DuckLake:
    """A DuckLake with a PostgreSQL catalog; ``catalog`` is the libpq connection string."""

    name = "ducklake"
    database = "lake"  # attached as

    def __init__(self, catalog: str, data_path: str, lock_timeout: float = LOCK_RETRY_SECONDS):
        self.catalog = catalog
        self.data_path = data_path
        self.lock_timeout = lock_timeout
        self.url = LAKE_PREFIX + catalog

    def describe(self) -> str:
        return f"{redact(self.url)} (data {self.data_path})"

    def connect(self, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        conn = duckdb.connect(config=OFFLINE)
        try:
            self.attach(conn, read_only=read_only)
        except WarehouseError:
            conn.close()
            raise
        return conn

    def attach(self, conn: duckdb.DuckDBPyConnection, *, read_only: bool = False) -> None:
        """Attach the lake to ``conn`` (opened with ``OFFLINE``) as ``lake`` and make it the default
        database: every connection of the platform, and dbt's (``dbt_lake.py``), goes through here."""
        load_extensions()
        try:
            conn.execute("load ducklake; load postgres")
            # ATTACH takes no parameters: the catalog and the data path are quoted literals.
            catalog = LAKE_PREFIX + self.catalog
            if read_only:
                conn.execute(
                    f"attach {literal(catalog)} as lake "
                    f"(data_path {literal(self.data_path)}, data_inlining_row_limit 0, read_only)"
                )
            else:
                conn.execute(
                    f"attach {literal(catalog)} as lake "
                    f"(data_path {literal(self.data_path)}, data_inlining_row_limit 0)"
                )
            conn.execute("use lake")
        except duckdb.Error as exc:
            raise WarehouseError(f"cannot open warehouse {self.describe()}: {redact(str(exc))}") from exc

    def environment(self) -> dict[str, str | None]:
        """The settings that name this lake, for a process (dbt) that reads them."""
        return {WAREHOUSE_ENV_VAR: self.url, LAKE_DATA_ENV_VAR: self.data_path}

    def key(self) -> str:
        """Tells this lake from another, without its password (parse state file names)."""
        return f"{redact(self.url)} {self.data_path}"

    @contextmanager
    def locked(self, scope: WriteScope, timeout: float | None = None) -> Iterator[None]:
        """Hold the advisory lock of each (table, day) of ``scope`` (the table's whole-table key
        when it has no days) until the block ends; a killed holder's session frees them. A lock
        still held by another writer after ``timeout`` (default ``lock_timeout``) seconds is a
        ``WarehouseError``."""
        import psycopg2

        timeout = self.lock_timeout if timeout is None else timeout

        try:
            session = psycopg2.connect(self.catalog, connect_timeout=10)
        except psycopg2.Error as exc:
            raise WarehouseError(
                f"cannot lock {scope.table} in {self.describe()}: {redact(str(exc))}"
            ) from exc
        try:
            with session.cursor() as cur:
                cur.execute("select set_config('lock_timeout', %s, true)", [f"{int(timeout * 1000)}ms"])
                # Sorted, so writers of overlapping ranges take them in one order (no deadlock).
                for day in sorted(set(scope.days)) or [None]:
                    try:
                        cur.execute(
                            "select pg_advisory_xact_lock(hashtext(%s), %s)",
                            [scope.table, day.toordinal() if day else 0],
                        )
                    except psycopg2.errors.LockNotAvailable as exc:
                        raise WarehouseError(
                            f"{scope.table}{f' {day}' if day else ''}: another writer held its lock for "
                            f"{timeout:g} s; nothing was written"
                        ) from exc
            yield
        finally:
            session.rollback()  # ends the transaction, which frees its locks
            session.close()

    def attempts(self) -> int:
        return COMMIT_ATTEMPTS


Engine = DuckDbFile | DuckLake


def engine_for(url: str, data_path: str | None = None) -> Engine:
    """The engine of a ``ML_PLATFORM_WAREHOUSE`` value (validated by ``parse_location``)."""
    if url.startswith(LAKE_PREFIX):
        if not data_path:
            raise WarehouseError(f"{redact(url)} is a lake: it needs {LAKE_DATA_ENV_VAR}")
        return DuckLake(url[len(LAKE_PREFIX) :], data_path)
    return DuckDbFile(url)


def parse_location(url: str, data_path: str | None) -> tuple[str, str | None]:
    """(url, data path) of a ``ML_PLATFORM_WAREHOUSE`` value: a path is resolved; a lake needs
    an absolute data path. Raises ``ValueError`` naming the variable."""
    if url.startswith("ducklake:"):
        if not url.startswith(LAKE_PREFIX) or not url[len(LAKE_PREFIX) :].strip():
            raise ValueError(
                f"{WAREHOUSE_ENV_VAR}={redact(url)!r}: a lake is 'ducklake:postgres:<libpq parameters>'"
                " (e.g. ducklake:postgres:dbname=lake host=127.0.0.1 user=postgres)"
            )
        if not data_path:
            raise ValueError(f"{WAREHOUSE_ENV_VAR} is a lake: set {LAKE_DATA_ENV_VAR} to its data directory")
        if "://" not in data_path and not Path(data_path).is_absolute():
            raise ValueError(f"{LAKE_DATA_ENV_VAR}={data_path!r} is not an absolute path")
        return url, data_path.rstrip("/") + "/"
    if ":" in url.split("/")[0] and not Path(url).drive:
        raise ValueError(
            f"{WAREHOUSE_ENV_VAR}={redact(url)!r} is neither a file path nor a ducklake:postgres: URL"
        )
    return str(Path(url).resolve()), None


def run_write(
    engine: Engine, scope: WriteScope, body: Callable[[duckdb.DuckDBPyConnection], T], *, log=None
) -> T:
    """``body`` in one transaction under the scope's locks; rerun whole on a commit conflict."""
    with engine.locked(scope):
        for attempt in retrying(engine, scope, log):
            with attempt:
                conn = engine.connect()
                try:
                    with transaction(conn):
                        return body(conn)
                finally:
                    conn.close()
    raise AssertionError("unreachable")  # pragma: no cover


def retrying(engine: Engine, scope: WriteScope, log=None) -> Iterator:
    """Attempts (context managers) of a write: a conflict inside one is swallowed and the next
    attempt follows after a pause, until the last, whose conflict propagates."""
    total = engine.attempts()
    for n in range(1, total + 1):
        attempt = _Attempt(n == total)
        yield attempt
        if not attempt.conflicted:
            return
        if log is not None:
            log(f"{scope.table}: commit conflict with a concurrent writer, attempt {n + 1} of {total}")
        time.sleep(min(2.0, 0.05 * 2**n) * (0.5 + random.random()))


class _Attempt:
    def __init__(self, last: bool):
        self.last = last
        self.conflicted = False

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is not None and not self.last and is_conflict(exc):
            self.conflicted = True
            return True
        return False


_LOADED = False


def load_extensions() -> None:
    """Install the DuckLake and PostgreSQL extensions from their (signed) wheels, once per process;
    nothing is downloaded and unsigned extensions stay refused."""
    global _LOADED
    if _LOADED:
        return
    import fcntl

    import duckdb_extensions

    # Concurrent first installs into ~/.duckdb/extensions race: one process at a time.
    lock = Path.home() / ".duckdb" / "ml_platform-extensions.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        for name in ("ducklake", "postgres"):
            duckdb_extensions.import_extension(name)
    _LOADED = True


def literal(text: str) -> str:
    """``text`` as a quoted SQL string literal, for statements that take no parameters (ATTACH)."""
    return "'" + text.replace("'", "''") + "'"
