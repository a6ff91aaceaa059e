"""The culler's clock: every "now" and every wait goes through here, in UTC.

Keeping time in one place means the culler never mixes local and UTC times, and tests can move
the clock forward (patch :func:`now` and :func:`sleep`) instead of sleeping through timeouts.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

__all__ = ["isoformat", "now", "parse_time", "sleep"]


def now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


async def sleep(seconds: float) -> None:
    """Wait ``seconds`` (backoff between retries, the pause between passes)."""
    await asyncio.sleep(seconds)


def parse_time(text: str | None) -> datetime | None:
    """Read an ISO 8601 time as the hub writes it (``2024-05-01T10:00:00.123456Z``), in UTC.

    A time without a zone is taken as UTC, as the hub's database stores it.
    """
    if not text:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def isoformat(value: datetime | None) -> str | None:
    """UTC ISO 8601 with a ``Z``, to the second, as the API answers (``2024-05-01T10:00:00Z``)."""
    if value is None:
        return None
    return value.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
