"""A stand-in for the few JupyterHub API endpoints berth-gate calls, for fast unit tests.

The end-to-end tests use the real JupyterHub; these tests exercise the proxy itself (streams,
websockets, starts and crashes) and only need the hub to say who a token belongs to
(GET /hub/api/user, answered like the hub: name, kind, scopes) and to take activity reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class HubState:
    #: token -> user model as /hub/api/user returns it
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    activity: list[dict[str, Any]] = field(default_factory=list)
    lookups: int = 0


def build(state: HubState, api_token: str) -> web.Application:
    async def user(request: web.Request) -> web.Response:
        state.lookups += 1
        auth = request.headers.get("Authorization", "")
        token = auth.split(" ", 1)[1] if " " in auth else ""
        model = state.tokens.get(token)
        if model is None:
            return web.json_response({"status": 403, "message": "no such token"}, status=403)
        return web.json_response(model)

    async def activity(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"token {api_token}":
            return web.json_response({"status": 403}, status=403)
        state.activity.append(await request.json())
        return web.Response(status=200)

    app = web.Application()
    app.router.add_get("/hub/api/user", user)
    app.router.add_post("/hub/api/users/{name}/activity", activity)
    return app
