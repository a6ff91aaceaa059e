"""What Slurm says about jobs: the squeue listing and sacct's record, parsed. Pure functions.

The hub lists every Berth job with one ``squeue`` call (see :mod:`berth.spawners.slurm.queue`)
using :data:`SQUEUE_FORMAT`; :func:`parse_squeue` turns its output into :class:`JobInfo`.
When a job has left squeue's listing, ``sacct`` (:data:`SACCT_FIELDS`, :func:`parse_sacct`) or,
without accounting, ``scontrol show job`` (:func:`scontrol_says_unknown`) confirms that it ended.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "SACCT_FIELDS",
    "SQUEUE_FORMAT",
    "VANISHED",
    "JobInfo",
    "Phase",
    "parse_sacct",
    "parse_squeue",
    "phase_of",
    "scontrol_says_unknown",
]

#: squeue --format: job id, name, state, reason, batch host, (expected) start, user.
SQUEUE_FORMAT = "%i|%j|%T|%r|%B|%S|%u"
#: sacct --format for one job's allocation.
SACCT_FIELDS = "JobID,JobName,State,ExitCode,User"
#: Berth's state for a job that neither squeue nor sacct lists and scontrol calls invalid.
VANISHED = "VANISHED"


class Phase(enum.Enum):
    """Where a job is, in the terms a session cares about."""

    QUEUED = "queued"  # waiting for resources, held, being configured or requeued
    RUNNING = "running"
    ENDING = "ending"  # its processes are finishing (COMPLETING, SIGNALING, STAGE_OUT)
    ENDED = "ended"


_QUEUED = {
    "PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
    "SUSPENDED", "STOPPED", "RESIZING",
}  # fmt: skip
_RUNNING = {"RUNNING"}
_ENDING = {"COMPLETING", "SIGNALING", "STAGE_OUT"}
_ENDED = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT", VANISHED,
}  # fmt: skip


def phase_of(state: str) -> Phase | None:
    """The phase of a Slurm state name (``CANCELLED by 0`` counts as CANCELLED); None if unknown."""
    word = state.split(" ", 1)[0].rstrip("+")
    if word in _QUEUED:
        return Phase.QUEUED
    if word in _RUNNING:
        return Phase.RUNNING
    if word in _ENDING:
        return Phase.ENDING
    if word in _ENDED:
        return Phase.ENDED
    return None


@dataclass(frozen=True)
class JobInfo:
    """One job as squeue or sacct shows it."""

    job_id: str
    name: str
    state: str
    user: str
    reason: str = ""
    host: str = ""
    #: when a queued job is expected to start (if Slurm has estimated it), or when it started
    start: datetime | None = None
    exit_code: str = ""

    @property
    def phase(self) -> Phase | None:
        return phase_of(self.state)


def _time(text: str) -> datetime | None:
    if text in ("", "N/A", "Unknown", "None"):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _field(text: str) -> str:
    return "" if text in ("n/a", "(null)", "None") else text


def parse_squeue(output: str) -> list[JobInfo]:
    """Parse ``squeue --noheader --format=SQUEUE_FORMAT``; lines that do not fit are skipped."""
    jobs = []
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 7 or not parts[0].isdigit():
            continue
        job_id, name, state, reason, host, start, user = parts
        jobs.append(
            JobInfo(
                job_id=job_id,
                name=name,
                state=state,
                user=user,
                reason=_field(reason),
                host=_field(host),
                start=_time(start),
            )
        )
    return jobs


def parse_sacct(output: str, job_id: str) -> JobInfo | None:
    """Parse ``sacct -X -n -P -j ID --format=SACCT_FIELDS``; None if the job is not there."""
    for line in output.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5 or parts[0] != job_id:
            continue
        _, name, state, exit_code, user = parts
        return JobInfo(job_id=job_id, name=name, state=state, user=user, exit_code=exit_code)
    return None


def scontrol_says_unknown(stderr: str) -> bool:
    """``scontrol show job ID`` answered that the controller does not know the job."""
    return "Invalid job id specified" in stderr
