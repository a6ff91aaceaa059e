"""Deadlines and verdicts: pure functions, checked against literal times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from berth.hub_config import load_catalog
from berth.services.deadlines import (
    Deadlines,
    HubSession,
    SessionTerms,
    Verdict,
    compute_deadlines,
    judge,
    terms_for,
)

CATALOG = load_catalog(Path(__file__).with_name("berth-test.yaml"))
T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def session(
    options: dict[str, object],
    groups: tuple[str, ...] = (),
    last_activity: datetime | None = None,
    ready: bool = True,
    pending: str | None = None,
) -> HubSession:
    return HubSession(
        user="alice",
        name="s1",
        groups=groups,
        started=T0,
        last_activity=last_activity,
        user_options=options,
        ready=ready,
        pending=pending,
        fetched_at=T0,
    )


def at(**delta: float) -> datetime:
    return T0 + timedelta(**delta)


def test_terms_follow_service_profile_and_groups() -> None:
    web = terms_for(CATALOG, session({"service": "web", "profile": "cpu", "hours": 3}))
    assert (web.service, web.profile, web.duration) == ("web", "cpu", timedelta(hours=3))
    assert web.policy.idle_timeout == timedelta(minutes=20)
    assert web.policy.extension_cap == timedelta(hours=4)
    assert web.note == ""

    gpu = terms_for(CATALOG, session({"service": "jupyter", "profile": "gpu", "hours": 1.5}))
    assert gpu.duration == timedelta(hours=1, minutes=30)
    assert gpu.policy.idle_timeout == timedelta(minutes=30)
    assert gpu.policy.extension_cap == timedelta(hours=2)

    long = terms_for(
        CATALOG,
        session(
            {"service": "jupyter", "profile": "gpu", "hours": 2}, groups=("long-runs", "no-idle")
        ),
    )
    assert long.policy.extension_cap == timedelta(hours=24)
    assert long.policy.idle_timeout is None


def test_sessions_berth_did_not_launch_get_the_default_policy_with_group_overrides() -> None:
    plain = terms_for(CATALOG, session({}, groups=("no-idle",)))
    assert plain.service is None
    assert plain.duration == timedelta(hours=2)  # the default duration
    assert plain.policy.idle_timeout is None  # the group's override still applies
    assert plain.note == "not launched through Berth: the catalog's default policy applies"

    gone = terms_for(CATALOG, session({"service": "rstudio", "profile": "cpu", "hours": 5}))
    assert gone.duration == timedelta(hours=5)
    assert gone.policy.idle_timeout == timedelta(hours=1)
    assert gone.note == "service 'rstudio' is not in the catalog: the default policy applies"


@pytest.mark.parametrize("hours", [None, "2", True, -1, 0, float("nan")])
def test_unusable_hours_fall_back_to_the_default_duration(hours: object) -> None:
    terms = terms_for(CATALOG, session({"service": "web", "profile": "cpu", "hours": hours}))
    assert terms.duration == timedelta(hours=2)


def test_deadlines_literal() -> None:
    s = session({"service": "web", "profile": "cpu", "hours": 3}, last_activity=at(hours=1))
    terms = terms_for(CATALOG, s)
    assert compute_deadlines(s, terms, timedelta(hours=1)) == Deadlines(
        idle_deadline=at(hours=1, minutes=20),
        hard_deadline=at(hours=4),
        limit=at(hours=7),
        extended=timedelta(hours=1),
        extension_cap=timedelta(hours=4),
        idle_warning=timedelta(minutes=10),  # half the 20m idle timeout, not warn_before's 15m
        hard_warning=timedelta(minutes=15),
    )


def test_extensions_count_up_to_the_cap_only() -> None:
    s = session({"service": "web", "profile": "cpu", "hours": 3})
    deadlines = compute_deadlines(s, terms_for(CATALOG, s), timedelta(hours=9))
    assert deadlines.hard_deadline == at(hours=7) == deadlines.limit
    assert deadlines.extension_left == timedelta(0)


def verdict_at(s: HubSession, now: datetime, extended: timedelta = timedelta(0)) -> Verdict:
    terms = terms_for(CATALOG, s)
    return judge(s, terms, compute_deadlines(s, terms, extended), now)


def test_idle_session_is_warned_then_ended() -> None:
    s = session({"service": "jupyter", "profile": "cpu", "hours": 8}, last_activity=at(hours=1))
    assert verdict_at(s, at(hours=1, minutes=44)) == Verdict("keep")
    assert verdict_at(s, at(hours=1, minutes=45)) == Verdict(
        "warn", "idle", at(hours=2), "idle for 45m; it ends in 15m unless it is used"
    )
    assert verdict_at(s, at(hours=2)) == Verdict(
        "end", "idle", at(hours=2), "idle for 1h, longer than its idle timeout of 1h"
    )


def test_session_in_use_is_not_ended_for_idleness() -> None:
    s = session({"service": "jupyter", "profile": "cpu", "hours": 8}, last_activity=at(hours=5))
    assert verdict_at(s, at(hours=5, minutes=59)).action == "warn"
    assert verdict_at(s, at(hours=5, minutes=59)).reason == "idle"
    assert verdict_at(s, at(hours=5, minutes=30)) == Verdict("keep")


def test_hard_deadline_with_and_without_extension() -> None:
    s = session({"service": "jupyter", "profile": "cpu", "hours": 2}, groups=("no-idle",))
    assert verdict_at(s, at(hours=1, minutes=50)) == Verdict(
        "warn", "duration", at(hours=2), "it ends in 10m; you may extend it by up to 4h"
    )
    assert verdict_at(s, at(hours=2)) == Verdict(
        "end", "duration", at(hours=2), "reached its duration of 2h"
    )
    assert verdict_at(s, at(hours=2), timedelta(hours=1)) == Verdict("keep")
    assert verdict_at(s, at(hours=6), timedelta(hours=4)) == Verdict(
        "end", "duration", at(hours=6), "reached its duration of 2h plus 4h of extensions"
    )
    assert verdict_at(s, at(hours=5, minutes=50), timedelta(hours=4)).message == (
        "it ends in 10m; its extension cap is used up"
    )


def test_a_session_in_use_at_its_deadline_gets_more_time_within_its_cap() -> None:
    # used 10 minutes before the end of its 2 hours (no idle timeout for this group)
    s = session(
        {"service": "jupyter", "profile": "cpu", "hours": 2},
        groups=("no-idle",),
        last_activity=at(hours=1, minutes=50),
    )
    assert verdict_at(s, at(hours=2)) == Verdict(
        "extend",
        "duration",
        at(hours=2),
        "in use at the end of its time: extended by 1h (of 4h extension left)",
        extend_by=timedelta(hours=1),
    )
    # the last piece of the cap is all it can get
    late = session(
        {"service": "jupyter", "profile": "cpu", "hours": 2},
        groups=("no-idle",),
        last_activity=at(hours=5, minutes=35),
    )
    almost_all = timedelta(hours=3, minutes=40)
    assert verdict_at(late, at(hours=5, minutes=40), almost_all).extend_by == timedelta(minutes=20)
    # at the limit (hours plus the whole cap) it ends, in use or not
    busy = session(
        {"service": "jupyter", "profile": "cpu", "hours": 2},
        groups=("no-idle",),
        last_activity=at(hours=5, minutes=59),
    )
    assert verdict_at(busy, at(hours=6), timedelta(hours=4)).action == "end"
    # used only before the warning window: not in use, it ends
    earlier = session(
        {"service": "jupyter", "profile": "cpu", "hours": 2},
        groups=("no-idle",),
        last_activity=at(hours=1, minutes=44),
    )
    assert verdict_at(earlier, at(hours=2)).action == "end"


def test_never_active_session_is_idle_from_its_start() -> None:
    s = session({"service": "web", "profile": "cpu", "hours": 2})
    assert verdict_at(s, at(minutes=20)).action == "end"
    assert verdict_at(s, at(minutes=19)).action == "warn"


@pytest.mark.parametrize(("ready", "pending"), [(False, "spawn"), (True, "stop"), (False, None)])
def test_pending_or_unready_sessions_are_never_ended(ready: bool, pending: str | None) -> None:
    s = session({"service": "web", "profile": "cpu", "hours": 1}, ready=ready, pending=pending)
    assert verdict_at(s, at(hours=30)).action == "keep"


def test_terms_are_what_spawn_recorded() -> None:
    s = session({"service": "jupyter", "profile": "gpu", "hours": 0.25})
    assert terms_for(CATALOG, s) == SessionTerms(
        service="jupyter",
        profile="gpu",
        duration=timedelta(minutes=15),
        policy=CATALOG.policy_for(CATALOG.services["jupyter"], CATALOG.profiles["gpu"], ()),
    )


def test_the_last_minute_is_said_in_words() -> None:
    s = session({"service": "jupyter", "profile": "cpu", "hours": 1}, groups=("no-idle",))
    assert verdict_at(s, at(minutes=59, seconds=30)).message == (
        "it ends in less than a minute; you may extend it by up to 4h"
    )
