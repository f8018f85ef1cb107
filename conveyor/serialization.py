"""JSON with tagged types: the only place that encodes and decodes arguments and results.

Plain JSON values pass through unchanged. ``datetime``, ``date``, ``UUID`` and ``Decimal`` are
written as ``{"$type": "<tag>", "value": "<text>"}``; a user dict that itself has a ``"$type"``
key is wrapped as ``{"$type": "dict", "value": {...}}`` so it round-trips. Tuples come back as
lists. Anything else (objects, sets, bytes, NaN) is refused with ``ArgumentEncodingError`` — a
``TypeError`` — at the moment of encoding, never later in a worker. Nothing is ever pickled.
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
_PLAIN = (str, int, bool, type(None))


def _encode(value: Any, path: str) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ArgumentEncodingError(f"cannot encode {value!r} at {path}: not a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ArgumentEncodingError(
                    f"cannot encode dict key {k!r} at {path}: JSON object keys must be str"
                )
            out[k] = _encode(v, f"{path}.{k}")
        return {TAG: "dict", "value": out} if TAG in out else out
    if isinstance(value, datetime):
        return {TAG: "datetime", "value": value.isoformat()}
    if isinstance(value, date):
        return {TAG: "date", "value": value.isoformat()}
    if isinstance(value, UUID):
        return {TAG: "uuid", "value": str(value)}
    if isinstance(value, Decimal):
        return {TAG: "decimal", "value": str(value)}
    raise ArgumentEncodingError(
        f"cannot encode {type(value).__name__} at {path}: job arguments and results must be "
        "JSON values (or datetime, date, UUID, Decimal)"
    )


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
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
                return {k: _decode(v) for k, v in raw.items()}
        return {k: _decode(v) for k, v in value.items()}
    return value


def _is_flat_plain(values: Any) -> bool:
    return all(type(v) in (int, str, bool) or v is None for v in values)


def dumps(value: Any, *, path: str = "value") -> str:
    """Encode a value; raises ArgumentEncodingError (a TypeError) for what JSON cannot hold."""
    if value is None:  # what most jobs return
        return "null"
    return json.dumps(_encode(value, path), separators=(",", ":"), ensure_ascii=False)


def loads(text: str | None) -> Any:
    if text is None:
        return None
    if TAG not in text:  # no tagged value anywhere: plain JSON, nothing to walk
        return json.loads(text)
    return _decode(json.loads(text))


def encode_args(args: tuple[Any, ...] | list[Any]) -> str:
    if all(type(a) is int for a in args):  # the commonest case, ids: no encoder needed
        return "[" + ",".join(map(str, args)) + "]"
    if _is_flat_plain(args):  # ids and strings
        return json.dumps(list(args), separators=(",", ":"), ensure_ascii=False)
    return dumps(list(args), path="args")


def encode_kwargs(kwargs: dict[str, Any]) -> str:
    if not kwargs:
        return "{}"
    return dumps(kwargs, path="kwargs")
