"""The culler's HTTP API under the service prefix (``/services/berth-culler/``).

Every request is authenticated by the hub (``jupyterhub.services.auth``): an API token in the
``Authorization: token ...`` header (the CLI), or the hub's OAuth cookie (the hub's pages). Users
see and extend their own sessions; admins see and extend everyone's. ``openapi.yaml`` in this
folder describes every route and answer.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from importlib.resources import files
from typing import Any

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from tornado import web

from . import clock
from .culler import Culler, CullerError, Requester, check_session_id, parse_extend_request
from .models import event_model, session_model

__all__ = ["make_handlers"]

_NAME = r"([^/]+)"
_SERVER = r"([^/]*)"


class _ApiHandler(HubOAuthenticated, web.RequestHandler):
    """JSON in and out; errors as ``{"status": N, "message": "..."}``."""

    culler: Culler

    def initialize(self, culler: Culler) -> None:
        self.culler = culler

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = self._reason
        exc_info = kwargs.get("exc_info")
        if exc_info is not None:
            error = exc_info[1]
            if isinstance(error, CullerError):
                message = error.message
            elif isinstance(error, web.HTTPError) and error.log_message:
                message = error.log_message % error.args if error.args else error.log_message
        self.finish(json.dumps({"status": status_code, "message": message}))

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc_info = kwargs.get("exc_info")
        if exc_info is not None and isinstance(exc_info[1], CullerError):
            status_code = exc_info[1].status
        super().send_error(status_code, **kwargs)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, CullerError):
            self.log.info(
                "%s %s: %s %s", self.request.method, self.request.path, value.status, value.message
            )
            return
        super().log_exception(typ, value, tb)

    @property
    def log(self) -> logging.Logger:
        return logging.getLogger("berth.culler")

    def requester(self) -> Requester:
        model = self.get_current_user()
        if model is None:
            raise CullerError(
                401,
                "log in to the hub, or send a hub API token as 'Authorization: token <token>'",
            )
        if model.get("kind", "user") != "user":
            # A service acts for no user; only admins' and owners' requests are meaningful.
            return Requester(name=f"service:{model['name']}", admin=bool(model.get("admin")))
        return Requester(name=str(model["name"]), admin=bool(model.get("admin")))

    def reply(self, body: object, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(body))


class SessionsHandler(_ApiHandler):
    async def get(self) -> None:
        requester = self.requester()
        user = self.get_argument("user", None)
        now = clock.now()
        as_of: datetime | None
        if user is not None:
            check_session_id(user, "")
            if not requester.may_act_for(user):
                raise CullerError(403, f"you may list only your own sessions, not {user!r}'s")
            views = await self.culler.user_sessions(user)
            as_of = now
        elif requester.admin:
            views = self.culler.all_sessions()
            as_of = self.culler.listing_at
        else:
            views = await self.culler.user_sessions(requester.name)
            as_of = now
        views.sort(key=lambda v: (v.session.user, v.session.name))
        self.reply(
            {
                "as_of": clock.isoformat(as_of),
                "now": clock.isoformat(now),
                "sessions": [session_model(view, now) for view in views],
            }
        )


class SessionHandler(_ApiHandler):
    async def get(self, user: str, name: str) -> None:
        requester = self.requester()
        view = await self.culler.session(requester, user, name)
        self.reply(session_model(view, clock.now()))


class ExtendHandler(_ApiHandler):
    async def post(self, user: str, name: str) -> None:
        requester = self.requester()
        check_session_id(user, name)
        if not requester.may_act_for(user):
            raise CullerError(
                403, f"{user}/{name} is not your session; only its owner or an admin may extend it"
            )
        amount, reason = parse_extend_request(self.request.body)
        view = await self.culler.extend(requester, user, name, amount, reason)
        body = session_model(view, clock.now())
        body["extended_by_seconds"] = round(amount.total_seconds())
        self.reply(body)


class EventsHandler(_ApiHandler):
    def get(self) -> None:
        requester = self.requester()
        user = self.get_argument("user", None)
        try:
            limit = int(self.get_argument("limit", "100"))
        except ValueError:
            raise CullerError(400, "limit must be a whole number from 1 to 1000") from None
        if not 1 <= limit <= 1000:
            raise CullerError(400, "limit must be a whole number from 1 to 1000")
        if user is not None and not requester.may_act_for(user):
            raise CullerError(403, f"you may read only your own history, not {user!r}'s")
        users = [user] if user is not None else (None if requester.admin else [requester.name])
        events = self.culler.ledger.history(users, limit)
        self.reply({"events": [event_model(event) for event in events]})


class StatusHandler(_ApiHandler):
    def get(self) -> None:
        self.requester()
        report = self.culler.last_report
        last = None
        if report is not None:
            last = {
                "started": clock.isoformat(report.started),
                "finished": clock.isoformat(report.finished),
                "complete": report.complete,
                "error": report.error or None,
                "sessions": report.sessions,
                "warned": len(report.warned),
                "ended": len(report.ended),
                "extended": len(report.extended),
                "failed": len(report.failed),
                "api_calls": report.api_calls,
            }
        self.reply({"last_pass": last, "dry_run": self.culler.dry_run})


class IndexHandler(web.RequestHandler):
    """The service's root: what it is and where its API lives. JupyterHub checks that a managed
    service answers here (at start and every ``service_check_interval``)."""

    def initialize(self, api: str) -> None:
        self.api = api

    def get(self) -> None:
        self.finish(
            {"service": "berth-culler", "api": self.api, "openapi": self.api + "openapi.yaml"}
        )


class OpenAPIHandler(web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/yaml; charset=utf-8")
        self.finish(files("berth.services").joinpath("openapi.yaml").read_text(encoding="utf-8"))


def make_handlers(
    prefix: str, culler: Culler
) -> list[tuple[str, type[web.RequestHandler], dict[str, Any]]]:
    """Tornado routes for the service at ``prefix`` (ending in ``/``)."""
    api = prefix + "api/"
    args = {"culler": culler}
    return [
        (prefix, IndexHandler, {"api": api}),
        (prefix + "oauth_callback", HubOAuthCallbackHandler, {}),
        (api + "openapi.yaml", OpenAPIHandler, {}),
        (api + "sessions", SessionsHandler, args),
        (api + f"sessions/{_NAME}/{_SERVER}/extend", ExtendHandler, args),
        (api + f"sessions/{_NAME}/{_SERVER}", SessionHandler, args),
        (api + "events", EventsHandler, args),
        (api + "status", StatusHandler, args),
    ]
