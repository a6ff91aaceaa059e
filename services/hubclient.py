"""The culler's client for the hub's REST API: paginated reads, stops, retries with backoff.

Transient failures (connection refused or reset, timeouts, HTTP 5xx, 429) are retried with
exponential backoff until ``retry_for`` has passed, then raised as :class:`HubUnavailable`;
any other 4xx is raised at once as :class:`HubRefused`. Every request is counted, so a pass can
report how many calls it made.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

from . import clock

__all__ = ["HubClient", "HubError", "HubRefused", "HubUnavailable", "RetryPolicy"]

log = logging.getLogger("berth.culler")

PAGINATION = "application/jupyterhub-pagination+json"


class HubError(Exception):
    """A hub API call that did not succeed."""


class HubUnavailable(HubError):
    """The hub did not answer, or answered 5xx, for longer than the retry window."""


class HubRefused(HubError):
    """The hub answered with a 4xx that retrying will not change."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"HTTP {code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: first wait ``start``, doubling up to ``cap``."""

    start: float = 0.5
    cap: float = 15.0
    #: give up after this many seconds of trying one request
    retry_for: float = 60.0

    def delays(self) -> list[float]:
        delays: list[float] = []
        total = 0.0
        delay = self.start
        while total + delay <= self.retry_for:
            delays.append(delay)
            total += delay
            delay = min(delay * 2, self.cap)
        return delays


@dataclass
class CallCounter:
    """Requests sent to the hub, by method."""

    by_method: dict[str, int] = field(default_factory=dict)

    def add(self, method: str) -> None:
        self.by_method[method] = self.by_method.get(method, 0) + 1

    @property
    def total(self) -> int:
        return sum(self.by_method.values())


def _error_message(response: HTTPResponse | None) -> str:
    if response is None or not response.body:
        return ""
    try:
        body = json.loads(response.body)
    except ValueError:
        return response.body[:200].decode("utf-8", "replace")
    if isinstance(body, dict):
        return str(body.get("message", body))
    return str(body)


class HubClient:
    """Talks to ``api_url`` (``http://127.0.0.1:8081/hub/api``) with ``token``."""

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        concurrency: int = 10,
        request_timeout: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.request_timeout = request_timeout
        self.retry = retry or RetryPolicy()
        self.calls = CallCounter()
        self._limit = asyncio.Semaphore(concurrency)
        self._http = AsyncHTTPClient(force_instance=True, max_clients=concurrency)

    def close(self) -> None:
        self._http.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> HTTPResponse:
        """One API call with retries. ``path`` is relative to the API URL."""
        url = self.api_url + path
        if params:
            url += "?" + urlencode(params)
        all_headers = {"Authorization": f"token {self.token}", **(headers or {})}
        payload = None if body is None else json.dumps(body)
        delays = self.retry.delays()
        attempt = 0
        while True:
            request = HTTPRequest(
                url,
                method=method,
                headers=all_headers,
                body=payload,
                allow_nonstandard_methods=True,
                connect_timeout=self.request_timeout,
                request_timeout=self.request_timeout,
            )
            self.calls.add(method)
            problem: str
            try:
                async with self._limit:
                    return await self._http.fetch(request)
            except HTTPClientError as e:
                if e.code != 599 and e.code < 500 and e.code != 429:
                    raise HubRefused(e.code, _error_message(e.response)) from None
                problem = f"HTTP {e.code} {_error_message(e.response)}".strip()
            except (TimeoutError, OSError) as e:
                problem = f"{type(e).__name__}: {e}"
            if attempt >= len(delays):
                raise HubUnavailable(
                    f"{method} {path}: the hub did not answer after {attempt + 1} tries over"
                    f" {sum(delays):g}s; last error: {problem}"
                )
            delay = delays[attempt] * random.uniform(0.8, 1.0)  # noqa: S311 (jitter, not crypto)
            log.warning("%s %s failed (%s); retrying in %.1fs", method, path, problem, delay)
            attempt += 1
            await clock.sleep(delay)

    async def get_json(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        response = await self.request("GET", path, params=params)
        return json.loads(response.body)

    async def ready_users(self, page_size: int = 200) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of users that have at least one ready server.

        The first page says how many users there are; the remaining pages are then fetched
        concurrently (within the client's concurrency limit) and yielded as they arrive.
        """
        params = {"state": "ready", "limit": str(page_size), "offset": "0"}
        first = await self._page(params)
        yield first["items"]
        pagination = first.get("_pagination") or {}
        total = int(pagination.get("total") or 0)
        limit = int(pagination.get("limit") or page_size)
        offsets = range(limit, total, limit)
        if not offsets:
            return
        pending = [
            asyncio.ensure_future(
                self._page({**params, "offset": str(offset), "limit": str(limit)})
            )
            for offset in offsets
        ]
        try:
            for future in asyncio.as_completed(pending):
                page = await future
                yield page["items"]
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _page(self, params: Mapping[str, str]) -> dict[str, Any]:
        response = await self.request(
            "GET", "/users", params=params, headers={"Accept": PAGINATION}
        )
        body = json.loads(response.body)
        if isinstance(body, list):  # a hub that ignores the pagination header
            return {"items": body, "_pagination": {"total": len(body)}}
        return dict(body)

    async def user(self, name: str) -> dict[str, Any] | None:
        """One user's model (with servers and groups), or None if there is no such user."""
        try:
            model = await self.get_json(f"/users/{quote(name, safe='')}")
        except HubRefused as e:
            if e.code == 404:
                return None
            raise
        return dict(model)

    async def stop_server(self, user: str, server: str) -> int:
        """Stop one server; the hub's status: 204 stopped, 202 stopping, 404 no such server."""
        if server:
            path = f"/users/{quote(user, safe='')}/servers/{quote(server, safe='')}"
        else:
            path = f"/users/{quote(user, safe='')}/server"
        try:
            response = await self.request("DELETE", path)
        except HubRefused as e:
            if e.code == 404:
                return 404
            raise
        return response.code
