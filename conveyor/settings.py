"""Settings: keyword arguments of ``Conveyor(...)``; ``CONVEYOR_<NAME>`` fills in any not passed."""

from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from typing import Any

from .errors import ConfigurationError

DEFAULT_URL = "sqlite:///conveyor.db"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|k|m|g)?\s*$", re.IGNORECASE)
_SIZES = {"b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3}


def parse_duration(value: Any, name: str = "duration") -> float:
    """Seconds from a number, a timedelta, or text like ``90``, ``1.5s``, ``30m``, ``7d``."""
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ConfigurationError(f"{name}: {value!r} is not a duration (e.g. 30, 45s, 10m, 7d)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_size(value: Any, name: str = "size") -> int:
    """Bytes from a number or text like ``512MB``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ConfigurationError(f"{name}: {value!r} is not a size (e.g. 512MB, 2GB)")
    return int(float(m.group(1)) * _SIZES[(m.group(2) or "b").lower()])


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_URL
    rescue_after: float = 60.0
    shutdown_timeout: float = 25.0
    cancel_grace: float = 10.0  # a running job asked to cancel is stopped this long after
    retention_succeeded: float = 7 * 86400.0
    retention_dead: float = 30 * 86400.0
    poll_interval: float = 1.0  # longest an idle worker waits before looking again
    heartbeat_interval: float = 0.0  # 0: derived from rescue_after
    max_memory: int | None = None
    log_format: str = "text"
    log_level: str = "INFO"
    host_id: str = ""  # how this host appears in the process registry; "" = its hostname

    def __post_init__(self) -> None:
        check_settings(self)

    @property
    def host(self) -> str:
        return self.host_id or socket.gethostname()

    @property
    def heartbeat_every(self) -> float:
        """``heartbeat_interval``, or a quarter of ``rescue_after`` (at most 10 s; not below
        0.2 s unless ``rescue_after`` itself is that short)."""
        if self.heartbeat_interval:
            return self.heartbeat_interval
        return max(min(0.2, self.rescue_after / 2), min(self.rescue_after / 4, 10.0))


_DURATIONS = {
    "rescue_after", "shutdown_timeout", "cancel_grace", "retention_succeeded", "retention_dead",
    "poll_interval", "heartbeat_interval",
}


def check_settings(s: Settings) -> None:
    """Refuse settings no worker can honour; raises ConfigurationError saying which and why."""
    for name in sorted(_DURATIONS):
        value = getattr(s, name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
            raise ConfigurationError(f"{name} must be a number of seconds, not {value!r}")
        if value < 0 and name != "rescue_after":
            raise ConfigurationError(f"{name} must not be negative (got {value:g}s)")
    if not s.rescue_after > 0:
        raise ConfigurationError(
            f"rescue_after must be more than 0 seconds (got {s.rescue_after:g}s): it is how long"
            " a silent worker's jobs wait before they are run again"
        )
    if s.heartbeat_interval and s.heartbeat_interval >= s.rescue_after:
        raise ConfigurationError(
            f"heartbeat_interval ({s.heartbeat_interval:g}s) must be shorter than rescue_after"
            f" ({s.rescue_after:g}s), or every worker would look dead between two heartbeats;"
            " leave it unset to use a quarter of rescue_after"
        )


def _coerce(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _DURATIONS:
        return parse_duration(value, name)
    if name == "max_memory":
        return parse_size(value, name)
    if name == "log_format" and value not in ("text", "json"):
        raise ConfigurationError(f"log_format must be 'text' or 'json', not {value!r}")
    return str(value) if name in ("database_url", "log_level", "host_id") else value


def load_settings(url: str | None, overrides: dict[str, Any], environ: Any = None) -> Settings:
    """Explicit arguments win, then ``CONVEYOR_<NAME>`` variables, then defaults."""
    env = os.environ if environ is None else environ
    known = {f.name for f in fields(Settings)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigurationError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for name in known:
        if name in overrides and overrides[name] is not None:
            values[name] = _coerce(name, overrides[name])
        elif f"CONVEYOR_{name.upper()}" in env:
            values[name] = _coerce(name, env[f"CONVEYOR_{name.upper()}"])
    if url is not None:
        values["database_url"] = url
    return replace(Settings(), **values)
