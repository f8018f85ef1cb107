"""``/livez`` and ``/readyz`` for orchestrators, served from the supervisor's own loop.

No thread: the supervisor forks workers, and forking while another thread holds a lock can
deadlock the child. Instead ``poll()`` answers whatever requests are waiting, once per tick.
"""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

from .errors import ConfigurationError

Status = Callable[[], tuple[bool, dict[str, Any]]]
_HINTS = {
    errno.EADDRINUSE: "another process is using that port; pick another --health-port",
    errno.EADDRNOTAVAIL: "no network interface of this machine has that address",
    errno.EACCES: "ports below 1024 need privileges; pick a higher --health-port",
}


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

        try:
            self.server = HTTPServer((host, port), Handler)
        except socket.gaierror as e:
            raise ConfigurationError(
                f"--health-host {host!r} is not an address or host name this machine can use"
                f" ({e.strerror or e})"
            ) from None
        except (OSError, OverflowError, UnicodeError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            hint = _HINTS.get(getattr(e, "errno", 0) or 0, "check --health-host and --health-port")
            raise ConfigurationError(
                f"cannot serve health checks on {host}:{port}: {reason} ({hint})"
            ) from None
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
