"""What the dagster-celery conformance run (``make test-conformance-celery``) relies on, checked
without a broker: the setting it gives every process names its own virtual host, never ``/``, and
the executor it patches in is dagster-celery's, by name and config."""

import subprocess
import sys

from dagster_celery import celery_executor
from kombu.utils.url import parse_url

from ml_platform.runtime.celery_watch import celery_steps_executor, watched_celery_executor
from ml_platform_tests.conformance.rabbitmq import broker_host_setting, broker_url


def test_every_process_reaches_the_run_s_own_virtual_host():
    """dagster-celery reads ``DAGSTER_CELERY_BROKER_HOST`` when it is imported: a new process, as a
    worker or a test process is, with the setting takes the run's virtual host."""
    vhost = "mlp_celery_conformance_1_abc123_gw0"
    code = "import dagster_celery.defaults as d; print(d.broker_url)"
    env = {"DAGSTER_CELERY_BROKER_HOST": broker_host_setting(vhost), "PATH": "/usr/bin:/bin"}
    url = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    parsed = parse_url(url.stdout.strip())
    assert (parsed["hostname"], parsed["port"], parsed["virtual_host"]) == ("127.0.0.1", 5672, vhost)
    assert parse_url(broker_url(vhost))["virtual_host"] == vhost


def test_the_watched_executor_stands_in_for_dagster_celery_s(monkeypatch):
    assert watched_celery_executor.name == celery_executor.name == "celery"
    schemas = (watched_celery_executor.config_schema, celery_executor.config_schema)
    assert schemas[0].config_type.key == schemas[1].config_type.key
    monkeypatch.setenv("ML_PLATFORM_ACCELERATORS", "off")
    assert celery_steps_executor() is celery_executor
