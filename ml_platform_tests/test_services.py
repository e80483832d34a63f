"""The test harness starts services the way an operator would, whatever shell started pytest."""

import signal
import sys
import time

from ml_platform_tests.services import process


def test_a_service_started_from_a_background_job_still_stops_on_sigterm(tmp_path):
    """A shell's background job (`make test &`, CI runners) starts with SIGINT ignored; Dagster's
    services map SIGTERM to the SIGINT handler, so they inherited "ignore SIGTERM" and never
    stopped. Services get the default SIGINT disposition back, and SIGTERM ends them."""
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGINT))  # as dagster's CLI does\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "service.log"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job starts
    try:
        with process([sys.executable, "-c", code], log) as proc:
            deadline = time.monotonic() + 30
            while "ready" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) != -signal.SIGKILL
            assert "KeyboardInterrupt" in log.read_text()
    finally:
        signal.signal(signal.SIGINT, previous)
