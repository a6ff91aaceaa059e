"""Deterministic Slurm job names for sessions.

A session's job name is ``<prefix>.<user>.<session>`` with the user and session names escaped so
that the name is plain ASCII (letters, digits, ``-`` and ``_xx`` escapes) and the two dots only
ever separate the three parts. The name is how the hub finds a job it submitted just before it
was killed, before it could record the job id.
"""

from __future__ import annotations

import re

__all__ = ["JOB_NAME_PREFIX_PATTERN", "escape_name", "session_job_name"]

#: What an admin may choose as the prefix of every job name of one hub.
JOB_NAME_PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,31}$")
_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")


def escape_name(name: str) -> str:
    """Keep ASCII letters, digits and ``-``; write every other byte of the UTF-8 as ``_xx``."""
    return "".join(chr(b) if b in _SAFE else f"_{b:02x}" for b in name.encode("utf-8"))


def session_job_name(prefix: str, user: str, session: str) -> str:
    """The job name of one session; ``session`` is ``""`` for a user's default server."""
    if not JOB_NAME_PREFIX_PATTERN.match(prefix):
        raise ValueError(f"job name prefix {prefix!r} must match {JOB_NAME_PREFIX_PATTERN.pattern}")
    return f"{prefix}.{escape_name(user)}.{escape_name(session)}"
