"""Durations and memory sizes as admins write them in ``berth.yaml``.

Durations: ``90s``, ``30m``, ``8h``, ``1d``, ``1h30m``, or a bare number of seconds.
Memory: ``512M``, ``4G``, ``16Gi``, ``1T``, or a bare number of bytes. ``K/M/G/T`` and
``Ki/Mi/Gi/Ti`` are both powers of 1024, as Slurm reads them (``--mem=4G`` is 4096 MiB).
"""

from __future__ import annotations

import re
from datetime import timedelta

__all__ = [
    "format_duration",
    "format_memory",
    "parse_duration",
    "parse_memory",
]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_DURATION_WHOLE = re.compile(r"^(?:\d+(?:\.\d+)?[dhms])+$")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}

_MEMORY = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?$", re.IGNORECASE)
_MEMORY_FACTOR = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_duration(value: object) -> timedelta:
    """Read a duration; raise ValueError with what is allowed."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30m, 8h or 1d")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return timedelta(seconds=value)
    if isinstance(value, str):
        text = value.strip().lower().replace(" ", "")
        if text.isdigit():
            return timedelta(seconds=int(text))
        if _DURATION_WHOLE.match(text):
            seconds = sum(
                float(number) * _UNIT_SECONDS[unit] for number, unit in _DURATION_PART.findall(text)
            )
            return timedelta(seconds=seconds)
    raise ValueError("expected a duration such as 90s, 30m, 8h, 1d or 1h30m")


def parse_memory(value: object) -> int:
    """Read a memory size in bytes; raise ValueError with what is allowed."""
    if isinstance(value, bool):
        raise ValueError("expected a memory size such as 512M, 4G or 16Gi")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a memory size cannot be negative")
        return value
    if isinstance(value, str):
        match = _MEMORY.match(value.strip())
        if match:
            number, unit = match.groups()
            letter = (unit or "").upper()[:1]
            factor = _MEMORY_FACTOR["B" if letter == "B" else letter]
            return int(float(number) * factor)
    raise ValueError("expected a memory size such as 512M, 4G or 16Gi")


def format_duration(value: timedelta) -> str:
    """``timedelta(hours=1, minutes=30)`` -> ``1h30m``; whole units only, smallest last."""
    seconds = int(value.total_seconds())
    if seconds == 0:
        return "0s"
    parts = []
    for unit in ("d", "h", "m", "s"):
        count, seconds = divmod(seconds, _UNIT_SECONDS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def format_memory(size: int) -> str:
    """Bytes -> the largest binary unit that divides evenly (``4G``, ``1536M``)."""
    for unit in ("T", "G", "M", "K"):
        factor = _MEMORY_FACTOR[unit]
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return f"{size}B"
