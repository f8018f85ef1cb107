"""The dashboard's outer wall: authentication on every request, security headers with a fresh
CSP nonce, and the checks every state-changing request passes (``action``).

- Nobody unidentified sees anything but the login page and static files: pages redirect to the
  login form (token auth) or answer 401 with a challenge (basic auth), ``/api`` and
  ``/metrics`` answer 401 JSON, and without auth configured a non-loopback client gets 403.
- Every response carries a strict, nonce-based Content-Security-Policy (no inline script or
  style), ``X-Frame-Options: DENY``, ``nosniff`` and ``Referrer-Policy: same-origin``.
- A state change is a POST by an operator; a browser's (cookie, basic, callable or loopback
  credentials, which it sends by itself) must come from this origin (``Sec-Fetch-Site`` and
  ``Origin``) and carry the CSRF token. Bearer-token API clients need no CSRF token, but a
  request a browser marks as sent by another site is refused whatever its credentials.
"""

from __future__ import annotations

import functools
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import Gate, Identity

PUBLIC_PATHS = ("/login", "/static/")
SAME_SITE = frozenset({"same-origin", "none"})
Handler = Callable[[Request], Awaitable[Response]]


def csp(nonce: str) -> str:
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


def local_path(scope: Scope) -> str:
    """The path inside the dashboard, whatever prefix it is mounted under."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    return path or "/"


def wants_json(path: str) -> bool:
    return path.startswith("/api") or path == "/metrics"


def error(status: int, message: str, path: str, headers: dict[str, str] | None = None) -> Response:
    if wants_json(path):
        return JSONResponse({"error": message}, status, headers=headers)
    return PlainTextResponse(message, status, headers=headers)


class Wall:
    """ASGI middleware: identifies every HTTP request (``scope["state"]["identity"]``), turns
    away the unidentified, and adds the security headers with a per-request nonce."""

    def __init__(self, app: ASGIApp, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(18)
        state = scope.setdefault("state", {})
        state["nonce"] = nonce

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for name, value in (
                    (b"content-security-policy", csp(nonce).encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"cache-control", b"no-store"),
                ):
                    if name not in names:
                        headers.append((name, value))
                message = {**message, "headers": headers}
            await send(message)

        path = local_path(scope)
        request = Request(scope)
        who = self.gate.identify(request)
        state["identity"] = who
        if who is None and not path.startswith(PUBLIC_PATHS):
            response = self.turn_away(request, path)
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def turn_away(self, request: Request, path: str) -> Response:
        gate = self.gate
        if gate.open:
            return error(403, "this dashboard has no auth configured, so it answers loopback clients"
                         " only; configure auth (see conveyor.web.dashboard)", path)
        if gate.login_form and not wants_json(path) and request.method == "GET":
            back = path + (f"?{request.url.query}" if request.url.query else "")
            root = request.scope.get("root_path", "")
            return RedirectResponse(f"{root}/login?next={quote(back)}", 303)
        challenge = gate.challenge
        return error(401, "authentication required", path,
                     {"www-authenticate": challenge} if challenge else None)


def identity(request: Request) -> Identity:
    who: Identity | None = request.scope["state"].get("identity")
    assert who is not None, "the Wall lets no unidentified request reach a handler"
    return who


def nonce(request: Request) -> str:
    return str(request.scope["state"]["nonce"])


def same_origin(request: Request) -> bool:
    """False when a browser says this request came from another site."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in SAME_SITE:
        return False
    origin = request.headers.get("origin")
    if origin is not None:
        if origin == "null":
            return False
        return urlsplit(origin).netloc == request.headers.get("host", "")
    return True


def from_browser(request: Request, who: Identity) -> bool:
    return who.via == "cookie" or (
        who.ambient and ("origin" in request.headers or "sec-fetch-site" in request.headers)
    )


async def csrf_of(request: Request) -> str:
    token = request.headers.get("x-csrf-token")
    if token:
        return token
    if request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get("csrf")
        return value if isinstance(value, str) else ""
    return ""


def action(handler: Handler) -> Handler:
    """Wrap a state-changing handler: POST only, operators only, same origin and the CSRF token
    for browsers. Refusals are 403 with one line saying why."""

    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        path = local_path(request.scope)
        who = identity(request)
        if not who.can_act:
            return error(403, "read-only: this dashboard does not allow actions for you", path)
        if not same_origin(request):  # a browser says another site sent it: whatever credentials
            return error(403, "cross-site request refused", path)
        if from_browser(request, who):
            gate: Gate = request.app.state.web.gate
            if not gate.csrf_ok(who, await csrf_of(request)):
                return error(403, "missing or wrong CSRF token; reload the page and try again (several"
                             " processes serving one dashboard need the same dashboard(secret=...))", path)
        return await handler(request)

    guarded.is_action = True  # type: ignore[attr-defined]
    return guarded


async def body_of(request: Request) -> dict[str, Any]:
    """A POST's fields, from JSON or a form; {} for an empty body. ValueError on bad JSON."""
    kind = request.headers.get("content-type", "")
    if kind.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        return {k: v for k, v in form.items() if k != "csrf"}
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise ValueError(f"the request body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError("the request body must be a JSON object")
    return data
