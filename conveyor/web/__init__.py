"""The web dashboard, its JSON API and ``/metrics``, as one ASGI app.

    from conveyor.web import dashboard

    asgi = dashboard(app, auth="a-long-random-token")        # Bearer token or the login form
    asgi = dashboard(app, auth=("admin", "a-password"))      # HTTP basic
    asgi = dashboard(app, auth=lambda request: "viewer")     # your own login decides the role
    asgi = dashboard(app, auth=..., read_only=True)          # nobody may act

Mount it in Starlette or FastAPI with ``Mount("/jobs", asgi)``, or serve it with
``conveyor dashboard``. Needs ``pip install 'conveyor[dashboard]'``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .auth import AuthSpec, BasicAuth, Role, TokenAuth

if TYPE_CHECKING:
    from ..app import Conveyor

__all__ = ["BasicAuth", "Role", "TokenAuth", "dashboard", "missing_extra"]

EXTRA_HINT = "the dashboard needs its extra: pip install 'conveyor[dashboard]'"


def missing_extra() -> str | None:
    """One line saying what to install, or None when the dashboard's packages are there."""
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
    except ImportError as e:
        return f"{EXTRA_HINT} ({e.name} is not installed)"
    return None


def dashboard(
    app: Conveyor,
    *,
    auth: AuthSpec = None,
    read_only: bool = False,
    enqueue: bool = True,
    secret: str | None = None,
) -> Any:
    """The dashboard of ``app`` as an ASGI app.

    ``auth``: None (loopback clients only), a token, ``(user, password)``, ``TokenAuth``,
    ``BasicAuth`` or a callable(request) returning "operator", "viewer" or None.
    ``read_only``: everyone is a viewer. ``enqueue``: allow enqueue-by-name through the API
    (operators only). ``secret``: signs session cookies and CSRF tokens; give the same one to
    every process serving the dashboard (derived from the token with token auth, random
    otherwise)."""
    problem = missing_extra()
    if problem is not None:
        raise ConfigurationError(problem)
    from .auth import Gate
    from .routes import build

    return build(app, Gate(auth, read_only=read_only, secret=secret), enqueue=enqueue)
