"""The dashboard's HTML pages, rendered on the server with Jinja2 (autoescaped)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .routes import render, web_of


async def overview(request: Request) -> Response:
    client = web_of(request).app.client
    return render(request, "overview.html", queues=client.queues())


def routes() -> list[BaseRoute]:
    return [
        Route("/", overview, methods=["GET"]),
    ]
