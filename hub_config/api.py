"""Berth's own endpoints inside the hub (under ``/hub/api/berth/``).

They need the spawner objects, which only the hub process holds, so they are hub handlers
(registered by :func:`~berth.hub_config.configure` through ``JupyterHub.extra_handlers``), each
guarded by JupyterHub's own scopes.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from jupyterhub.apihandlers.base import APIHandler
from jupyterhub.scopes import needs_scope
from tornado import web

from .catalog_json import catalog_document
from .pages import CULLER_SERVICE

__all__ = ["CULLER_SERVICE", "CatalogHandler", "OpenAPIHandler", "SessionLogsHandler", "handlers"]

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


class CatalogHandler(APIHandler):
    """``GET /hub/api/berth/catalog[?user=NAME]``: the service types, profiles, policies and
    ``user_options`` schemas a user may launch (the token's own user unless ``user`` is given).

    Needs ``read:servers`` on that user. The catalog a user sees follows from their groups and
    says which servers they may start; whoever may read a user's servers (and so their options)
    may read it: the user, admins, and services granted it. A token that may only reach a server
    (``access:servers``) or read names learns nothing about what the user may run.
    """

    async def get(self) -> None:
        current = self.current_user
        if current is None:
            raise web.HTTPError(403, "Missing or invalid credentials.")
        name = self.get_argument("user", None)
        if name is None:
            if current.kind != "user":
                raise web.HTTPError(400, "a service must name the user: ?user=<name>")
            name = current.name
        self._write_catalog(user_name=name)

    @needs_scope("read:servers")
    def _write_catalog(self, user_name: str) -> None:
        user = self.find_user(user_name)
        if user is None:
            raise web.HTTPError(404, f"no user named {user_name!r}")
        spawner: Any = user.spawner
        if not hasattr(spawner, "berth_catalog"):
            raise web.HTTPError(
                500, "this hub's spawner is not a Berth spawner; an admin calls configure()"
            )
        catalog = spawner.berth_catalog
        unavailable = {
            profile.name: reason
            for profile in catalog.profiles.values()
            if (reason := spawner.profile_unavailable(profile))
        }
        culler = self.services.get(CULLER_SERVICE)
        self.write(
            catalog_document(
                catalog,
                [group.name for group in user.groups],
                unavailable,
                user=user.name,
                culler_api=f"{culler.prefix}api/" if culler is not None else None,
            )
        )


class OpenAPIHandler(web.RequestHandler):
    """``GET /hub/api/berth/openapi.yaml``: the OpenAPI document of these endpoints."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/yaml; charset=utf-8")
        document = files("berth.hub_config").joinpath("openapi.yaml")
        self.finish(document.read_text(encoding="utf-8"))


def handlers() -> list[tuple[str, type[web.RequestHandler]]]:
    """The hub handlers configure() registers; patterns are relative to ``/hub``."""
    session = r"/api/berth/users/(?P<user_name>[^/]+)/sessions/(?P<server_name>[^/]+)"
    return [
        (session + "/logs", SessionLogsHandler),
        (r"/api/berth/catalog", CatalogHandler),
        (r"/api/berth/openapi.yaml", OpenAPIHandler),
    ]
