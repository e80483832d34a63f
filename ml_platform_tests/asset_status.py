"""What the Dagster UI shows of assets, read over Dagster's GraphQL API: the code location of this
process's environment loaded in process on an instance, no webserver."""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import dagster as dg
from dagster._core.test_utils import in_process_test_workspace
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceRequestContext
from dagster_graphql.test.utils import execute_dagster_graphql

from ml_platform.definitions import build_definitions

LATEST_INFO = """
query LatestInfo($keys: [AssetKeyInput!]!) {
  assetsLatestInfo(assetKeys: $keys) {
    assetKey { path }
    latestMaterialization { runId timestamp }
    latestRun { id status endTime }
    inProgressRunIds
    unstartedRunIds
  }
}
"""

LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message reason } }
    ... on PythonError { message }
  }
}
"""


def definitions_from_environment() -> dg.Definitions:
    """The code location of this process's environment (a loadable target takes no arguments)."""
    return build_definitions()


@contextmanager
def graphql_context(instance: dg.DagsterInstance) -> Iterator[WorkspaceRequestContext]:
    origin = LoadableTargetOrigin(module_name=__name__, attribute=definitions_from_environment.__name__)
    with in_process_test_workspace(instance, origin) as context:
        yield context


def query(context: WorkspaceRequestContext, text: str, variables: dict) -> dict:
    result = execute_dagster_graphql(context, text, variables)
    assert not result.errors, result.errors
    return result.data


def shown_failed(info: dict) -> bool:
    """Whether the asset graph and catalog show the asset as failed: the UI's
    ``shouldDisplayRunFailure`` (ui-core asset-graph/Utils.tsx) over its ``assetsLatestInfo``.
    The latest run that planned the asset failed, and the asset's latest materialization is
    neither from that run nor newer than its end."""
    run, materialization = info["latestRun"], info["latestMaterialization"]
    if run is None or run["status"] != "FAILURE":
        return False
    if materialization is not None:
        if materialization["runId"] == run["id"]:
            return False
        if float(materialization["timestamp"]) > float(run["endTime"]) * 1000:
            return False
    return True


def ui_status(context: WorkspaceRequestContext, keys: Iterable[dg.AssetKey]) -> dict[str, dict]:
    """Per asset: its latest materialization's run, the latest run that planned it and that
    run's status, and whether the UI shows the asset failed."""
    variables = {"keys": [{"path": list(key.path)} for key in keys]}
    out = {}
    for info in query(context, LATEST_INFO, variables)["assetsLatestInfo"]:
        run, materialization = info["latestRun"], info["latestMaterialization"]
        out["/".join(info["assetKey"]["path"])] = {
            "materialized_by": materialization and materialization["runId"],
            "latest_run": run and run["id"],
            "latest_run_status": run and run["status"],
            "in_progress": info["inProgressRunIds"] + info["unstartedRunIds"],
            "failed": shown_failed(info),
        }
    return out


def launch(
    context: WorkspaceRequestContext,
    run_config: dict,
    job: str = "__ASSET_JOB",
    assets: Iterable[dg.AssetKey] = (),
) -> dict:
    """A run launched as the launchpad launches it: the job (for ``__ASSET_JOB``, the selected
    ``assets``) with ``run_config``. Returns ``launchRun``'s answer."""
    (location,) = context.code_location_names
    selector = {"repositoryLocationName": location, "repositoryName": "__repository__", "jobName": job}
    if assets:
        selector["assetSelection"] = [{"path": list(key.path)} for key in assets]
    params = {"selector": selector, "runConfigData": run_config, "mode": "default"}
    return query(context, LAUNCH_RUN, {"params": params})["launchRun"]
