"""The hub endpoint a Slurm job calls to say which port its session listens on.

``POST /hub/api/berth/slurm/port/<user>/<server>`` with ``Authorization: token <t>`` and the body
``{"port": 8888}``. It accepts exactly that: one key, an integer from 1 to 65535, and only with
the API token the hub gave that very session. The host is not reported: the hub takes it from
Slurm (the node the job runs on). Nothing is set from the request but the port, through
:meth:`PortReceiver.receive_port`.

Register it with :func:`slurm_handlers` (``c.JupyterHub.extra_handlers``); Berth does not add
handlers to JupyterHub at import time.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, runtime_checkable

from jupyterhub.apihandlers.base import APIHandler
from tornado import web

__all__ = ["PORT_REPORT_PATH", "PortReceiver", "PortRefused", "PortReportHandler", "slurm_handlers"]

#: Under the hub's prefix (``/hub/``): api/berth/slurm/port/<user>/<server name>
PORT_REPORT_PATH = r"/api/berth/slurm/port/([^/]+)/([^/]*)"
_MAX_BODY = 1024


class PortRefused(Exception):
    """The session cannot take a port now (HTTP ``status``, ``message`` for the job's log)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@runtime_checkable
class PortReceiver(Protocol):
    """A spawner that waits for its job to report a port."""

    def check_report_token(self, token: str) -> bool:
        """Whether ``token`` is this session's own API token."""

    def receive_port(self, port: int) -> None:
        """Take the port the job listens on; raise PortRefused if the session is not waiting."""


def parse_port_report(body: bytes) -> int:
    """The port in a report body, or HTTPError 400 saying what is wrong with it."""
    if len(body) > _MAX_BODY:
        raise web.HTTPError(400, 'the body must be {"port": <integer>} and nothing else')
    try:
        data: Any = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise web.HTTPError(400, 'the body is not JSON; send {"port": <integer>}') from None
    if not isinstance(data, dict) or set(data) != {"port"}:
        raise web.HTTPError(400, 'the body must be {"port": <integer>} and nothing else')
    port = data["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise web.HTTPError(400, "port must be an integer from 1 to 65535")
    return port


class PortReportHandler(APIHandler):
    """Take the port a session's job reports, authenticated by that session's token."""

    _forbidden = "this endpoint takes the session's own API token"

    async def post(self, user_name: str, server_name: str) -> None:
        token = self.get_auth_token()
        current = self.current_user
        if not token or current is None or getattr(current, "name", None) != user_name:
            raise web.HTTPError(403, self._forbidden)
        user = self.find_user(user_name)
        if user is None or server_name not in user.orm_spawners:
            raise web.HTTPError(403, self._forbidden)
        # inside `berth` (several backends) the session's own spawner is the backend's
        spawner = getattr(user.spawners[server_name], "backend_spawner", None)
        if not isinstance(spawner, PortReceiver) or not spawner.check_report_token(token):
            raise web.HTTPError(403, self._forbidden)
        port = parse_port_report(self.request.body)
        try:
            spawner.receive_port(port)
        except PortRefused as e:
            raise web.HTTPError(e.status, "%s", e.message) from None
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"port": port}))


def slurm_handlers() -> list[tuple[str, type[APIHandler]]]:
    """The hub handlers the Slurm backend needs: ``c.JupyterHub.extra_handlers.extend(...)``."""
    return [(PORT_REPORT_PATH, PortReportHandler)]
