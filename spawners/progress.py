"""The progress of one start, as the hub's progress API (and ``berth launch --wait``) shows it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

__all__ = ["ProgressLog"]


class ProgressLog:
    """Events of the current start, in order; followers see each once, as it happens."""

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self.active = False

    def begin(self) -> None:
        self._events = []
        self.active = True
        self._changed.set()

    def emit(self, message: str, progress: int) -> dict[str, Any]:
        event = {"progress": progress, "message": message}
        self._events.append(event)
        self._changed.set()
        return event

    def end(self) -> None:
        self.active = False
        self._changed.set()

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self._events)

    async def follow(self) -> AsyncIterator[dict[str, Any]]:
        """Every event of this start so far, then each new one until the start ends."""
        sent = 0
        while True:
            while sent < len(self._events):
                yield self._events[sent]
                sent += 1
            if not self.active:
                return
            self._changed.clear()
            await self._changed.wait()
