"""``conveyor dashboard``: serve the web dashboard, its JSON API and ``/metrics`` with uvicorn.

Closed by default: with ``CONVEYOR_DASHBOARD_TOKEN`` set it requires that token (``Authorization:
Bearer``, or the login form); without it, it listens on loopback only and refuses any other
address with a one-line error.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import signal
import socket
from typing import Any, NoReturn

import click

from .shell import BAD_INPUT, Failure, cli, command, state

TOKEN_ENV = "CONVEYOR_DASHBOARD_TOKEN"
_HINTS = {
    errno.EADDRINUSE: "another process is using that port; pick another --port",
    errno.EADDRNOTAVAIL: "no network interface of this machine has that address",
    errno.EACCES: "ports below 1024 need privileges; pick a higher --port",
}


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve anywhere but loopback without auth."""
    if token is None and not is_loopback(host):
        raise Failure(
            f"refusing to serve the dashboard on {host} without auth: set {TOKEN_ENV} to a long"
            f" random secret (e.g. export {TOKEN_ENV}=$(openssl rand -hex 32)) or use --host 127.0.0.1",
            BAD_INPUT,
        )


def listen(host: str, port: int) -> socket.socket:
    """The bound listening socket, or a one-line error saying why not."""
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise Failure(f"--host {host!r} is not an address this machine can use ({e})", BAD_INPUT) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        sock.close()
        hint = _HINTS.get(e.errno or 0, "check --host and --port")
        raise Failure(f"cannot serve the dashboard on {host}:{port}: {e.strerror or e} ({hint})",
                      BAD_INPUT) from None
    sock.set_inheritable(True)
    return sock


def shown_url(host: str, port: int) -> str:
    name = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{name}:{port}/"


@command(cli, "dashboard")
@click.option("--host", default="127.0.0.1", show_default=True,
              help=f"Address to listen on (other than loopback only with {TOKEN_ENV} set).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--read-only", is_flag=True, help="Nobody may act: look only (the viewer role).")
@click.option("--no-enqueue", is_flag=True, help="Refuse enqueue-by-name through the API.")
def dashboard_command(host: str, port: int, read_only: bool, no_enqueue: bool) -> NoReturn:
    """Serve the web dashboard, its JSON API and /metrics (env CONVEYOR_DASHBOARD_TOKEN: auth)."""
    from ..web import dashboard, missing_extra

    problem = missing_extra()
    if problem is not None:
        raise Failure(problem, BAD_INPUT)
    try:
        import uvicorn
    except ImportError:
        raise Failure("the dashboard needs its extra: pip install 'conveyor[dashboard]'"
                      " (uvicorn is not installed)", BAD_INPUT) from None
    token = os.environ.get(TOKEN_ENV) or None
    check_exposure(host, token)
    app = state().app()
    app.check_schema()  # a store without the schema says so now, not on the first page
    asgi = dashboard(app, auth=token, read_only=read_only, enqueue=not no_enqueue)
    sock = listen(host, port)
    bound = sock.getsockname()[1]
    auth = "token auth" if token else "no auth, loopback only"
    mode = ", read-only" if read_only else ""
    click.echo(f"conveyor dashboard at {shown_url(host, bound)} ({auth}{mode}); Ctrl-C stops it",
               err=True)
    server = uvicorn.Server(uvicorn.Config(
        asgi, log_level="warning", proxy_headers=False, server_header=False, lifespan="off",
        access_log=False,
    ))
    # uvicorn stops on SIGINT / SIGTERM, then raises the signal again for the handler that was
    # there before: a quiet one, so a stop asked for is a clean exit
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.get_current_context().exit(0)


def _stopped(signum: int, frame: Any) -> None:
    pass


def serve_metrics(app: Any, host: str, port: int) -> Any:
    """``conveyor worker --metrics-port``: the supervisor's polled /metrics server."""
    from ..web.metrics import MetricsServer

    return MetricsServer(app, host, port)
