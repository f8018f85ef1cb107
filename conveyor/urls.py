"""``redact_url()``: the one way a store URL reaches a log line, an error or the screen."""

from __future__ import annotations

import re

_SECRET_PARAM = re.compile(r"(?i)(\bpassword\s*=\s*)('[^']*'|[^\s&]*)")
_HIDDEN = r"\1***"


def redact_url(url: str) -> str:
    """``url`` with its password hidden: ``postgresql://alice:***@db/x``.

    The password may hold ``/``, ``@``, ``:`` or %-escapes: everything between the user name's
    first ``:`` and the last ``@`` of the authority is hidden. A ``password=`` query parameter,
    or the same key in a libpq ``key=value`` string, is hidden too. A URL with no password comes
    back as it is.
    """
    scheme, sep, rest = url.partition("://")
    if scheme.lower() == "sqlite":  # a file path, never a password
        return url
    if not sep:
        return _SECRET_PARAM.sub(_HIDDEN, url)
    rest, q, query = rest.partition("?")
    userinfo, at, host = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return f"{scheme}{sep}{rest}{q}{_SECRET_PARAM.sub(_HIDDEN, query)}"
