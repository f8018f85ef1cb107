"""Assemble the dashboard: one Starlette app whose routes come from ``pages`` and ``api``.

It reads its root path from each request's scope, so it works at ``/`` under
``conveyor dashboard`` and under any prefix when mounted in a Starlette, FastAPI or Django
project; it needs no lifespan events (mounted apps do not get them): what runs in the
background (the change feed, bulk operations) starts on first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ..app import Conveyor
from ..errors import ConveyorError
from .auth import SESSION_COOKIE, SESSION_SECONDS, Gate, Role
from .security import Wall, error, identity, local_path, nonce, same_origin

HERE = Path(__file__).parent


@dataclass
class Web:
    """What every handler reaches through ``request.app.state.web``."""

    app: Conveyor
    gate: Gate
    enqueue: bool = True
    templates: jinja2.Environment = field(default_factory=lambda: templates())
    extras: dict[str, Any] = field(default_factory=dict)  # lazily started services (live, bulk)


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def web_of(request: Request) -> Web:
    web: Web = request.app.state.web
    return web


def root(request: Request) -> str:
    """The prefix the dashboard is mounted under ('' at the top)."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def local_next(value: str | None, default: str = "/") -> str:
    """A path inside the dashboard to go back to; anything else (another host) becomes default."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    return value


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    web = web_of(request)
    who = request.scope["state"].get("identity")
    html = web.templates.get_template(template).render(
        request=request,
        root=root(request),
        nonce=nonce(request),
        who=who,
        csrf=web.gate.csrf_token(who) if who is not None else "",
        can_act=who is not None and who.can_act,
        **context,
    )
    return HTMLResponse(html, status)


# --- login ---------------------------------------------------------------------------------
async def login_page(request: Request) -> Response:
    gate = web_of(request).gate
    if not gate.login_form:
        return RedirectResponse(f"{root(request)}/", 303)
    return render(request, "login.html", next=local_next(request.query_params.get("next")), failed=False)


async def login_submit(request: Request) -> Response:
    gate = web_of(request).gate
    if not gate.login_form or not same_origin(request):
        return Response("login refused", 403)
    form = await request.form()
    token = form.get("token")
    target = local_next(str(form.get("next") or "/"))
    if not isinstance(token, str) or not gate.check_token(token):
        return render(request, "login.html", status=401, next=target, failed=True)
    auth_role = getattr(gate.auth, "role", Role.OPERATOR)
    response = RedirectResponse(f"{root(request)}{target}", 303)
    response.set_cookie(
        SESSION_COOKIE, gate.new_session("token", auth_role), max_age=SESSION_SECONDS,
        path=f"{root(request)}/", httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


async def logout(request: Request) -> Response:
    who = identity(request)
    gate = web_of(request).gate
    form = await request.form()
    if not same_origin(request) or not gate.csrf_ok(who, str(form.get("csrf") or "")):
        return Response("logout refused", 403)
    response = RedirectResponse(f"{root(request)}/login", 303)
    response.delete_cookie(SESSION_COOKIE, path=f"{root(request)}/")
    return response


def status_of(exc: Exception) -> tuple[int, str]:
    """The status and one-line message a request's error is answered with, in the API and on
    the pages alike: bad input 400, no such job or schedule 404, a state the action does not
    apply to 409, a row this code cannot read 500, the store not answering 503."""
    from ..errors import CorruptRow, InvalidState, JobNotFound, StoreError

    if isinstance(exc, JobNotFound):  # also UnknownSchedule
        return 404, str(exc)
    if isinstance(exc, InvalidState):
        return 409, str(exc)
    if isinstance(exc, CorruptRow):
        return 500, str(exc)
    if isinstance(exc, StoreError):
        return 503, f"the store did not answer: {exc}"
    return 400, str(exc)  # ValueError, TypeError, any other ConveyorError: the request is wrong


async def failed(request: Request, exc: Exception) -> Response:
    """What a page raised, as one line: never a traceback in the browser."""
    status, message = status_of(exc)
    return error(status, message, local_path(request.scope))


async def refused(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 in the dashboard's words: JSON under /api."""
    assert isinstance(exc, HTTPException)
    path = local_path(request.scope)
    message = {404: f"nothing at {path}", 405: f"{request.method} is not allowed on {path}"}.get(
        exc.status_code, str(exc.detail))
    return error(exc.status_code, message, path, dict(exc.headers or {}))


def build(app: Conveyor, gate: Gate, *, enqueue: bool = True) -> Starlette:
    from . import api, live, pages

    routes: list[BaseRoute] = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        *api.routes(),
        *live.routes(),
        *pages.routes(),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    starlette = Starlette(routes=routes, middleware=[Middleware(Wall, gate=gate)],
                          exception_handlers={ConveyorError: failed, ValueError: failed,
                                              HTTPException: refused})
    starlette.state.web = Web(app=app, gate=gate, enqueue=enqueue)
    return starlette
