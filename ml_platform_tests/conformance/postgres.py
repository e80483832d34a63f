"""The PostgreSQL server the PostgreSQL suites run on: 127.0.0.1:5432 as ``postgres`` unless
``PGHOST``, ``PGPORT``, ``PGUSER`` (and libpq's ``PGPASSWORD``) say otherwise, as for the project's
own tests. The suites need a user that may create databases and roles.

Each pytest worker gets a new database (``plugin.conn_string``), all named after the run, dropped
here when the run ends. Upstream's ``test_load_from_config`` tests connect as role ``test``
(password ``test``) to a database ``test`` on port 5432, the service of upstream's Docker
fixture: ``upstream_test_role`` provides them for the run and removes what it had to add.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2

# Hard-coded by upstream's test_load_from_config: postgresql://test:test@<hostname>:5432/test.
TEST_ROLE = TEST_DATABASE = "test"


@dataclass(frozen=True)
class Server:
    host: str
    port: str
    user: str

    @classmethod
    def from_environment(cls) -> Server:
        env = os.environ
        return cls(env.get("PGHOST", "127.0.0.1"), env.get("PGPORT", "5432"), env.get("PGUSER", "postgres"))

    @property
    def url(self) -> str:
        """Without a database name; the password, if any, comes from libpq's environment."""
        return f"postgresql://{self.user}@{self.host}:{self.port}"

    def connect(self, database: str = "postgres"):
        connection = psycopg2.connect(f"{self.url}/{database}", connect_timeout=5)
        connection.autocommit = True
        return connection

    def problem(self) -> str | None:
        """Why the suites cannot run here, or None."""
        try:
            connection = self.connect()
        except psycopg2.OperationalError as exc:
            return f"no PostgreSQL answers at {self.url} ({' '.join(str(exc).split())})"
        try:
            with connection.cursor() as cur:
                cur.execute("SELECT rolcreatedb, rolsuper FROM pg_roles WHERE rolname = current_user")
                createdb, superuser = cur.fetchone()
            return None if createdb or superuser else f"{self.user} may not create databases"
        finally:
            connection.close()

    def drop_databases(self, prefix: str) -> list[str]:
        """Drops every database whose name starts with ``prefix``; their names."""
        connection = self.connect()
        try:
            with connection.cursor() as cur:
                cur.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (prefix,))
                names = sorted(row[0] for row in cur.fetchall())
                for name in names:
                    cur.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            return names
        finally:
            connection.close()


def _exists(cur, table: str, column: str, name: str) -> bool:
    cur.execute(f"SELECT 1 FROM {table} WHERE {column} = %s", (name,))  # noqa: S608 (constants)
    return cur.fetchone() is not None


@contextmanager
def upstream_test_role(server: Server) -> Iterator[list[str]]:
    """Role and database ``test`` for upstream's ``test_load_from_config``, with their Dagster
    tables already created (two workers creating them at once could collide). Whatever is added is
    removed afterwards: the role, with everything it owns, if it was not there; the database
    likewise; the ``CREATE`` grant on its schema. Yields notes on what could not be done."""
    notes: list[str] = []
    added: set[str] = set()
    try:
        admin = server.connect()
        try:
            with admin.cursor() as cur:
                if not _exists(cur, "pg_roles", "rolname", TEST_ROLE):
                    cur.execute(f"CREATE ROLE {TEST_ROLE} LOGIN PASSWORD 'test'")
                    added.add("role")
                if not _exists(cur, "pg_database", "datname", TEST_DATABASE):
                    cur.execute(f"CREATE DATABASE {TEST_DATABASE} OWNER {TEST_ROLE}")
                    added.add("database")
        finally:
            admin.close()
        database = server.connect(TEST_DATABASE)
        try:
            with database.cursor() as cur:
                cur.execute("SELECT has_schema_privilege(%s, 'public', 'CREATE')", (TEST_ROLE,))
                if not cur.fetchone()[0]:
                    cur.execute(f"GRANT CREATE ON SCHEMA public TO {TEST_ROLE}")
                    added.add("grant")
        finally:
            database.close()
        _create_tables(f"postgresql://{TEST_ROLE}:test@{server.host}:5432/{TEST_DATABASE}")
    except Exception as exc:  # those two tests then fail, saying why; nothing else depends on it
        notes.append(f"role and database {TEST_ROLE} not ready: {' '.join(str(exc).split())}")
    try:
        yield notes
    finally:
        try:
            _remove(server, added)
        except psycopg2.Error as exc:
            print(f"conformance: could not remove the {TEST_ROLE} {', '.join(sorted(added))}: {exc}")


def _create_tables(url: str) -> None:
    from dagster_postgres.event_log import PostgresEventLogStorage
    from dagster_postgres.run_storage import PostgresRunStorage

    for storage_class in (PostgresEventLogStorage, PostgresRunStorage):
        storage_class(url).dispose()


def _remove(server: Server, added: set[str]) -> None:
    if added & {"role", "grant"}:
        database = server.connect(TEST_DATABASE)
        try:
            with database.cursor() as cur:
                if "role" in added:  # it owns only what this run made: the tests' tables
                    cur.execute(f"DROP OWNED BY {TEST_ROLE}")
                else:
                    cur.execute(f"REVOKE CREATE ON SCHEMA public FROM {TEST_ROLE}")
        finally:
            database.close()
    admin = server.connect()
    try:
        with admin.cursor() as cur:
            if "database" in added:
                cur.execute(f"DROP DATABASE {TEST_DATABASE} WITH (FORCE)")
            if "role" in added:
                cur.execute(f"DROP ROLE {TEST_ROLE}")
    finally:
        admin.close()
