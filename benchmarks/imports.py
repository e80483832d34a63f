"""Import cost of the code location, measured in a fresh interpreter (one per measurement).

Every process that loads the location pays it: the webserver's code server, the daemon's, and
each run worker and step process.
"""

from __future__ import annotations

import json
import sys
import time

HEAVY = ("dagster", "dagster_dbt", "dbt", "mlflow", "sklearn", "matplotlib", "duckdb", "pandas", "pyarrow")


def main(target: str, out: str) -> None:
    started = time.perf_counter()
    if target == "definitions":
        import ml_platform.definitions  # noqa: F401
    elif target == "heavy":
        import dagster  # noqa: F401
        import dagster_dbt  # noqa: F401
        import mlflow  # noqa: F401
        import sklearn.ensemble  # noqa: F401
    else:
        raise SystemExit(f"unknown target {target!r}")
    seconds = time.perf_counter() - started
    loaded = {name: name in sys.modules for name in HEAVY}
    with open(out, "w") as fh:
        json.dump({"seconds": seconds, "modules_loaded": loaded, "module_count": len(sys.modules)}, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
