"""dbt-duckdb plugin of the profile's ``lake`` target: dbt's in-memory DuckDB gets the DuckLake
that ``ML_PLATFORM_WAREHOUSE`` and ``ML_PLATFORM_LAKE_DATA_PATH`` name, attached as ``lake`` by
the same code as every other connection of the platform (``DuckLake.attach``): extensions from
their signed wheels, nothing downloaded, unsigned extensions refused.

The settings are read from the environment each time dbt opens its database, never from the
profile, so the catalog's libpq parameters (and any password) stay out of dbt's configuration,
and a process that builds into another lake later attaches that one.
"""

from __future__ import annotations

import os
from typing import Any

from dbt.adapters.duckdb.plugins import BasePlugin
from dbt_common.exceptions import DbtRuntimeError

from ml_platform.resources.warehouse_engines import (
    LAKE_DATA_ENV_VAR,
    OFFLINE,
    WAREHOUSE_ENV_VAR,
    DuckLake,
    WarehouseError,
    engine_for,
    parse_location,
)


def lake_from_environment() -> DuckLake:
    """The lake the environment names; a file path or a malformed setting is an error naming it."""
    url = os.environ.get(WAREHOUSE_ENV_VAR, "")
    try:
        engine = engine_for(*parse_location(url, os.environ.get(LAKE_DATA_ENV_VAR)))
    except (ValueError, WarehouseError) as exc:
        raise DbtRuntimeError(f"dbt target lake: {exc}") from exc
    if not isinstance(engine, DuckLake):
        raise DbtRuntimeError(
            f"dbt target lake: {WAREHOUSE_ENV_VAR} is not a ducklake:postgres: URL; the file "
            "warehouse is the target local"
        )
    return engine


class Plugin(BasePlugin):
    """Loads the lake's extensions offline and attaches the lake before dbt's own ATTACHes."""

    def update_connection_config(self, creds: Any, config: dict[str, Any]) -> None:
        config.update(OFFLINE)

    def configure_connection(self, conn) -> None:
        try:
            lake_from_environment().attach(conn)
        except WarehouseError as exc:
            raise DbtRuntimeError(f"dbt target lake: {exc}") from exc
