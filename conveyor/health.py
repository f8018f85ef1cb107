"""``/livez`` and ``/readyz`` for orchestrators, served from the supervisor's own loop.

No thread: the supervisor forks workers, and forking while another thread holds a lock can
deadlock the child. Instead ``poll()`` answers whatever requests are waiting, once per tick.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

Status = Callable[[], tuple[bool, dict[str, Any]]]


class HealthServer:
    def __init__(self, host: str, port: int, *, live: Status, ready: Status) -> None:
        checks = {"/livez": live, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            timeout = 2  # a slow client cannot stall the supervisor for long

            def do_GET(self) -> None:
                check = checks.get(self.path.split("?", 1)[0])
                if check is None:
                    self._send(404, {"error": "not found", "paths": sorted(checks)})
                    return
                ok, details = check()
                self._send(200 if ok else 503, {"ok": ok, **details})

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would flood the log

        self.server = HTTPServer((host, port), Handler)
        self.server.timeout = 0
        self.port = self.server.server_address[1]

    def poll(self, budget: int = 8) -> None:
        """Answer up to ``budget`` waiting requests without blocking when there are none."""
        for _ in range(budget):
            before = self.server.socket.fileno()
            self.server.handle_request()
            if before < 0:
                return

    def close(self) -> None:
        self.server.server_close()
