"""ml_platform: NYC flight delays as a Dagster asset graph, from landed files to monitored predictions."""

import warnings

from dagster import BetaWarning, PreviewWarning, SupersessionWarning

# Beta and preview APIs (backfill policies, partition mappings, map_asset_specs, partition
# freshness checks) are chosen deliberately; their warnings would drown every run's log.
for _category in (BetaWarning, PreviewWarning, SupersessionWarning):
    warnings.filterwarnings("ignore", category=_category)
