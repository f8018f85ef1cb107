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
Page = Callable[[str], tuple[int, bytes, str]]  # a path -> (status, body, content type)
JSON = "application/json"


def _hint(code: int, option: str) -> str:
    return {
        errno.EADDRINUSE: f"another process is using that port; pick another --{option}-port",
        errno.EADDRNOTAVAIL: "no network interface of this machine has that address",
        errno.EACCES: f"ports below 1024 need privileges; pick a higher --{option}-port",
    }.get(code, f"check --{option}-host and --{option}-port")


class PolledServer:
    """A small HTTP server for GETs, answered by ``poll()`` from its owner's loop (the
    supervisor's): ``page(path)`` gives each answer. ``option`` names the command-line options
    it came from (``health``: ``--health-host``/``--health-port``) for one-line errors."""

    def __init__(self, host: str, port: int, page: Page, *, option: str, what: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            timeout = 2  # a slow client cannot stall the supervisor for long

            def do_GET(self) -> None:
                code, body, kind = page(self.path.split("?", 1)[0])
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a probe or a scrape every few seconds would flood the log

        try:
            self.server = HTTPServer((host, port), Handler)
        except socket.gaierror as e:
            raise ConfigurationError(
                f"--{option}-host {host!r} is not an address or host name this machine can use"
                f" ({e.strerror or e})"
            ) from None
        except (OSError, OverflowError, UnicodeError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            hint = _hint(getattr(e, "errno", 0) or 0, option)
            raise ConfigurationError(f"cannot serve {what} on {host}:{port}: {reason} ({hint})") from None
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


class HealthServer(PolledServer):
    def __init__(self, host: str, port: int, *, live: Status, ready: Status) -> None:
        checks = {"/livez": live, "/readyz": ready}

        def page(path: str) -> tuple[int, bytes, str]:
            check = checks.get(path)
            if check is None:
                return 404, json.dumps({"error": "not found", "paths": sorted(checks)}).encode(), JSON
            ok, details = check()
            return (200 if ok else 503), json.dumps({"ok": ok, **details}).encode(), JSON

        super().__init__(host, port, page, option="health", what="health checks")

