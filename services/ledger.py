"""The culler's ledger: extensions granted, warnings sent and sessions ended, in SQL.

SQLAlchemy 2 with any URL it supports: ``sqlite:///berth-culler.sqlite`` by default,
``postgresql+psycopg://user@host/db`` for a shared database. A session is identified by
(user, server name, start time), so a named server started again is a new session and the hub's
restarts change nothing. Each session has at most one end record (a unique key), which is how the
culler never ends a session twice, across its own restarts too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    DateTime,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.types import TypeDecorator

from .deadlines import EndReason, SessionKey

__all__ = [
    "EndRecord",
    "EndStatus",
    "Ledger",
    "LedgerEvent",
]

EndStatus = Literal["ending", "ended", "failed"]


class UTCDateTime(TypeDecorator[datetime]):
    """Times stored without a zone, always UTC; read back timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the ledger stores only timezone-aware times")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class _Base(DeclarativeBase):
    pass


class _Extension(_Base):
    __tablename__ = "berth_culler_extensions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(255), index=True)
    server: Mapped[str] = mapped_column(String(255))
    started: Mapped[datetime] = mapped_column(UTCDateTime)
    seconds: Mapped[float] = mapped_column(Float)
    requested_by: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str] = mapped_column(Text, default="")
    hard_deadline: Mapped[datetime] = mapped_column(UTCDateTime)
    created: Mapped[datetime] = mapped_column(UTCDateTime)


class _End(_Base):
    __tablename__ = "berth_culler_ends"
    __table_args__ = (UniqueConstraint("user", "server", "started", name="berth_culler_end_once"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(255), index=True)
    server: Mapped[str] = mapped_column(String(255))
    started: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    updated: Mapped[datetime] = mapped_column(UTCDateTime)


class _Warning(_Base):
    __tablename__ = "berth_culler_warnings"
    __table_args__ = (
        UniqueConstraint("user", "server", "started", "reason", "deadline", name="berth_warn_once"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(255), index=True)
    server: Mapped[str] = mapped_column(String(255))
    started: Mapped[datetime] = mapped_column(UTCDateTime)
    reason: Mapped[str] = mapped_column(String(32))
    deadline: Mapped[datetime] = mapped_column(UTCDateTime)
    message: Mapped[str] = mapped_column(Text)
    delivered: Mapped[bool] = mapped_column(default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[datetime] = mapped_column(UTCDateTime)


@dataclass(frozen=True)
class EndRecord:
    key: SessionKey
    reason: EndReason
    status: EndStatus
    attempts: int


def _claim(
    db: Session,
    row: _End | None,
    key: SessionKey,
    reason: EndReason,
    message: str,
    deadline: datetime,
    at: datetime,
) -> bool:
    """Claim the end of ``key`` in ``db``, whose end record (locked for update) is ``row``:
    a new record, or a failed one taken up again. False if it is being or was ended."""
    if row is None:
        db.add(
            _End(
                user=key.user,
                server=key.name,
                started=key.started,
                reason=reason,
                message=message,
                deadline=deadline,
                status="ending",
                detail="",
                attempts=1,
                created=at,
                updated=at,
            )
        )
        return True
    if row.status != "failed":
        return False
    row.status, row.reason, row.message = "ending", reason, message
    row.deadline, row.updated = deadline, at
    row.attempts += 1
    return True


@dataclass(frozen=True)
class LedgerEvent:
    """One line of a session's history, for the API."""

    kind: Literal["extension", "warning", "end"]
    user: str
    server: str
    started: datetime
    at: datetime
    detail: dict[str, Any]


def _key_filter(model: Any, key: SessionKey) -> Any:
    return (model.user == key.user) & (model.server == key.name) & (model.started == key.started)


def _on_sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # Wait for another writer (a second culler, an admin's sqlite3 shell) instead of failing.
    cursor.execute("PRAGMA busy_timeout = 10000")
    # Write-ahead logging: a commit is an append, not a rewrite of the file, and readers do not
    # block the writer. NORMAL sync keeps the file consistent after a crash of the culler.
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = NORMAL")
    cursor.close()


class Ledger:
    """Reads and writes the ledger. Calls are short synchronous transactions."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.engine: Engine = create_engine(url, echo=echo, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _on_sqlite_connect)
        _Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # -- extensions -----------------------------------------------------------------------------

    def extended(self, key: SessionKey) -> timedelta:
        """Everything granted to one session so far."""
        with self._session() as db:
            total = db.scalar(
                select(func.sum(_Extension.seconds)).where(_key_filter(_Extension, key))
            )
        return timedelta(seconds=total or 0)

    def extended_since(self, oldest: datetime) -> dict[SessionKey, timedelta]:
        """Extensions of every session started at or after ``oldest``, in one query."""
        with self._session() as db:
            rows = db.execute(
                select(
                    _Extension.user,
                    _Extension.server,
                    _Extension.started,
                    func.sum(_Extension.seconds),
                )
                .where(_Extension.started >= oldest)
                .group_by(_Extension.user, _Extension.server, _Extension.started)
            ).all()
        return {SessionKey(u, s, t): timedelta(seconds=total) for u, s, t, total in rows}

    def add_extension(
        self,
        key: SessionKey,
        amount: timedelta,
        *,
        requested_by: str,
        reason: str,
        hard_deadline: datetime,
        at: datetime,
    ) -> None:
        with self._session() as db:
            db.add(
                _Extension(
                    user=key.user,
                    server=key.name,
                    started=key.started,
                    seconds=amount.total_seconds(),
                    requested_by=requested_by,
                    reason=reason,
                    hard_deadline=hard_deadline,
                    created=at,
                )
            )

    # -- ends -----------------------------------------------------------------------------------

    def end_record(self, key: SessionKey) -> EndRecord | None:
        with self._session() as db:
            row = db.scalar(select(_End).where(_key_filter(_End, key)))
            return None if row is None else self._end(row)

    def ends_since(self, oldest: datetime) -> dict[SessionKey, EndRecord]:
        with self._session() as db:
            rows = db.scalars(select(_End).where(_End.started >= oldest)).all()
            return {SessionKey(r.user, r.server, r.started): self._end(r) for r in rows}

    def unfinished_ends(self) -> list[EndRecord]:
        """Ends decided whose stop was not confirmed (the culler stopped, or the hub failed)."""
        with self._session() as db:
            rows = db.scalars(select(_End).where(_End.status != "ended")).all()
            return [self._end(r) for r in rows]

    @staticmethod
    def _end(row: _End) -> EndRecord:
        key = SessionKey(row.user, row.server, row.started)
        return EndRecord(key, row.reason, row.status, row.attempts)  # type: ignore[arg-type]

    def claim_end(
        self, key: SessionKey, reason: EndReason, message: str, deadline: datetime, at: datetime
    ) -> bool:
        """Record the decision to end ``key`` before stopping it.

        Returns False when the session already has an end record that is not a failure: it is
        being or was ended, and must not be ended again. A failed one is claimed anew.
        """
        try:
            with self._session() as db:
                row = db.scalar(select(_End).where(_key_filter(_End, key)).with_for_update())
                return _claim(db, row, key, reason, message, deadline, at)
        except IntegrityError:
            # Another culler process recorded it between our read and our write.
            return False

    def claim_ends(
        self, claims: list[tuple[SessionKey, EndReason, str, datetime]], at: datetime
    ) -> set[SessionKey]:
        """:meth:`claim_end` for many sessions in one transaction; returns those claimed."""
        if not claims:
            return set()
        keys = {key for key, *_ in claims}
        try:
            with self._session() as db:
                users = sorted({key.user for key in keys})
                rows = {
                    SessionKey(r.user, r.server, r.started): r
                    for r in db.scalars(select(_End).where(_End.user.in_(users)).with_for_update())
                    if SessionKey(r.user, r.server, r.started) in keys
                }
                return {
                    key
                    for key, reason, message, deadline in claims
                    if _claim(db, rows.get(key), key, reason, message, deadline, at)
                }
        except IntegrityError:
            # Another culler recorded some of them meanwhile: claim one by one.
            return {
                key
                for key, reason, message, deadline in claims
                if self.claim_end(key, reason, message, deadline, at)
            }

    def finish_ends(self, outcomes: list[tuple[SessionKey, EndStatus, str]], at: datetime) -> None:
        """Record how the stops went, in one transaction."""
        with self._session() as db:
            for key, status, detail in outcomes:
                db.execute(
                    update(_End)
                    .where(_key_filter(_End, key))
                    .values(status=status, detail=detail[:2000], updated=at)
                )

    def finish_end(self, key: SessionKey, status: EndStatus, detail: str, at: datetime) -> None:
        with self._session() as db:
            row = db.scalar(select(_End).where(_key_filter(_End, key)))
            if row is not None:
                row.status = status
                row.detail = detail[:2000]
                row.updated = at

    # -- warnings -------------------------------------------------------------------------------

    def warned_since(self, oldest: datetime) -> dict[tuple[SessionKey, str, datetime], bool]:
        """(session, reason, deadline) -> delivered, for every warning of sessions since oldest."""
        with self._session() as db:
            rows = db.execute(
                select(
                    _Warning.user,
                    _Warning.server,
                    _Warning.started,
                    _Warning.reason,
                    _Warning.deadline,
                    _Warning.delivered,
                    _Warning.attempts,
                ).where(_Warning.started >= oldest)
            ).all()
        return {
            (SessionKey(u, s, t), reason, deadline): delivered
            for u, s, t, reason, deadline, delivered, _attempts in rows
        }

    def warning_attempts(self, key: SessionKey, reason: str, deadline: datetime) -> int:
        with self._session() as db:
            value = db.scalar(
                select(_Warning.attempts).where(
                    _key_filter(_Warning, key)
                    & (_Warning.reason == reason)
                    & (_Warning.deadline == deadline)
                )
            )
        return value or 0

    def claim_warning(
        self, key: SessionKey, reason: str, deadline: datetime, message: str, at: datetime
    ) -> bool:
        """Record a warning for (session, reason, deadline); False if it was recorded before."""
        try:
            with self._session() as db:
                db.add(
                    _Warning(
                        user=key.user,
                        server=key.name,
                        started=key.started,
                        reason=reason,
                        deadline=deadline,
                        message=message,
                        delivered=False,
                        attempts=0,
                        created=at,
                    )
                )
        except IntegrityError:
            return False
        return True

    def warning_sent(
        self, key: SessionKey, reason: str, deadline: datetime, delivered: bool
    ) -> None:
        with self._session() as db:
            row = db.scalar(
                select(_Warning).where(
                    _key_filter(_Warning, key)
                    & (_Warning.reason == reason)
                    & (_Warning.deadline == deadline)
                )
            )
            if row is not None:
                row.attempts += 1
                row.delivered = row.delivered or delivered

    # -- history --------------------------------------------------------------------------------

    def history(self, users: Iterable[str] | None = None, limit: int = 100) -> list[LedgerEvent]:
        """The newest events first, for ``users`` (every user when None)."""
        names = None if users is None else list(users)
        events: list[LedgerEvent] = []
        with self._session() as db:
            ext = select(_Extension).order_by(_Extension.created.desc()).limit(limit)
            end = select(_End).order_by(_End.created.desc()).limit(limit)
            warn = select(_Warning).order_by(_Warning.created.desc()).limit(limit)
            if names is not None:
                ext = ext.where(_Extension.user.in_(names))
                end = end.where(_End.user.in_(names))
                warn = warn.where(_Warning.user.in_(names))
            for e in db.scalars(ext):
                events.append(
                    LedgerEvent(
                        "extension",
                        e.user,
                        e.server,
                        e.started,
                        e.created,
                        {
                            "seconds": e.seconds,
                            "requested_by": e.requested_by,
                            "reason": e.reason,
                            "hard_deadline": e.hard_deadline,
                        },
                    )
                )
            for c in db.scalars(end):
                events.append(
                    LedgerEvent(
                        "end",
                        c.user,
                        c.server,
                        c.started,
                        c.created,
                        {
                            "reason": c.reason,
                            "message": c.message,
                            "deadline": c.deadline,
                            "status": c.status,
                            "detail": c.detail,
                            "attempts": c.attempts,
                        },
                    )
                )
            for w in db.scalars(warn):
                events.append(
                    LedgerEvent(
                        "warning",
                        w.user,
                        w.server,
                        w.started,
                        w.created,
                        {
                            "reason": w.reason,
                            "deadline": w.deadline,
                            "message": w.message,
                            "delivered": w.delivered,
                        },
                    )
                )
        events.sort(key=lambda event: event.at, reverse=True)
        return events[:limit]
