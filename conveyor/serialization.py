"""JSON with tagged types: the only place that encodes and decodes arguments and results.

Plain JSON values pass through unchanged. ``datetime``, ``date``, ``UUID`` and ``Decimal`` are
written as ``{"$type": "<tag>", "value": "<text>"}``; a user dict that itself has a ``"$type"``
key is wrapped as ``{"$type": "dict", "value": {...}}`` so it round-trips. Tuples come back as
lists. Anything else (objects, sets, bytes, NaN) is refused with ``ArgumentEncodingError`` — a
``TypeError`` — at the moment of encoding, never later in a worker. Nothing is ever pickled.

Limits, so that whatever is stored can be read back by every worker and both stores:

- nesting: at most ``MAX_DEPTH`` (500) levels of lists and objects in one value (tag wrappers
  count as a level); a value that contains itself is refused the same way;
- integers: 64-bit signed, ``INT_MIN`` (-2**63) to ``INT_MAX`` (2**63 - 1);
- text: valid Unicode only, so a lone surrogate (``"\\ud800"``) in a string or a key is refused.

The walk that applies these rules says nothing about where a problem is; only when it refuses
does a second, slower walk find the place (``args[0].k[1]``) for the message.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from .errors import ArgumentEncodingError

TAG = "$type"
MAX_DEPTH = 500
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
_SHALLOW = 100  # below this depth, walks may use comprehensions (two stack frames a level)
_TYPES = "job arguments and results must be JSON values (or datetime, date, UUID, Decimal)"


class _Refused(Exception):
    """Raised by the fast walk; ``_explain`` then says what and where."""


def _encode(value: Any, depth: int) -> Any:
    """The value as plain JSON types; ``depth`` is how many containers already enclose it."""
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is int:
        if INT_MIN <= value <= INT_MAX:
            return value
        raise _Refused
    if t is float:
        if math.isfinite(value):
            return value
        raise _Refused
    if t is list or t is tuple:
        if depth >= MAX_DEPTH:
            raise _Refused
        if depth < _SHALLOW:
            return [_encode(v, depth + 1) for v in value]
        deeper = []  # a comprehension costs a second frame a level: deep values loop instead
        for v in value:
            deeper.append(_encode(v, depth + 1))
        return deeper
    if t is dict:
        wrapped = TAG in value
        inner = depth + 2 if wrapped else depth + 1
        if inner > MAX_DEPTH:
            raise _Refused
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _Refused
            out[k] = _encode(v, inner)
        return {TAG: "dict", "value": out} if wrapped else out
    return _encode_other(value, depth)


def _encode_other(value: Any, depth: int) -> Any:
    """Subclasses of the plain types, and the tagged types."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return _encode(int(value), depth)
    if isinstance(value, float):
        return _encode(float(value), depth)
    if isinstance(value, (list, tuple)):
        return _encode(list(value), depth)
    if isinstance(value, dict):
        return _encode(dict(value), depth)
    if depth >= MAX_DEPTH:
        raise _Refused
    if isinstance(value, datetime):
        return {TAG: "datetime", "value": value.isoformat()}
    if isinstance(value, date):
        return {TAG: "date", "value": value.isoformat()}
    if isinstance(value, UUID):
        return {TAG: "uuid", "value": str(value)}
    if isinstance(value, Decimal):
        return {TAG: "decimal", "value": str(value)}
    raise _Refused


def _bad_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _explain(value: Any, path: str, depth: int = 0) -> str | None:
    """Why ``value`` (at ``path``, inside ``depth`` containers) cannot be encoded, or None if
    it can: the rules of ``_encode``, plus valid Unicode, walked with the path of every value."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        if _bad_text(value):
            return (f"cannot encode str at {_place(path)}: it holds a lone surrogate, which is"
                    " not valid Unicode (decode bytes with errors='replace', or drop it)")
        return None
    if isinstance(value, int):
        if INT_MIN <= value <= INT_MAX:
            return None
        return (f"cannot encode int at {_place(path)}: {_digits(value)} is beyond 64 bits"
                " (integers must be from -2**63 to 2**63-1; pass bigger ones as str or Decimal)")
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return f"cannot encode {value!r} at {_place(path)}: not a finite number"
    deep = (f"cannot encode {type(value).__name__} at {_place(path)}: nested deeper than"
            f" {MAX_DEPTH} levels (or it contains itself)")
    if isinstance(value, (list, tuple)):
        if depth >= MAX_DEPTH:
            return deep
        for i, v in enumerate(value):
            found = _explain(v, f"{path}[{i}]", depth + 1)
            if found:
                return found
        return None
    if isinstance(value, dict):
        inner = depth + 2 if TAG in value else depth + 1
        if inner > MAX_DEPTH:
            return deep
        for k, v in value.items():
            if not isinstance(k, str):
                return (f"cannot encode dict key {_short(k)} at {_place(path)}: JSON object keys"
                        " must be str")
            if _bad_text(k):
                return (f"cannot encode dict key {_short(k)} at {_place(path)}: it holds a lone"
                        " surrogate, which is not valid Unicode")
            found = _explain(v, f"{path}.{k}", inner)
            if found:
                return found
        return None
    if isinstance(value, (datetime, date, UUID, Decimal)):
        return deep if depth >= MAX_DEPTH else None
    return f"cannot encode {type(value).__name__} at {_place(path)}: {_TYPES}"


def _digits(value: int) -> str:
    return f"an integer of {value.bit_length()} bits" if value.bit_length() > 200 else str(value)


def _place(path: str) -> str:
    """A place 500 levels down is written ``args[0][0]...[0][0]``."""
    return path if len(path) <= 100 else f"{path[:40]}...{path[-40:]}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _refuse(value: Any, path: str, depth: int) -> ArgumentEncodingError:
    try:
        reason = _explain(value, path, depth)
    except RecursionError:  # called with the stack already deep: say what is most likely
        reason = None
    return ArgumentEncodingError(
        reason or f"cannot encode the value at {path}: nested deeper than {MAX_DEPTH} levels"
    )


def _dumps(value: Any, path: str, depth: int) -> str:
    try:
        text = json.dumps(_encode(value, depth), separators=(",", ":"), ensure_ascii=False)
    except (_Refused, RecursionError, ValueError):
        raise _refuse(value, path, depth) from None
    if not text.isascii() and _bad_text(text):
        raise _refuse(value, path, depth)
    return text


def dumps(value: Any, *, path: str = "value") -> str:
    """Encode a value; raises ArgumentEncodingError (a TypeError) for what JSON cannot hold,
    naming the place (``path``, e.g. ``result``) and the reason."""
    if value is None:  # what most jobs return
        return "null"
    t = type(value)
    if t is int and -9223372036854775808 <= value <= 9223372036854775807:
        return str(value)  # what json.dumps writes, without its set-up
    if t is str and value.isascii():
        return json.dumps(value)
    return _dumps(value, path, 0)


def _decode(value: Any, depth: int = 0) -> Any:
    if isinstance(value, list):
        if depth < _SHALLOW:
            return [_decode(v, depth + 1) for v in value]
        deeper = []
        for v in value:
            deeper.append(_decode(v, depth + 1))
        return deeper
    if isinstance(value, dict):
        tag = value.get(TAG)
        if tag is not None and len(value) == 2 and "value" in value:
            raw = value["value"]
            if tag == "datetime":
                return datetime.fromisoformat(raw)
            if tag == "date":
                return date.fromisoformat(raw)
            if tag == "uuid":
                return UUID(raw)
            if tag == "decimal":
                return Decimal(raw)
            if tag == "dict":
                value = raw
        out = {}
        for k, v in value.items():
            out[k] = _decode(v, depth + 1)
        return out
    return value


def loads(text: str | None) -> Any:
    if text is None:
        return None
    if TAG not in text:  # no tagged value anywhere: plain JSON, nothing to walk
        return json.loads(text)
    return _decode(json.loads(text))


def _is_flat_plain(values: Any) -> bool:
    """Only str, bool, None and 64-bit ints: JSON as they are."""
    for v in values:
        t = type(v)
        if t is int:
            if not INT_MIN <= v <= INT_MAX:
                return False
        elif t is not str and t is not bool and v is not None:
            return False
    return True


def encode_args(args: tuple[Any, ...] | list[Any]) -> str:
    """The positional arguments as a JSON array; each argument may nest MAX_DEPTH levels."""
    for a in args:  # the commonest case, ids: no encoder needed
        if type(a) is not int or not -9223372036854775808 <= a <= 9223372036854775807:
            break
    else:
        return "[" + ",".join(map(str, args)) + "]"
    if _is_flat_plain(args):  # ids and strings: nothing to walk
        text = json.dumps(list(args), separators=(",", ":"), ensure_ascii=False)
        if text.isascii() or not _bad_text(text):
            return text
    return _dumps(list(args), "args", -1)


def encode_kwargs(kwargs: dict[str, Any]) -> str:
    """The keyword arguments as a JSON object; each value may nest MAX_DEPTH levels."""
    if not kwargs:
        return "{}"
    return _dumps(kwargs, "kwargs", -1)
