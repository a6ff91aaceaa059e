"""Activity that is true: the hub hears about a session only when someone used it.

The server calls :meth:`ActivityReporter.touch` on every request and every chunk of websocket
traffic (a float store). :meth:`ActivityReporter.run` wakes every ``interval`` seconds and POSTs
the time of the latest traffic to ``JUPYTERHUB_ACTIVITY_URL``, in the same form
jupyterhub-singleuser uses, but only if there was traffic since the last report. A quiet session
sends nothing, so the hub's ``last_activity`` stays where it was and the culler can end it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiohttp

__all__ = ["ActivityReporter"]

log = logging.getLogger("berth.gate")


class ActivityReporter:
    def __init__(
        self,
        url: str,
        api_token: str,
        server_name: str,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.api_token = api_token
        self.server_name = server_name
        self.interval = interval
        self.clock = clock
        #: wall-clock time of the latest traffic; None when nothing happened since the last report
        self.pending: float | None = None
        self.reports = 0

    def touch(self) -> None:
        self.pending = self.clock()

    def _document(self, when: float) -> bytes:
        stamp = datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z")
        document: dict[str, object] = {"last_activity": stamp}
        document["servers"] = {self.server_name: {"last_activity": stamp}}
        return json.dumps(document).encode()

    async def report(self, session: aiohttp.ClientSession) -> bool:
        """POST the latest activity if there was any since the last report; True if sent."""
        when = self.pending
        if when is None or not self.url:
            return False
        self.pending = None
        try:
            async with session.post(
                self.url,
                data=self._document(when),
                headers={
                    "Authorization": f"token {self.api_token}",
                    "Content-Type": "application/json",
                },
                timeout=aiohttp.ClientTimeout(total=30),
            ) as response:
                if response.status >= 400:
                    text = await response.text()
                    log.warning("The hub refused the activity report: %s %s", response.status, text)
                    return False
        except (TimeoutError, aiohttp.ClientError) as e:
            log.warning("Could not report activity to %s: %s", self.url, e)
            # keep the activity so the next round reports it
            if self.pending is None:
                self.pending = when
            return False
        self.reports += 1
        return True

    async def run(self) -> None:
        """Report every ``interval`` seconds while there is traffic; forever (cancel to stop)."""
        if not self.url:
            log.info("No $JUPYTERHUB_ACTIVITY_URL: activity is not reported")
            return
        async with aiohttp.ClientSession() as session:
            while True:
                await asyncio.sleep(self.interval)
                await self.report(session)
