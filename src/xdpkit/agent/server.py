"""The agent's HTTP endpoints: /metrics (Prometheus), /healthz (the loop is alive), /readyz
(the config in force is the one in the directory, and it is on every interface it names)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from xdpkit.errors import XdpkitError


class _Handler(BaseHTTPRequestHandler):
    agent = None   # set on the subclass made per server
    timeout = 10   # seconds a client may take: a slow one must not hold a thread for ever

    def do_GET(self):  # noqa: N802 (the http.server name)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(self.agent.registry), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            ok, body = self.agent.health() if path == "/healthz" else self.agent.readiness()
            self._send(200 if ok else 503, (json.dumps(body) + "\n").encode(), "application/json")
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain")

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # requests are not worth a log line each
        pass


class Server:
    def __init__(self, agent, host: str, port: int):
        handler = type("Handler", (_Handler,), {"agent": agent})
        try:
            self._httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise XdpkitError(f"cannot listen on {host}:{port}: {exc.strerror}",
                              hint="pick another address with --listen HOST:PORT") from None
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_port
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="xdpkit-agent-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._thread = None
