"""The ledger on sqlite and on a real PostgreSQL server: sums, once-only ends and warnings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from berth.services.deadlines import SessionKey
from berth.services.ledger import EndRecord, Ledger

from .postgres import PostgresServer

T0 = datetime(2025, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)
KEY = SessionKey("alice", "llm", T0)


def test_extensions_add_up_per_session_and_survive_a_restart(db_url: str) -> None:
    ledger = Ledger(db_url)
    other_run = SessionKey("alice", "llm", T0 + timedelta(hours=3))
    for key, hours in ((KEY, 1), (KEY, 0.5), (other_run, 2)):
        ledger.add_extension(
            key,
            timedelta(hours=hours),
            requested_by="alice",
            reason="training",
            hard_deadline=T0 + timedelta(hours=5),
            at=T0 + timedelta(hours=1),
        )
    ledger.close()

    reopened = Ledger(db_url)  # the culler restarted
    assert reopened.extended(KEY) == timedelta(hours=1, minutes=30)
    assert reopened.extended(SessionKey("alice", "other", T0)) == timedelta(0)
    assert reopened.extended_since(T0) == {
        KEY: timedelta(hours=1, minutes=30),
        other_run: timedelta(hours=2),
    }
    assert reopened.extended_since(T0 + timedelta(hours=1)) == {other_run: timedelta(hours=2)}
    reopened.close()


def test_times_keep_microseconds_and_come_back_in_utc(db_url: str) -> None:
    ledger = Ledger(db_url)
    paris = timezone(timedelta(hours=1))
    ledger.add_extension(
        KEY,
        timedelta(hours=1),
        requested_by="alice",
        reason="",
        hard_deadline=datetime(2025, 3, 1, 13, 0, tzinfo=paris),
        at=T0,
    )
    (event,) = ledger.history()
    assert event.started == T0
    assert event.started.tzinfo == UTC
    assert event.detail["hard_deadline"] == datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
    with pytest.raises(Exception, match="timezone-aware"):
        ledger.add_extension(
            KEY,
            timedelta(hours=1),
            requested_by="alice",
            reason="",
            hard_deadline=datetime(2025, 3, 1, 13, 0),  # naive: refused
            at=T0,
        )
    ledger.close()


def test_a_session_is_claimed_for_ending_once(db_url: str) -> None:
    ledger = Ledger(db_url)
    at = T0 + timedelta(hours=2)
    assert ledger.claim_end(KEY, "idle", "idle for 1h", at, at) is True
    assert ledger.claim_end(KEY, "idle", "idle for 1h", at, at) is False
    ledger.close()

    restarted = Ledger(db_url)
    assert restarted.claim_end(KEY, "duration", "later", at, at) is False
    assert restarted.end_record(KEY) == EndRecord(KEY, "idle", "ending", 1)
    assert restarted.unfinished_ends() == [EndRecord(KEY, "idle", "ending", 1)]
    restarted.finish_end(KEY, "ended", "stopped", at)
    assert restarted.end_record(KEY) == EndRecord(KEY, "idle", "ended", 1)
    assert restarted.unfinished_ends() == []
    assert restarted.claim_end(KEY, "idle", "again", at, at) is False
    # the same named server started again is a new session
    again = SessionKey("alice", "llm", T0 + timedelta(hours=3))
    assert restarted.claim_end(again, "duration", "2h", at, at) is True
    restarted.close()


def test_a_failed_end_may_be_claimed_again(db_url: str) -> None:
    ledger = Ledger(db_url)
    assert ledger.claim_end(KEY, "duration", "2h", T0, T0) is True
    ledger.finish_end(KEY, "failed", "HTTP 503", T0)
    assert ledger.claim_end(KEY, "duration", "2h", T0, T0) is True
    assert ledger.end_record(KEY) == EndRecord(KEY, "duration", "ending", 2)
    assert ledger.ends_since(T0) == {KEY: EndRecord(KEY, "duration", "ending", 2)}
    ledger.close()


def test_warnings_once_per_session_and_deadline(db_url: str) -> None:
    ledger = Ledger(db_url)
    deadline = T0 + timedelta(hours=2)
    assert ledger.claim_warning(KEY, "duration", deadline, "ends in 15m", T0) is True
    assert ledger.claim_warning(KEY, "duration", deadline, "ends in 14m", T0) is False
    later = deadline + timedelta(hours=1)  # extended: a new deadline, a new warning
    assert ledger.claim_warning(KEY, "duration", later, "ends in 15m", T0) is True
    ledger.warning_sent(KEY, "duration", deadline, delivered=False)
    ledger.warning_sent(KEY, "duration", deadline, delivered=True)
    assert ledger.warning_attempts(KEY, "duration", deadline) == 2
    assert ledger.warned_since(T0) == {
        (KEY, "duration", deadline): True,
        (KEY, "duration", later): False,
    }
    ledger.close()


def test_history_is_newest_first_and_filtered_by_user(db_url: str) -> None:
    ledger = Ledger(db_url)
    bob = SessionKey("bob", "", T0)
    ledger.add_extension(
        KEY, timedelta(hours=1), requested_by="admin", reason="asked by phone",
        hard_deadline=T0 + timedelta(hours=3), at=T0 + timedelta(minutes=5),
    )  # fmt: skip
    ledger.claim_end(bob, "idle", "idle for 1h", T0, T0 + timedelta(minutes=10))
    ledger.claim_warning(KEY, "duration", T0 + timedelta(hours=3), "soon", T0 + timedelta(hours=2))
    kinds = [(e.kind, e.user) for e in ledger.history()]
    assert kinds == [("warning", "alice"), ("end", "bob"), ("extension", "alice")]
    assert [e.kind for e in ledger.history(["alice"])] == ["warning", "extension"]
    assert ledger.history(["alice"], limit=1)[0].detail["message"] == "soon"
    ledger.close()


@pytest.mark.postgres
def test_the_postgres_ledger_is_on_a_real_postgres_server(postgres: PostgresServer) -> None:
    ledger = Ledger(postgres.create_database("ledger_version"))
    with ledger.engine.connect() as conn:
        version = conn.execute(text("select version()")).scalar_one()
        tables = conn.execute(text("select tablename from pg_tables order by 1")).scalars().all()
    assert version.startswith("PostgreSQL ")
    assert {"berth_culler_extensions", "berth_culler_ends", "berth_culler_warnings"} <= set(tables)
    ledger.close()


def test_ends_are_claimed_and_finished_in_batches_once(db_url: str) -> None:
    ledger = Ledger(db_url)
    bob = SessionKey("bob", "nb", T0)
    failed = SessionKey("carol", "nb", T0)
    at = T0 + timedelta(hours=2)
    assert ledger.claim_end(KEY, "idle", "idle", at, at) is True  # claimed by an earlier pass
    assert ledger.claim_end(failed, "idle", "idle", at, at) is True
    ledger.finish_end(failed, "failed", "HTTP 503", at)
    claims = [(k, "duration", "2h", at) for k in (KEY, bob, failed)]
    assert ledger.claim_ends(claims, at) == {bob, failed}  # type: ignore[arg-type]
    assert ledger.claim_ends(claims, at) == set()  # type: ignore[arg-type]
    ledger.finish_ends([(bob, "ended", "stopped"), (failed, "ended", "HTTP 202")], at)
    assert ledger.end_record(bob) == EndRecord(bob, "duration", "ended", 1)
    assert ledger.end_record(failed) == EndRecord(failed, "duration", "ended", 2)
    assert ledger.unfinished_ends() == [EndRecord(KEY, "idle", "ending", 1)]
    ledger.close()
