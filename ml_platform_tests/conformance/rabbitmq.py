"""The RabbitMQ broker the dagster-celery suite runs on: this machine's, at 127.0.0.1:5672 as
``guest`` (the broker upstream's tests expect), administered with ``rabbitmqctl``.

Other test runs and the deployments share the broker, and a Celery worker takes any step sent to
its virtual host, so the suite never uses the default virtual host ``/``: each pytest process gets
one of its own, named after the run (``<prefix>_<xdist worker>``), made here before the run and
deleted with every queue in it afterwards, after its workers were asked to shut down.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass

HOST, PORT, USER = "127.0.0.1", 5672, "guest"


def broker_url(vhost: str) -> str:
    return f"pyamqp://{USER}@{HOST}:{PORT}/{vhost}"


def broker_host_setting(vhost: str) -> str:
    """The value of ``DAGSTER_CELERY_BROKER_HOST``, the setting upstream's tests and dagster-celery
    take the broker from (``dagster_celery.defaults``: ``pyamqp://guest@<it>:5672//``), that names
    the virtual host too: the rest of upstream's URL becomes a fragment, which the URL parser
    (kombu's) ignores. Every process reads it: the tests, the runs' executors, the workers."""
    return f"{HOST}:{PORT}/{vhost}#"


@dataclass(frozen=True)
class Broker:
    ctl: str = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.ctl, *args], capture_output=True, text=True, timeout=120)

    def problem(self) -> str | None:
        """Why the suite cannot run here, or None."""
        try:
            socket.create_connection((HOST, PORT), timeout=3).close()
        except OSError as exc:
            return f"no RabbitMQ answers at {HOST}:{PORT} ({exc})"
        try:
            listed = self._run("list_vhosts", "--quiet")
        except OSError as exc:
            return f"cannot run rabbitmqctl to make virtual hosts ({exc})"
        return None if listed.returncode == 0 else f"rabbitmqctl failed: {listed.stderr.strip()[:200]}"

    def add_vhost(self, name: str) -> None:
        for args in (("add_vhost", name), ("set_permissions", "-p", name, USER, ".*", ".*", ".*")):
            done = self._run(*args)
            if done.returncode != 0:
                raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {done.stderr.strip()[:200]}")

    def vhosts(self, prefix: str) -> list[str]:
        listed = self._run("list_vhosts", "--quiet", "--no-table-headers")
        return sorted(name for name in listed.stdout.split() if name.startswith(prefix))

    def delete_vhosts(self, prefix: str) -> list[str]:
        """Shuts down the workers on, then deletes, every virtual host named ``prefix...``."""
        names = self.vhosts(prefix)
        for name in names:
            shut_down_workers(name)
            self._run("delete_vhost", name)
        return names


def shut_down_workers(vhost: str) -> None:
    """Asks every Celery worker on ``vhost`` to stop (a test that failed half-way may leave one)."""
    from celery import Celery

    app = Celery("conformance", broker=broker_url(vhost))
    try:
        app.control.broadcast("shutdown")
    except Exception as exc:  # the vhost is deleted next either way, which closes its connections
        print(f"conformance: could not ask the workers on {vhost} to shut down: {exc}", flush=True)
    finally:
        app.close()
