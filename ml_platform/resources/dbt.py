"""dagster-dbt's resource, with ``build`` run inside the step's process when the
``dbt_in_process`` accelerator is on (``ml_platform/runtime/dbt_in_process.py``), and as
dagster-dbt's stock ``dbt build`` subprocess when it is off."""

import json
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext
from dagster_dbt import DbtCliResource

from ml_platform.resources.warehouse_engines import Engine
from ml_platform.runtime import dbt_in_process
from ml_platform.runtime.dbt_in_process import engine_of, environment, parse_state_path
from ml_platform.runtime.guard import DBT_IN_PROCESS

__all__ = ["DbtCli", "environment", "parse_state_path"]


class DbtCli(DbtCliResource):
    """``build`` of the models this step selected, with the warehouse dbt's profile reads."""

    def __init__(self, dbt_executable: str = str(Path(sys.executable).parent / "dbt"), **fields):
        """For ``cli``, the dbt installed beside this interpreter, whether or not the venv is on
        PATH (dagster-dbt looks for one on PATH when the resource is created)."""
        super().__init__(dbt_executable=dbt_executable, **fields)

    def event_callbacks(self) -> list[Callable[[Any], None]]:
        """Called with every dbt event of an in-process build, in dbt's thread, before Dagster
        sees it."""
        return []

    def build(
        self, context: AssetExecutionContext, warehouse: Engine | str, variables: Mapping[str, str]
    ) -> Iterator:
        """``dbt build`` of the selected models and their tests into ``warehouse`` (an engine, or
        a file's path), as Dagster events; the profile picks its target from the same settings."""
        if DBT_IN_PROCESS.on():
            yield from dbt_in_process.build(self, context, warehouse, variables, self.event_callbacks())
            return
        with environment(engine_of(warehouse).environment()):
            invocation = self.cli(["build", "--vars", json.dumps(dict(variables))], context=context)
        yield from invocation.stream()

    def preparse(self, warehouse: Engine | str) -> None:
        """Parse the project ahead of the builds of this process's forks (in-process builds only)."""
        if DBT_IN_PROCESS.on():
            dbt_in_process.preparse(self, warehouse)
