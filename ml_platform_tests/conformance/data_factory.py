"""Stands in for ``dagster_test.utils.data_factory`` (copied there by the runner): upstream's test
helper package, dagster-test, is not published on the package index, and its storage suites only
take ``dagster_run`` from it: a run with defaults, any field given by keyword."""

from uuid import uuid4

from dagster import DagsterRun


def dagster_run(**fields) -> DagsterRun:
    given = {name: value for name, value in fields.items() if value is not None}
    values = {"job_name": "test-job", "run_config": {}, "tags": {}, **given}
    values["run_id"] = str(values.get("run_id") or uuid4())
    return DagsterRun(**values)
