"""Imported, for its effect, by the process run workers are forked from (``run_workers.py``):
the dbt project is parsed there once, for the warehouse this code location writes, so that a
run's dbt step builds from that manifest instead of parsing inside the warehouse slot.

Nothing may stop that process from starting: if the parse fails, runs parse as they would
without it, and the reason is logged."""

import logging

try:
    from ml_platform.config import load_settings
    from ml_platform.resources import build_resources

    _resources = build_resources(load_settings())
    _resources["dbt"].preparse(_resources["warehouse"].engine)
except Exception:  # noqa: BLE001 - see the module docstring
    logging.getLogger(__name__).warning("dbt project not parsed ahead of runs", exc_info=True)
