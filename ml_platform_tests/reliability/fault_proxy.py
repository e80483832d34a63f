"""A faulty network path to MLflow: an HTTP proxy in front of a real ``mlflow server`` that
injects outages, failing paths and delays, shared by the fault-injection suite and the MLflow call
tests."""

from __future__ import annotations

import time


class FaultProxy:
    """A small HTTP proxy in front of a real ``mlflow server`` that injects faults: answer 503 to
    the next ``fail_next`` requests (or to every request while ``down``, or to requests whose
    path contains one of ``fail_paths``), or hold each response ``delay`` seconds. Everything else
    is forwarded unchanged. ``seen`` records (method, path, status) of every request."""

    HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade", "te", "trailer"}

    def __init__(self, upstream: str):
        import http.server
        import threading
        from urllib.parse import urlsplit

        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.fail_next = 0
        self.down = False
        self.fail_paths: tuple[tuple[str, str], ...] = ()  # (method or "*", path fragment)
        self.delay = 0.0
        self.seen: list[tuple[str, str, int]] = []
        self.authorization: set[str] = set()
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if self.headers.get("Authorization"):
                    proxy.authorization.add(self.headers["Authorization"])
                status = proxy._fault(self.command, self.path)
                if status:
                    payload = b'{"error_code": "TEMPORARILY_UNAVAILABLE", "message": "injected fault"}'
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if proxy.delay:
                    time.sleep(proxy.delay)
                import http.client

                conn = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in proxy.HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                with proxy._lock:
                    proxy.seen.append((self.command, self.path, resp.status))
                try:
                    self.send_response(resp.status)
                    for key, value in resp.getheaders():
                        if key.lower() not in proxy.HOP and key.lower() != "content-length":
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    pass

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _fault(self, method: str, path: str) -> int:
        with self._lock:
            failing = self.down or any(
                (m in ("*", method)) and fragment in path for m, fragment in self.fail_paths
            )
            if not failing and self.fail_next > 0:
                self.fail_next -= 1
                failing = True
            if failing:
                self.seen.append((method, path, 503))
            return 503 if failing else 0

    def url(self, credentials: str | None = None) -> str:
        auth = f"{credentials}@" if credentials else ""
        return f"http://{auth}127.0.0.1:{self.port}"

    def heal(self) -> None:
        with self._lock:
            self.fail_next, self.down, self.fail_paths, self.delay = 0, False, (), 0.0

    def count(self, status: int) -> int:
        with self._lock:
            return sum(1 for _, _, s in self.seen if s == status)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
