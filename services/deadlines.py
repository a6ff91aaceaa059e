"""When a session ends, and why: pure functions of what the hub reports, the catalog and the ledger.

A session is one ready named server. Its **terms** come from its ``user_options`` (service,
profile, hours, checked at spawn) and the catalog's policy for that service, profile and the
user's groups. Its **deadlines** are:

* the idle deadline: last activity (or the start, if never active) plus the idle timeout, or none
  when the policy's idle timeout is ``never``;
* the hard deadline: the start plus the hours asked for plus the extensions granted so far;
* the limit: the start plus the hours plus the whole extension cap, past which no extension can go
  (the scheduler's wall time).

A session still in use when it reaches its hard deadline (used within the warning window before
it) is not ended: it is extended by itself, an hour at a time, within its extension cap; at the
limit it ends, in use or not.

Nothing here reads a clock or does I/O: the culler passes ``now`` in.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from berth.hub_config.catalog import Catalog, Policy, Profile, ServiceType
from berth.hub_config.units import format_duration

__all__ = [
    "AUTO_EXTENSION",
    "Deadlines",
    "EndReason",
    "HubSession",
    "SessionKey",
    "SessionTerms",
    "Verdict",
    "compute_deadlines",
    "judge",
    "terms_for",
]

EndReason = Literal["idle", "duration"]
#: How much a session in use at its hard deadline gets at a time (within its extension cap).
AUTO_EXTENSION = timedelta(hours=1)


@dataclass(frozen=True, order=True)
class SessionKey:
    """One run of one named server: a server stopped and started again is a new session."""

    user: str
    name: str
    started: datetime

    @property
    def id(self) -> str:
        return f"{self.user}/{self.name}"


@dataclass(frozen=True)
class HubSession:
    """One server as the hub's API reported it at ``fetched_at``."""

    user: str
    name: str
    groups: tuple[str, ...]
    started: datetime
    last_activity: datetime | None
    user_options: Mapping[str, Any]
    ready: bool
    pending: str | None
    fetched_at: datetime

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.user, self.name, self.started)

    @property
    def endable(self) -> bool:
        """Only a ready server with nothing pending (no start or stop under way) may be ended."""
        return self.ready and self.pending is None


@dataclass(frozen=True)
class SessionTerms:
    """What applies to one session: its choices at launch and the policy for them."""

    service: str | None
    profile: str | None
    duration: timedelta
    policy: Policy
    #: why the catalog's default policy applies, when it does (empty otherwise)
    note: str = ""


_BLANK_SERVICE = ServiceType(name="", display_name="", kind="jupyter", command=(), profiles=())
_BLANK_PROFILE = Profile(name="", display_name="")


def _duration(raw: object, policy: Policy) -> timedelta:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        return policy.default_duration
    if raw <= 0:
        return policy.default_duration
    return timedelta(minutes=round(raw * 60))


def terms_for(catalog: Catalog, session: HubSession) -> SessionTerms:
    """The session's terms from its ``user_options``, with the policy for the user's groups.

    A server Berth did not launch (no ``service`` in its options), or whose service or profile has
    since left the catalog, gets the catalog's default policy (with the user's group overrides)
    and keeps the hours it was launched with.
    """
    options = session.user_options or {}
    service_name = options.get("service")
    profile_name = options.get("profile")
    service = catalog.services.get(service_name) if isinstance(service_name, str) else None
    profile = catalog.profiles.get(profile_name) if isinstance(profile_name, str) else None
    note = ""
    if service is None or profile is None:
        if service_name is None:
            note = "not launched through Berth: the catalog's default policy applies"
        elif service is None:
            note = f"service {service_name!r} is not in the catalog: the default policy applies"
        else:
            note = f"profile {profile_name!r} is not in the catalog: the default policy applies"
        policy = catalog.policy_for(_BLANK_SERVICE, _BLANK_PROFILE, session.groups)
    else:
        policy = catalog.policy_for(service, profile, session.groups)
    return SessionTerms(
        service=service_name if isinstance(service_name, str) else None,
        profile=profile_name if isinstance(profile_name, str) else None,
        duration=_duration(options.get("hours"), policy),
        policy=policy,
        note=note,
    )


@dataclass(frozen=True)
class Deadlines:
    """The moments a session ends, given the extensions granted so far."""

    idle_deadline: datetime | None
    hard_deadline: datetime
    limit: datetime
    extended: timedelta
    extension_cap: timedelta
    #: how long before each deadline the warning starts
    idle_warning: timedelta | None
    hard_warning: timedelta

    @property
    def ends_at(self) -> datetime:
        if self.idle_deadline is not None and self.idle_deadline < self.hard_deadline:
            return self.idle_deadline
        return self.hard_deadline

    @property
    def ends_because(self) -> EndReason:
        if self.idle_deadline is not None and self.idle_deadline < self.hard_deadline:
            return "idle"
        return "duration"

    @property
    def extension_left(self) -> timedelta:
        return max(self.extension_cap - self.extended, timedelta(0))


def compute_deadlines(session: HubSession, terms: SessionTerms, extended: timedelta) -> Deadlines:
    """Deadlines for ``session`` with ``extended`` granted (counted up to the cap at most)."""
    policy = terms.policy
    granted = min(max(extended, timedelta(0)), policy.extension_cap)
    idle_deadline = None
    idle_warning = None
    if policy.idle_timeout is not None:
        active = session.last_activity or session.started
        idle_deadline = max(active, session.started) + policy.idle_timeout
        # Warning more than half the idle timeout ahead would warn at every pause in the work.
        idle_warning = min(policy.warn_before, policy.idle_timeout / 2)
    return Deadlines(
        idle_deadline=idle_deadline,
        hard_deadline=session.started + terms.duration + granted,
        limit=session.started + terms.duration + policy.extension_cap,
        extended=granted,
        extension_cap=policy.extension_cap,
        idle_warning=idle_warning,
        hard_warning=policy.warn_before,
    )


@dataclass(frozen=True)
class Verdict:
    """What to do with a session now: keep it, warn its owner, or end it."""

    action: Literal["keep", "warn", "end", "extend"]
    reason: EndReason | None = None
    #: the deadline the warning or the end is about
    deadline: datetime | None = None
    message: str = ""
    #: for "extend": how much more the session gets
    extend_by: timedelta | None = None


def _minutes(value: timedelta) -> str:
    if value < timedelta(minutes=1):
        return "less than a minute"
    return format_duration(timedelta(minutes=int(value.total_seconds() // 60)))


def judge(session: HubSession, terms: SessionTerms, deadlines: Deadlines, now: datetime) -> Verdict:
    """Decide for one session at ``now``. A pending or not-ready server is always kept."""
    if not session.endable:
        return Verdict("keep", message="not ready, or a start or stop is under way")
    if deadlines.idle_deadline is not None and now >= deadlines.idle_deadline:
        idle_for = now - (session.last_activity or session.started)
        timeout = terms.policy.idle_timeout or timedelta(0)
        return Verdict(
            "end",
            "idle",
            deadlines.idle_deadline,
            f"idle for {_minutes(idle_for)}, longer than its idle timeout of"
            f" {format_duration(timeout)}",
        )
    if now >= deadlines.hard_deadline:
        last_used = session.last_activity or session.started
        in_use = last_used >= deadlines.hard_deadline - deadlines.hard_warning
        if in_use and deadlines.extension_left:
            amount = min(AUTO_EXTENSION, deadlines.extension_left)
            return Verdict(
                "extend",
                "duration",
                deadlines.hard_deadline,
                f"in use at the end of its time: extended by {format_duration(amount)} (of"
                f" {format_duration(deadlines.extension_left)} extension left)",
                extend_by=amount,
            )
        extra = (
            f" plus {format_duration(deadlines.extended)} of extensions"
            if deadlines.extended
            else ""
        )
        return Verdict(
            "end",
            "duration",
            deadlines.hard_deadline,
            f"reached its duration of {format_duration(terms.duration)}{extra}",
        )
    reason = deadlines.ends_because
    deadline = deadlines.ends_at
    window = deadlines.idle_warning if reason == "idle" else deadlines.hard_warning
    if window is not None and now >= deadline - window:
        if reason == "idle":
            message = (
                f"idle for {_minutes(now - (session.last_activity or session.started))};"
                f" it ends in {_minutes(deadline - now)} unless it is used"
            )
        elif deadlines.extension_left:
            message = (
                f"it ends in {_minutes(deadline - now)}; you may extend it by up to"
                f" {format_duration(deadlines.extension_left)}"
            )
        else:
            message = f"it ends in {_minutes(deadline - now)}; its extension cap is used up"
        return Verdict("warn", reason, deadline, message)
    return Verdict("keep")
