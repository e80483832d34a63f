"""Plain ML functions (no Dagster): feature frames, pipelines, metrics, plots, drift, the gate."""
