"""Write-audit-publish of the dbt feature window.

dbt writes the run's window alone into a staging relation and its tests audit it there; only
then does the step publish it: the window of the published table is deleted and the staged rows
inserted in one transaction, which also empties the staging relation (on a lake, under the
published days' locks and rerun on a commit conflict, like every warehouse write). A window that fails
a blocking test is never published; it stays staged, with each failing test's rows as a view
(``store_failures``), for whoever investigates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from ml_platform import faults
from ml_platform.refusals import window_of
from ml_platform.resources.warehouse import Warehouse, WarehouseError, WriteScope, ident, table_exists

SAMPLE = 5


@dataclass(frozen=True)
class Publication:
    """Where a dbt model is audited (``staged_schema``) and published, and its partition column."""

    staged_schema: str
    published_schema: str
    table: str
    column: str

    @property
    def published(self) -> str:
        return f"{self.published_schema}.{self.table}"

    @property
    def staged(self) -> str:
        return f"{self.staged_schema}.{self.table}"


def publish_schema_of(node: Mapping[str, Any]) -> str | None:
    """The schema a dbt model is published into (``meta.publish_schema`` in dbt_project.yml), if
    it declares one."""
    return ((node.get("config") or {}).get("meta") or node.get("meta") or {}).get("publish_schema")


def publication_of(node: Mapping[str, Any], column: str) -> Publication:
    """The publication a model declares (``meta.publish_schema`` in dbt_project.yml)."""
    published = publish_schema_of(node)
    if not published:
        raise ValueError(f"dbt model {node['name']} declares no meta.publish_schema to publish into")
    for name in (node["schema"], published, node["alias"], column):
        ident(name)  # refused here, at import, rather than at the first publish
    return Publication(node["schema"], published, node["alias"], column)


def publish(warehouse: Warehouse, pub: Publication, start: date, end: date) -> dict[str, int]:
    """Replace the window [start, end) of the published table with the staged rows, in one
    transaction; returns the published rows per day (YYYY-MM-DD)."""

    def replace_window(conn) -> None:
        _publish(conn, pub, start, end)
        faults.reach("features.before_publish_commit")

    days = tuple(start + timedelta(days=n) for n in range((end - start).days))
    warehouse.write(WriteScope(pub.published, days), replace_window)
    with warehouse.connection() as conn:
        rows = conn.execute(
            f"select strftime({ident(pub.column)}, '%Y-%m-%d'), count(*)"  # noqa: S608 - validated identifiers
            f" from {ident(pub.published_schema)}.{ident(pub.table)}"
            f" where {ident(pub.column)} >= ? and {ident(pub.column)} < ? group by 1",
            [start, end],
        ).fetchall()
    return {day: int(n) for day, n in rows}


def _publish(conn, pub: Publication, start: date, end: date) -> None:
    if not table_exists(conn, pub.staged_schema, pub.table):
        raise WarehouseError(f"{pub.staged}: no staged window to publish")
    target = f"{ident(pub.published_schema)}.{ident(pub.table)}"
    staged_columns = _columns(conn, pub.staged_schema, pub.table)
    if not table_exists(conn, pub.published_schema, pub.table):
        conn.execute(f"create schema if not exists {ident(pub.published_schema)}")
        conn.execute(
            f"create table {target} as select * from {ident(pub.staged_schema)}.{ident(pub.table)} limit 0"  # noqa: S608
        )
    published_columns = _columns(conn, pub.published_schema, pub.table)
    if published_columns != staged_columns:
        differ = sorted(set(published_columns.items()) ^ set(staged_columns.items()))
        raise WarehouseError(
            f"{pub.published}: its columns differ from the audited window in {pub.staged} "
            f"({', '.join(f'{n} {t}' for n, t in differ)}); migrate the table (or drop it and "
            "rebuild every day) before publishing"
        )
    outside = conn.execute(
        f"select count(*) from {ident(pub.staged_schema)}.{ident(pub.table)}"  # noqa: S608
        f" where {ident(pub.column)} is null or {ident(pub.column)} < ? or {ident(pub.column)} >= ?",
        [start, end],
    ).fetchall()[0][0]
    if outside:
        raise WarehouseError(
            f"{pub.staged}: {outside} staged row(s) lie outside the window {start}..{end}; "
            "another build replaced the staged window, nothing was published"
        )
    conn.execute(
        f"delete from {target} where {ident(pub.column)} >= ? and {ident(pub.column)} < ?",  # noqa: S608
        [start, end],
    )
    conn.execute(
        f"insert into {target} by name select * from {ident(pub.staged_schema)}.{ident(pub.table)}"  # noqa: S608
    )
    conn.execute(f"delete from {ident(pub.staged_schema)}.{ident(pub.table)}")  # noqa: S608


def _columns(conn, schema: str, table: str) -> dict[str, str]:
    rows = conn.execute(
        "select column_name, data_type from information_schema.columns"
        " where table_catalog = current_database() and table_schema = ? and table_name = ?",
        [schema, table],
    ).fetchall()
    return dict(rows)


def failing_rows(warehouse: Warehouse, schema: str, relation: str) -> tuple[int, str]:
    """How many rows a failed dbt test found and a few of them as text, from the view dbt stores
    its failures in; (0, reason) when there is none."""
    with warehouse.connection() as conn:
        if not table_exists(conn, schema, relation):
            return 0, f"no stored failures at {schema}.{relation}"
        count = conn.execute(f"select count(*) from {ident(schema)}.{ident(relation)}").fetchall()[0][0]  # noqa: S608
        sample = conn.execute(f"select * from {ident(schema)}.{ident(relation)} limit ?", [SAMPLE]).fetchdf()  # noqa: S608
    return int(count), sample.to_string(index=False)


def refusal(
    warehouse: Warehouse,
    pub: Publication,
    asset: str,
    partitions: list[str],
    failed: list[tuple[str, Mapping[str, Any] | None]],
) -> tuple[str, dict[str, str]]:
    """Why a built window is not published: the partition, each failed blocking test (``failed``:
    its name and manifest node) with how many rows failed and a few of them."""
    window = window_of(partitions)
    lines = [
        f"{asset} {window}: not published ({pub.published} keeps its rows; the refused window stays "
        f"in {pub.staged}); blocking dbt test(s) failed:"
    ]
    metadata = {"partition": window, "failed_checks": ", ".join(name for name, _ in failed)}
    for name, node in failed:
        if node is None:
            lines.append(f"- {name}")
            continue
        count, sample = failing_rows(warehouse, node["schema"], node["alias"])
        lines.append(f"- {name}: {count} failing row(s), in the view {node['schema']}.{node['alias']}:")
        lines += [f"    {line}" for line in sample.splitlines()]
        metadata[f"{name} failing rows"] = sample
    return "\n".join(lines), metadata
