"""Slurm's pending reasons in plain words, for the hub's pending page and progress API. Pure.

``describe_reason("Resources")`` -> "waiting for CPUs, memory or GPUs to free up". Limit codes
such as ``QOSMaxGRESPerUser`` or ``AssocGrpCpuLimit`` are read part by part; a code this module
does not know is shown as Slurm wrote it.
"""

from __future__ import annotations

import re
from datetime import datetime

__all__ = ["describe_reason", "describe_start", "queued_message"]

_REASONS = {
    "None": "waiting for the scheduler to consider the job",
    "WaitingForScheduling": "waiting for the scheduler to consider the job",
    "Priority": "other jobs with a higher priority are ahead in the queue",
    "Resources": "waiting for CPUs, memory or GPUs to free up",
    "Dependency": "waiting for another job it depends on",
    "DependencyNeverSatisfied": "it depends on a job that will never finish as required",
    "BeginTime": "its earliest start time has not come yet",
    "JobHeldUser": "held by you (scontrol release lets it run)",
    "JobHeldAdmin": "held by an administrator",
    "Licenses": "waiting for a license",
    "NodeDown": "a node it needs is down",
    "PartitionDown": "the partition is down; ask the cluster's administrators",
    "PartitionInactive": "the partition is not running jobs at the moment",
    "PartitionNodeLimit": "it needs more nodes than the partition allows or has available",
    "PartitionTimeLimit": "its time limit is longer than the partition allows",
    "ReqNodeNotAvail": "a node it needs is not available (in use, reserved, down or drained)",
    "Reservation": "waiting for its reservation to start",
    "InvalidAccount": "its account is not valid; ask the cluster's administrators",
    "InvalidQOS": "its QOS is not valid; ask the cluster's administrators",
    "BadConstraints": "no node matches its constraints",
    "Cleaning": "the previous run of the job is still being cleaned up",
    "Prolog": "the cluster's prolog is still running",
    "JobLaunchFailure": "the job could not be launched",
    "SystemFailure": "Slurm, a file system or the network failed",
    "QOSUsageThreshold": "the QOS's usage threshold is reached",
    "AssociationJobLimit": "your account has reached its limit of jobs",
    "AssociationResourceLimit": "your account has reached a resource limit",
    "AssociationTimeLimit": "your account has reached its time limit",
    "QOSJobLimit": "the QOS has reached its limit of jobs",
    "QOSResourceLimit": "the QOS has reached a resource limit",
    "QOSTimeLimit": "the QOS has reached its time limit",
}

_LIMIT = re.compile(
    r"^(?P<owner>QOS|Assoc)(?P<kind>Grp|Max)(?P<what>[A-Za-z]+?)"
    r"(?P<scope>PerUser|PerAccount|PerJob|PerNode)?(?:Limit)?$"
)
_RESOURCES = {
    "Cpu": "CPUs",
    "CpuMin": "CPU-minutes",
    "CpuRunMins": "CPU-minutes of running jobs",
    "Mem": "memory",
    "Memory": "memory",
    "MemMin": "memory-minutes",
    "MemRunMins": "memory-minutes of running jobs",
    "GRES": "GPUs or other generic resources",
    "GRESMin": "GPU-minutes",
    "GRESRunMinutes": "GPU-minutes of running jobs",
    "Node": "nodes",
    "NodeMin": "node-minutes",
    "Jobs": "running jobs",
    "SubmitJob": "queued jobs",
    "Wall": "run time",
    "WallDuration": "run time",
    "Billing": "billing units",
    "BB": "burst buffer",
    "Energy": "energy",
    "License": "licenses",
}
_SCOPES = {
    "PerUser": " per user",
    "PerAccount": " per account",
    "PerJob": " per job",
    "PerNode": " per node",
    None: "",
}


def describe_reason(code: str) -> str:
    """Plain words for a Slurm reason code, ending with the code itself in brackets."""
    code = code.strip().strip("()")
    if not code:
        return "waiting for the scheduler"
    if code in _REASONS:
        return f"{_REASONS[code]} ({code})"
    match = _LIMIT.match(code)
    if match and match.group("what") in _RESOURCES:
        owner = "the QOS" if match.group("owner") == "QOS" else "your account"
        resource = _RESOURCES[match.group("what")]
        scope = _SCOPES[match.group("scope")]
        if match.group("kind") == "Grp":
            text = f"{owner} has reached its total limit of {resource}{scope}"
        elif match.group("scope") == "PerUser":
            text = f"you already use the most {resource} {owner} allows one user at a time"
        else:
            text = f"it asks for more {resource}{scope} than {owner} allows"
        return f"{text} ({code})"
    return f"Slurm says: {code}"


def describe_start(expected: datetime | None, now: datetime) -> str:
    """``expected start 14:05 (in 12 minutes)``; empty when Slurm has no estimate yet."""
    if expected is None:
        return ""
    minutes = max(0, round((expected - now).total_seconds() / 60))
    when = (
        expected.strftime("%H:%M")
        if expected.date() == now.date()
        else (expected.strftime("%Y-%m-%d %H:%M"))
    )
    if minutes == 0:
        return f"expected start {when} (now)"
    if minutes < 120:
        return f"expected start {when} (in {minutes} minute{'s' * (minutes != 1)})"
    return f"expected start {when} (in {minutes / 60:.1f} hours)"


def queued_message(
    job_id: str, partition: str | None, reason: str, expected: datetime | None, now: datetime
) -> str:
    """The progress line for a queued job."""
    where = f" in partition {partition}" if partition else ""
    start = describe_start(expected, now)
    return f"Job {job_id} is queued{where}: {describe_reason(reason)}" + (
        f"; {start}" if start else ""
    )
