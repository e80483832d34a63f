"""Deterministic fault injection for the reliability suite.

``ML_PLATFORM_KILL_AT=<point>`` makes the process SIGKILL itself when it reaches that point —
the moral equivalent of pulling the plug at the worst moment. Unset (always, outside the suite),
``reach`` is a dictionary lookup and nothing else.
"""

import os
import signal

KILL_AT_ENV_VAR = "ML_PLATFORM_KILL_AT"
POINTS = (
    "warehouse.before_commit",  # partition deleted and re-inserted, transaction not committed
    "features.before_publish_commit",  # audited feature window published, transaction not committed
    "registry.before_alias",  # model version registered and tagged, alias not yet moved
)


def reach(point: str) -> None:
    if os.environ.get(KILL_AT_ENV_VAR) == point:
        os.kill(os.getpid(), signal.SIGKILL)
