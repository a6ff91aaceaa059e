"""Berth's own endpoints inside the hub (under ``/hub/api/berth/``).

They need the spawner objects, which only the hub process holds, so they are hub handlers
(registered by :func:`~berth.hub_config.configure` through ``JupyterHub.extra_handlers``), each
guarded by JupyterHub's own scopes.
"""

from __future__ import annotations

from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import needs_scope
from tornado import web

__all__ = ["SessionLogsHandler", "handlers"]

_MAX_LINES = 10_000


class SessionLogsHandler(APIHandler):
    """``GET /hub/api/berth/users/<user>/sessions/<session>/logs?lines=N``: the session's own
    output (the process's, the job's or the pod's), last N lines (default 200).

    Needs the ``servers`` scope on that server: its owner and admins have it.
    """

    @needs_scope("servers")
    async def get(self, user_name: str, server_name: str) -> None:
        text = self.get_argument("lines", "200")
        if not text.isdigit() or not 1 <= int(text) <= _MAX_LINES:
            raise web.HTTPError(400, f"lines must be a whole number from 1 to {_MAX_LINES}")
        user = self.find_user(user_name)
        if user is None or server_name not in user.orm_spawners:
            raise web.HTTPError(404, f"{user_name} has no session named {server_name!r}")
        spawner: Any = user.get_spawner(server_name)
        reader = getattr(spawner, "session_logs", None)
        lines = await reader(int(text)) if reader is not None else None
        if lines is None:
            raise web.HTTPError(404, f"no output has been kept for {user_name}/{server_name}")
        self.write({"user": user_name, "session": server_name, "lines": lines})


def handlers() -> list[tuple[str, type[APIHandler]]]:
    """The hub handlers configure() registers; patterns are relative to ``/hub``."""
    session = r"/api/berth/users/(?P<user_name>[^/]+)/sessions/(?P<server_name>[^/]+)"
    return [(session + "/logs", SessionLogsHandler)]
