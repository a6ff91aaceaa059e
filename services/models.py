"""The JSON the culler's API answers with (described in ``openapi.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .clock import isoformat
from .deadlines import Deadlines, HubSession, SessionTerms, Verdict, judge
from .ledger import LedgerEvent

__all__ = ["SessionView", "event_model", "session_model"]


@dataclass(frozen=True)
class SessionView:
    """Everything known about one session: the hub's report, its terms, its deadlines."""

    session: HubSession
    terms: SessionTerms
    deadlines: Deadlines
    #: the ledger holds an end for this session (it is being or was ended)
    ending: bool = False


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else round(value.total_seconds())


def session_model(view: SessionView, now: datetime) -> dict[str, Any]:
    session, terms, deadlines = view.session, view.terms, view.deadlines
    policy = terms.policy
    verdict: Verdict = judge(session, terms, deadlines, now)
    warning = None
    if verdict.action == "warn" and verdict.deadline is not None:
        warning = {
            "reason": verdict.reason,
            "deadline": isoformat(verdict.deadline),
            "message": f"{session.user}/{session.name}: {verdict.message}",
        }
    idle_left = None if deadlines.idle_deadline is None else deadlines.idle_deadline - now
    if view.ending:
        state = "ending"
    elif not session.endable:
        state = "pending" if session.pending else "not-ready"
    else:
        state = "running"
    return {
        "id": session.key.id,
        "user": session.user,
        "name": session.name,
        "state": state,
        "service": terms.service,
        "profile": terms.profile,
        "started": isoformat(session.started),
        "last_activity": isoformat(session.last_activity),
        "duration_seconds": _seconds(terms.duration),
        "idle_timeout_seconds": _seconds(policy.idle_timeout),
        "idle_deadline": isoformat(deadlines.idle_deadline),
        "idle_seconds_left": None if idle_left is None else max(0, _seconds(idle_left) or 0),
        "hard_deadline": isoformat(deadlines.hard_deadline),
        "hard_seconds_left": max(0, _seconds(deadlines.hard_deadline - now) or 0),
        "limit": isoformat(deadlines.limit),
        "ends_at": isoformat(deadlines.ends_at),
        "ends_because": deadlines.ends_because,
        "seconds_left": max(0, _seconds(deadlines.ends_at - now) or 0),
        "extension": {
            "used_seconds": _seconds(deadlines.extended),
            "cap_seconds": _seconds(deadlines.extension_cap),
            "left_seconds": _seconds(deadlines.extension_left),
        },
        "warn_before_seconds": _seconds(policy.warn_before),
        "warning": warning,
        "policy_note": terms.note or None,
        "as_of": isoformat(session.fetched_at),
    }


def event_model(event: LedgerEvent) -> dict[str, Any]:
    detail = {
        key: isoformat(value) if isinstance(value, datetime) else value
        for key, value in event.detail.items()
    }
    return {
        "kind": event.kind,
        "id": f"{event.user}/{event.server}",
        "user": event.user,
        "name": event.server,
        "started": isoformat(event.started),
        "at": isoformat(event.at),
        **detail,
    }
