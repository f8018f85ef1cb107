"""The JSON API under ``/api``: what scripts and other languages use, and what the pages'
own buttons call. Every route here is listed in the OpenAPI document (``openapi.py``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .. import views
from ..errors import JobNotFound
from .routes import web_of


async def job_get(request: Request) -> Response:
    client = web_of(request).app.client
    try:
        job_id = int(request.path_params["id"])
        job = client.get(job_id)
    except (ValueError, JobNotFound):
        return JSONResponse({"error": f"no job {request.path_params['id']}"}, 404)
    return JSONResponse(views.job_view(job))


def routes() -> list[BaseRoute]:
    return [
        Route("/api/jobs/{id}", job_get, methods=["GET"]),
    ]
