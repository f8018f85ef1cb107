"""Who is asking, and may they act: the dashboard's authentication and roles.

The dashboard is closed unless told otherwise. ``auth`` is one of:

- ``None``: no credentials; only loopback clients that came through no proxy are served
  (``conveyor dashboard`` refuses to listen anywhere else without auth);
- a ``str`` or ``TokenAuth``: ``Authorization: Bearer <token>``, or the login form, which sets a
  signed session cookie;
- a ``(user, password)`` tuple or ``BasicAuth``: HTTP basic;
- a callable taking the Starlette request and returning ``"operator"``, ``"viewer"`` or ``None``
  (not signed in), so a host app can plug in its own login.

Two roles: an operator may act (retry, discard, cancel, pause, enqueue); a viewer only looks.
``read_only=True`` makes everyone a viewer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..errors import ConfigurationError

SESSION_COOKIE = "conveyor_session"
SESSION_SECONDS = 12 * 3600
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
PROXY_HEADERS = (b"x-forwarded-for", b"forwarded", b"x-real-ip")


class Role(StrEnum):
    OPERATOR = "operator"
    VIEWER = "viewer"


@dataclass(frozen=True, slots=True)
class Identity:
    """A signed-in caller. ``via`` says how: ``bearer`` (an API client, exempt from CSRF),
    ``cookie``, ``basic``, ``callable`` or ``loopback`` (ambient credentials a browser sends by
    itself, so their state changes need the CSRF token)."""

    actor: str
    role: Role
    via: str

    @property
    def can_act(self) -> bool:
        return self.role is Role.OPERATOR

    @property
    def ambient(self) -> bool:
        return self.via != "bearer"


@dataclass(frozen=True, slots=True)
class TokenAuth:
    token: str
    role: Role = Role.OPERATOR

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or len(self.token) < 8:
            raise ConfigurationError("dashboard token auth: the token must be a string of 8+ characters")


@dataclass(frozen=True, slots=True)
class BasicAuth:
    username: str
    password: str
    role: Role = Role.OPERATOR

    def __post_init__(self) -> None:
        if not self.username or not self.password:
            raise ConfigurationError("dashboard basic auth: username and password must not be empty")


AuthCallable = Callable[[Any], "Role | str | None"]
AuthSpec = None | str | tuple[str, str] | TokenAuth | BasicAuth | AuthCallable


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


class Gate:
    """Turns a request into an ``Identity`` (or None), and signs session cookies and CSRF tokens."""

    def __init__(self, auth: AuthSpec, *, read_only: bool = False, secret: str | None = None) -> None:
        if isinstance(auth, str):
            auth = TokenAuth(auth)
        elif isinstance(auth, tuple):
            if len(auth) != 2 or not all(isinstance(x, str) for x in auth):
                raise ConfigurationError("dashboard auth: a tuple must be (username, password)")
            auth = BasicAuth(*auth)
        elif auth is not None and not isinstance(auth, TokenAuth | BasicAuth) and not callable(auth):
            raise ConfigurationError(
                f"dashboard auth: expected a token, (user, password), TokenAuth, BasicAuth or a"
                f" callable(request), not {type(auth).__name__}"
            )
        self.auth = auth
        self.read_only = read_only
        if secret is None and isinstance(auth, TokenAuth):  # every process serving it agrees
            secret = hashlib.sha256(b"conveyor-dashboard\0" + auth.token.encode()).hexdigest()
        elif secret is None and isinstance(auth, BasicAuth):
            secret = hashlib.sha256(
                f"conveyor-dashboard\0{auth.username}\0{auth.password}".encode()).hexdigest()
        self._key = (secret or secrets.token_hex(32)).encode()

    @property
    def open(self) -> bool:
        """No auth configured: loopback only."""
        return self.auth is None

    @property
    def login_form(self) -> bool:
        return isinstance(self.auth, TokenAuth)

    @property
    def challenge(self) -> str | None:
        """The ``WWW-Authenticate`` value a 401 carries."""
        if isinstance(self.auth, BasicAuth):
            return 'Basic realm="conveyor", charset="UTF-8"'
        if isinstance(self.auth, TokenAuth):
            return 'Bearer realm="conveyor"'
        return None

    # --- identifying a request -------------------------------------------------------------
    def identify(self, request: Any) -> Identity | None:
        found = self._identify(request)
        if found is not None and self.read_only and found.role is not Role.VIEWER:
            return Identity(found.actor, Role.VIEWER, found.via)
        return found

    def _identify(self, request: Any) -> Identity | None:
        auth = self.auth
        if auth is None:
            return Identity("local", Role.OPERATOR, "loopback") if is_loopback(request) else None
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if isinstance(auth, TokenAuth):
            if scheme.lower() == "bearer" and _equal(value.strip(), auth.token):
                return Identity("token", auth.role, "bearer")
            return self.session(request.cookies.get(SESSION_COOKIE, ""))
        if isinstance(auth, BasicAuth):
            if scheme.lower() != "basic":
                return None
            try:
                user, _, password = base64.b64decode(value.strip()).decode().partition(":")
            except ValueError:
                return None
            if _equal(user, auth.username) & _equal(password, auth.password):
                return Identity(user, auth.role, "basic")
            return None
        answer: Any = auth(request)
        if answer is None or answer is False:
            return None
        try:
            role = Role(answer)
        except ValueError:
            raise ConfigurationError(
                f"dashboard auth callable returned {answer!r}; expected 'operator', 'viewer' or None"
            ) from None
        # request.user asserts without AuthenticationMiddleware: read the scope instead
        user = request.scope.get("user")
        actor = getattr(user, "username", None) or getattr(user, "display_name", None) or "user"
        return Identity(str(actor), role, "callable")

    def check_token(self, token: str) -> bool:
        return isinstance(self.auth, TokenAuth) and _equal(token, self.auth.token)

    # --- signed values ---------------------------------------------------------------------
    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def new_session(self, actor: str, role: Role, now: float | None = None) -> str:
        body = base64.urlsafe_b64encode(json.dumps(
            {"a": actor, "r": role.value, "e": int((now or time.time()) + SESSION_SECONDS)}
        ).encode()).decode()
        return f"{body}.{self._sign('session:' + body)}"

    def session(self, cookie: str, now: float | None = None) -> Identity | None:
        body, _, mac = cookie.partition(".")
        if not body or not _equal(mac, self._sign("session:" + body)):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(body))
            if data["e"] < (now or time.time()):
                return None
            return Identity(str(data["a"]), Role(data["r"]), "cookie")
        except (ValueError, KeyError, TypeError):
            return None

    def csrf_token(self, who: Identity) -> str:
        return self._sign(f"csrf:{who.actor}:{who.role}:{who.via}")[:40]

    def csrf_ok(self, who: Identity, token: str) -> bool:
        return bool(token) and _equal(token, self.csrf_token(who))


def is_loopback(request: Any) -> bool:
    """A client on this machine that came through no proxy, asking for a loopback host name
    (a page on another site that rebinds its DNS to 127.0.0.1 still sends its own host)."""
    client = request.scope.get("client")
    if not client or client[0] not in LOOPBACK:
        return False
    headers = dict(request.scope.get("headers") or [])
    if any(h in headers for h in PROXY_HEADERS):
        return False
    host = request.headers.get("host", "")
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return name.strip("[]") in LOOPBACK
