"""One culler pass, and the extend and describe operations the API offers.

A pass reads every ready server through the hub's paginated API, works out each session's
deadlines from the catalog and the ledger, warns before a deadline (once per session and
deadline), and ends the sessions past one. A pass that cannot read the whole list decides
nothing, and no session is acted on once what the hub said about it is older than
``max_data_age``: no decision on partial or stale data. Ends are recorded in the ledger (one
transaction for the pass) before any server is stopped, so that none is ended twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from berth.hub_config.catalog import Catalog
from berth.hub_config.units import format_duration

from . import clock
from .deadlines import (
    EndReason,
    HubSession,
    SessionKey,
    Verdict,
    compute_deadlines,
    judge,
    terms_for,
)
from .hubclient import HubClient, HubError, HubRefused, HubUnavailable
from .ledger import EndRecord, EndStatus, Ledger
from .models import SessionView
from .webhook import Webhook

__all__ = [
    "Culler",
    "CullerError",
    "PassReport",
    "Requester",
    "check_session_id",
    "parse_extend_request",
    "sessions_from_user",
]

log = logging.getLogger("berth.culler")

#: Hub user names are free-form, but none has a control character or a slash.
_USER_NAME = re.compile(r"^[^/\x00-\x1f\x7f]{1,255}$")
_SERVER_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]{0,62})?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Delivery attempts for one warning before the culler stops trying.
WEBHOOK_ATTEMPTS = 3


class CullerError(Exception):
    """A refusal the API shows as it is: HTTP ``status`` with ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Requester:
    """Who asks, as the hub identified them."""

    name: str
    admin: bool = False

    def may_act_for(self, user: str) -> bool:
        return self.admin or self.name == user


@dataclass
class PassReport:
    """What one pass saw and did."""

    started: datetime
    finished: datetime | None = None
    complete: bool = False
    error: str = ""
    sessions: int = 0
    warned: list[str] = field(default_factory=list)
    ended: dict[str, str] = field(default_factory=dict)
    #: sessions in use at the end of their time, and the hours they were given
    extended: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    #: sessions not acted on because the hub's report on them had grown older than max_data_age
    stale: list[str] = field(default_factory=list)
    api_calls: int = 0

    def summary(self) -> str:
        done = (
            f"{self.sessions} sessions, {len(self.warned)} warned, {len(self.ended)} ended,"
            f" {len(self.extended)} in use extended,"
            f" {len(self.failed)} failed, {len(self.stale)} not acted on (data too old),"
            f" {self.api_calls} hub API calls"
        )
        if not self.complete:
            return f"pass incomplete: {self.error}; {done}"
        return f"pass: {done}"


def sessions_from_user(user: Mapping[str, Any], fetched_at: datetime) -> list[HubSession]:
    """The servers of one hub user model that have started (pending ones included)."""
    groups = tuple(str(g) for g in user.get("groups") or ())
    sessions = []
    for name, server in (user.get("servers") or {}).items():
        started = clock.parse_time(server.get("started"))
        if started is None:
            continue
        sessions.append(
            HubSession(
                user=str(user["name"]),
                name=str(name),
                groups=groups,
                started=started,
                last_activity=clock.parse_time(server.get("last_activity")),
                user_options=server.get("user_options") or {},
                ready=bool(server.get("ready")),
                pending=server.get("pending"),
                fetched_at=fetched_at,
            )
        )
    return sessions


def _check_readable(user: Mapping[str, Any]) -> None:
    """A user model without servers or groups means the culler's token lacks a scope."""
    for key, scope in (("servers", "read:servers"), ("groups", "read:users:groups")):
        if key not in user:
            raise HubRefused(
                403,
                f"the hub's user list has no {key!r}: the culler's role needs the {scope} scope",
            )


def parse_extend_request(body: bytes) -> tuple[timedelta, str]:
    """Read ``{"hours": 1.5, "reason": "..."}``; raise CullerError(400) saying what is wrong."""
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError):
        raise CullerError(400, 'the body is not valid JSON; send {"hours": 1}') from None
    if not isinstance(data, dict):
        raise CullerError(400, 'the body must be a JSON object such as {"hours": 1}')
    unknown = sorted(set(data) - {"hours", "reason"})
    if unknown:
        raise CullerError(
            400, f"unknown field(s) {', '.join(map(repr, unknown))}; allowed: hours, reason"
        )
    if "hours" not in data:
        raise CullerError(400, 'say how many hours to add: {"hours": 1}')
    hours = data["hours"]
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not math.isfinite(hours):
        raise CullerError(
            400, f"hours must be a number such as 1 or 0.5, got {json.dumps(hours)[:40]}"
        )
    if hours <= 0:
        raise CullerError(400, f"hours must be more than zero, got {hours:g}")
    if hours > 24 * 366:
        raise CullerError(400, f"{hours:g} hours is more than any extension cap allows")
    amount = timedelta(minutes=round(hours * 60))
    if amount < timedelta(minutes=1):
        raise CullerError(400, f"extend by at least one minute (0.0167 hours), got {hours:g}")
    reason = data.get("reason", "")
    if not isinstance(reason, str) or len(reason) > 500 or _CONTROL.search(reason):
        raise CullerError(400, "reason must be one line of text of at most 500 characters")
    return amount, reason


def check_session_id(user: str, name: str) -> None:
    if not _USER_NAME.match(user):
        raise CullerError(400, f"{user[:40]!r} is not a valid user name")
    if not _SERVER_NAME.match(name):
        raise CullerError(400, f"{name[:40]!r} is not a valid session name")


class Culler:
    """Decides and acts; holds the latest complete listing for the API."""

    def __init__(
        self,
        catalog: Catalog,
        hub: HubClient,
        ledger: Ledger,
        *,
        webhook: Webhook | None = None,
        page_size: int = 200,
        max_data_age: timedelta = timedelta(seconds=120),
        dry_run: bool = False,
        service_url: str = "",
    ) -> None:
        self.catalog = catalog
        self.hub = hub
        self.ledger = ledger
        self.webhook = webhook
        self.page_size = page_size
        self.max_data_age = max_data_age
        self.dry_run = dry_run
        self.service_url = service_url.rstrip("/")
        #: held while a decision to end or to extend one session is being made and recorded
        self.lock = asyncio.Lock()
        self.listing: list[HubSession] = []
        self.listing_at: datetime | None = None
        self.last_report: PassReport | None = None
        #: counts extensions granted, so a pass knows whether its ledger reading is still current
        self._extension_serial = 0

    # -- reading ------------------------------------------------------------------------------

    def views(self, sessions: Iterable[HubSession]) -> list[SessionView]:
        sessions = list(sessions)
        if not sessions:
            return []
        oldest = min(s.started for s in sessions)
        extended = self.ledger.extended_since(oldest)
        ends = self.ledger.ends_since(oldest)
        views = []
        for session in sessions:
            terms = terms_for(self.catalog, session)
            deadlines = compute_deadlines(session, terms, extended.get(session.key, timedelta(0)))
            end = ends.get(session.key)
            ending = end is not None and end.status != "failed"
            views.append(SessionView(session, terms, deadlines, ending))
        return views

    # -- one pass -----------------------------------------------------------------------------

    async def run_pass(self) -> PassReport:
        """Read, decide, warn and end. Never raises for hub trouble: the report says it.

        The whole list is read first (the pages after the first concurrently), then each session
        is judged as of the moment its page arrived, and none is acted on once what the hub said
        about it is older than ``max_data_age``. A pass that cannot read the whole list decides
        nothing. (Stopping servers while still paging would shift the hub's offsets and skip
        users.)
        """
        calls_before = self.hub.calls.total
        report = PassReport(started=clock.now())
        sessions: list[HubSession] = []
        seen: set[SessionKey] = set()
        try:
            async for page in self.hub.ready_users(self.page_size):
                fetched_at = clock.now()
                for user in page:
                    _check_readable(user)
                    for session in sessions_from_user(user, fetched_at):
                        if session.key not in seen:  # a user can move between pages
                            seen.add(session.key)
                            sessions.append(session)
        except HubError as e:
            report.error = f"could not read the hub's server list: {e}; nothing decided"
        else:
            report.complete = True
            report.sessions = len(sessions)
            self.listing, self.listing_at = sessions, report.started
            await self._decide(sessions, report)
            self._settle_unfinished({s.key for s in sessions if s.endable})
        report.finished = clock.now()
        report.api_calls = self.hub.calls.total - calls_before
        self.last_report = report
        if report.complete and not report.stale:
            log.info("%s", report.summary())
        else:
            log.error("%s", report.summary())
        return report

    def _fresh(self, session: HubSession, report: PassReport) -> bool:
        """Whether what the hub said about ``session`` is recent enough to act on."""
        age = clock.now() - session.fetched_at
        if age <= self.max_data_age:
            return True
        report.stale.append(session.key.id)
        log.warning(
            "not acting on %s: the hub reported it %.0fs ago, more than max_data_age",
            session.key.id,
            age.total_seconds(),
        )
        return False

    async def _decide(self, sessions: list[HubSession], report: PassReport) -> None:
        if not sessions:
            return
        serial = self._extension_serial
        views = self.views(sessions)
        oldest = min(s.started for s in sessions)
        warned = self.ledger.warned_since(oldest)
        known_ends = self.ledger.ends_since(oldest)
        ends: list[tuple[SessionView, Verdict]] = []
        warnings: list[tuple[SessionView, Verdict]] = []
        for view in views:
            # Judge as of when the hub reported it: activity after that is not visible yet.
            verdict = judge(view.session, view.terms, view.deadlines, view.session.fetched_at)
            if verdict.action == "extend" and verdict.extend_by is not None:
                await self._extend_in_use(view, verdict, report)
            elif verdict.action == "end":
                ends.append((view, verdict))
            elif verdict.action == "warn" and verdict.deadline is not None:
                delivered = warned.get((view.session.key, verdict.reason or "", verdict.deadline))
                if delivered is None or (delivered is False and self.webhook is not None):
                    warnings.append((view, verdict))
        to_stop = await self._claim_ends(ends, known_ends, serial, report)
        outcomes = await asyncio.gather(
            *(self._stop(view, verdict, report) for view, verdict in to_stop),
            *(self._warn(view, verdict, report) for view, verdict in warnings),
        )
        finished = [outcome for outcome in outcomes if outcome is not None]
        if finished:
            self.ledger.finish_ends(finished, clock.now())
        for view, verdict in to_stop:
            key = view.session.key
            if key.id in report.ended:
                await self._notify(
                    {
                        "event": "session.ended",
                        "id": key.id,
                        "user": key.user,
                        "name": key.name,
                        "reason": verdict.reason,
                        "message": f"{key.id} was ended: {verdict.message}",
                        "deadline": clock.isoformat(verdict.deadline),
                        "at": clock.isoformat(clock.now()),
                    }
                )

    async def _extend_in_use(self, view: SessionView, verdict: Verdict, report: PassReport) -> None:
        """A session in use at the end of its time gets more, within its cap: ledger, log, hook."""
        assert verdict.extend_by is not None
        session = view.session
        async with self.lock:
            used = self.ledger.extended(session.key)
            amount = min(verdict.extend_by, view.terms.policy.extension_cap - used)
            if amount <= timedelta(0):
                return  # an extension granted meanwhile used the rest: judged next pass
            deadlines = compute_deadlines(session, view.terms, used + amount)
            self._extension_serial += 1
            self.ledger.add_extension(
                session.key,
                amount,
                requested_by="berth-culler",
                reason="in use at the end of its time",
                hard_deadline=deadlines.hard_deadline,
                at=clock.now(),
            )
        report.extended[session.key.id] = amount.total_seconds() / 3600
        log.info("%s: %s", session.key.id, verdict.message)
        await self._notify(
            {
                "event": "session.extended",
                "id": session.key.id,
                "user": session.key.user,
                "name": session.key.name,
                "message": f"{session.key.id} was {verdict.message}",
                "deadline": clock.isoformat(deadlines.hard_deadline),
                "at": clock.isoformat(clock.now()),
            }
        )

    async def _claim_ends(
        self,
        ends: list[tuple[SessionView, Verdict]],
        known: Mapping[SessionKey, EndRecord],
        serial: int,
        report: PassReport,
    ) -> list[tuple[SessionView, Verdict]]:
        """Record the ends about to happen, in one transaction, before stopping anything."""
        ends = [(view, verdict) for view, verdict in ends if self._fresh(view.session, report)]
        if not ends:
            return []
        async with self.lock:
            if serial != self._extension_serial:
                # An extension was granted since the pass read the ledger: judge again.
                rejudged = []
                for view, _ in ends:
                    extended = self.ledger.extended(view.session.key)
                    deadlines = compute_deadlines(view.session, view.terms, extended)
                    verdict = judge(view.session, view.terms, deadlines, view.session.fetched_at)
                    if verdict.action == "end":
                        rejudged.append((view, verdict))
                ends = rejudged
            if self.dry_run:
                for view, verdict in ends:
                    log.info("dry run: would end %s: %s", view.session.key.id, verdict.message)
                    report.ended[view.session.key.id] = verdict.reason or ""
                return []
            to_stop: list[tuple[SessionView, Verdict]] = []
            claims: list[tuple[SessionKey, EndReason, str, datetime]] = []
            for view, verdict in ends:
                assert verdict.reason is not None and verdict.deadline is not None
                key = view.session.key
                record = known.get(key)
                if record is not None and record.status == "ended":
                    log.warning("%s was ended before and is still listed; not again", key.id)
                elif record is not None and record.status == "ending":
                    log.info("%s: finishing an end decided earlier (%s)", key.id, record.reason)
                    to_stop.append((view, verdict))
                else:
                    claims.append((key, verdict.reason, verdict.message, verdict.deadline))
            claimed = self.ledger.claim_ends(claims, clock.now())
            to_stop.extend((v, vd) for v, vd in ends if v.session.key in claimed)
        return to_stop

    def _settle_unfinished(self, running: set[SessionKey]) -> None:
        """An end recorded but never confirmed, whose session is gone: the stop happened."""
        if self.dry_run:
            return
        gone = [
            (record.key, "ended", "no longer running at the next pass")
            for record in self.ledger.unfinished_ends()
            if record.status == "ending" and record.key not in running
        ]
        if gone:
            self.ledger.finish_ends(gone, clock.now())  # type: ignore[arg-type]

    async def _stop(
        self, view: SessionView, verdict: Verdict, report: PassReport
    ) -> tuple[SessionKey, EndStatus, str]:
        session = view.session
        key = session.key
        log.info("ending %s: %s", key.id, verdict.message)
        try:
            code = await self.hub.stop_server(session.user, session.name)
        except HubError as e:
            report.failed[key.id] = str(e)
            log.error("could not end %s: %s", key.id, e)
            return key, "failed", str(e)
        report.ended[key.id] = verdict.reason or ""
        detail = {
            204: "stopped",
            202: "the hub is stopping it",
            404: "the server was already gone",
        }.get(code, f"HTTP {code}")
        return key, "ended", detail

    async def _warn(self, view: SessionView, verdict: Verdict, report: PassReport) -> None:
        session = view.session
        key = session.key
        assert verdict.reason is not None and verdict.deadline is not None
        message = f"{key.id}: {verdict.message}"
        if not self._fresh(session, report):
            return
        if self.dry_run:
            report.warned.append(key.id)
            return
        claimed = self.ledger.claim_warning(
            key, verdict.reason, verdict.deadline, message, clock.now()
        )
        if claimed:
            report.warned.append(key.id)
            log.info("warning %s", message)
        if self.webhook is None:
            return
        if self.ledger.warning_attempts(key, verdict.reason, verdict.deadline) >= WEBHOOK_ATTEMPTS:
            return
        delivered = await self._notify(
            {
                "event": "session.warning",
                "id": key.id,
                "user": session.user,
                "name": session.name,
                "reason": verdict.reason,
                "message": message,
                "deadline": clock.isoformat(verdict.deadline),
                "seconds_left": round((verdict.deadline - session.fetched_at).total_seconds()),
                "extension_left_seconds": round(view.deadlines.extension_left.total_seconds()),
                "extend_url": self._extend_url(key),
                "at": clock.isoformat(clock.now()),
            }
        )
        self.ledger.warning_sent(key, verdict.reason, verdict.deadline, delivered)

    def _extend_url(self, key: SessionKey) -> str | None:
        if not self.service_url:
            return None
        return f"{self.service_url}/api/sessions/{quote(key.user, safe='')}/{key.name}/extend"

    async def _notify(self, event: dict[str, Any]) -> bool:
        if self.webhook is None:
            return False
        return await self.webhook.send(event)

    # -- what the API offers ------------------------------------------------------------------

    async def user_sessions(self, user: str) -> list[SessionView]:
        """One user's sessions, read from the hub now."""
        try:
            model = await self.hub.user(user)
        except HubUnavailable as e:
            raise CullerError(503, f"the hub is not answering; try again shortly ({e})") from None
        except HubRefused as e:
            raise CullerError(502, f"the hub refused to describe {user!r}: {e}") from None
        if model is None:
            return []
        return self.views(sessions_from_user(model, clock.now()))

    def all_sessions(self) -> list[SessionView]:
        """Every session as of the last complete pass."""
        return self.views(self.listing)

    async def session(self, requester: Requester, user: str, name: str) -> SessionView:
        check_session_id(user, name)
        if not requester.may_act_for(user):
            raise CullerError(403, f"{user}/{name} is not your session")
        for view in await self.user_sessions(user):
            if view.session.name == name:
                return view
        raise CullerError(404, f"{user} has no running session named {name!r}")

    async def extend(
        self, requester: Requester, user: str, name: str, amount: timedelta, reason: str
    ) -> SessionView:
        """Grant ``amount`` more to a session, within its policy's cap; raise CullerError."""
        view = await self.session(requester, user, name)
        session = view.session
        if not session.endable:
            what = "still starting" if session.pending == "spawn" else "not ready"
            if session.pending == "stop":
                what = "stopping"
            raise CullerError(409, f"{session.key.id} is {what}; it cannot be extended now")
        async with self.lock:
            record = self.ledger.end_record(session.key)
            if record is not None and record.status != "failed":
                raise CullerError(409, f"{session.key.id} is being ended ({record.reason})")
            cap = view.terms.policy.extension_cap
            used = self.ledger.extended(session.key)
            left = max(cap - used, timedelta(0))
            if amount > cap:
                raise CullerError(
                    400,
                    f"{format_duration(amount)} is more than the extension cap of"
                    f" {format_duration(cap)} for this session",
                )
            if amount > left:
                if not left:
                    message = f"the extension cap of {format_duration(cap)} is reached"
                else:
                    message = (
                        f"only {format_duration(left)} of the {format_duration(cap)} extension"
                        f" cap is left ({format_duration(used)} used); ask for at most"
                        f" {left.total_seconds() / 3600:.4g} hours"
                    )
                raise CullerError(409, f"cannot extend {session.key.id}: {message}")
            deadlines = compute_deadlines(session, view.terms, used + amount)
            self._extension_serial += 1
            self.ledger.add_extension(
                session.key,
                amount,
                requested_by=requester.name,
                reason=reason,
                hard_deadline=deadlines.hard_deadline,
                at=clock.now(),
            )
        log.info(
            "%s extended %s by %s (now ends at %s)",
            requester.name,
            session.key.id,
            format_duration(amount),
            clock.isoformat(deadlines.hard_deadline),
        )
        return SessionView(session, view.terms, deadlines)
