"""Parsing what Slurm says, pending reasons in plain words, the port report body, the launcher."""

from __future__ import annotations

from datetime import datetime

import pytest
from tornado import web

from berth.spawners.slurm.api import parse_port_report
from berth.spawners.slurm.job import service_url
from berth.spawners.slurm.reasons import describe_reason, describe_start, queued_message
from berth.spawners.slurm.status import (
    JobInfo,
    Phase,
    parse_sacct,
    parse_squeue,
    phase_of,
    scontrol_says_unknown,
)

# Real output of `squeue --noheader --all --states=all --format=%i|%j|%T|%r|%B|%S|%u` on the dev
# cluster, plus a line of noise.
SQUEUE = """\
12|berth.alice.nb|RUNNING|None|berth-node|2026-11-21T05:42:45|alice
13|berth.alice.gpu|PENDING|QOSMaxGRESPerUser|n/a|N/A|alice
14|berth.bob.x|PENDING|Resources|n/a|2026-11-21T07:10:00|bob
9|berth.alice.old|CANCELLED|None|berth-node|2026-11-21T04:00:00|alice
slurm_load_jobs error: something
"""


def test_parse_squeue() -> None:
    jobs = parse_squeue(SQUEUE)
    assert jobs == [
        JobInfo("12", "berth.alice.nb", "RUNNING", "alice", "", "berth-node",
                datetime(2026, 11, 21, 5, 42, 45)),
        JobInfo("13", "berth.alice.gpu", "PENDING", "alice", "QOSMaxGRESPerUser", "", None),
        JobInfo("14", "berth.bob.x", "PENDING", "bob", "Resources", "",
                datetime(2026, 11, 21, 7, 10)),
        JobInfo("9", "berth.alice.old", "CANCELLED", "alice", "", "berth-node",
                datetime(2026, 11, 21, 4, 0)),
    ]  # fmt: skip
    assert [job.phase for job in jobs] == [Phase.RUNNING, Phase.QUEUED, Phase.QUEUED, Phase.ENDED]


def test_parse_sacct() -> None:
    out = "7|berth.alice.nb|CANCELLED by 0|0:15|alice\n"
    job = parse_sacct(out, "7")
    assert job == JobInfo("7", "berth.alice.nb", "CANCELLED by 0", "alice", exit_code="0:15")
    assert job.phase is Phase.ENDED
    assert parse_sacct(out, "8") is None
    assert parse_sacct("", "7") is None


@pytest.mark.parametrize(
    ("state", "phase"),
    [
        ("PENDING", Phase.QUEUED),
        ("CONFIGURING", Phase.QUEUED),
        ("REQUEUE_HOLD", Phase.QUEUED),
        ("RUNNING", Phase.RUNNING),
        ("COMPLETING", Phase.ENDING),
        ("COMPLETED", Phase.ENDED),
        ("FAILED", Phase.ENDED),
        ("TIMEOUT", Phase.ENDED),
        ("OUT_OF_MEMORY", Phase.ENDED),
        ("NODE_FAIL", Phase.ENDED),
        ("CANCELLED by 1001", Phase.ENDED),
        ("CANCELLED+", Phase.ENDED),
        ("VANISHED", Phase.ENDED),
        ("SOMETHING_NEW", None),
    ],
)
def test_phases(state: str, phase: Phase | None) -> None:
    assert phase_of(state) is phase


def test_scontrol_unknown_job() -> None:
    assert scontrol_says_unknown("slurm_load_jobs error: Invalid job id specified\n")
    assert not scontrol_says_unknown("slurm_load_jobs error: Unable to contact slurm controller")


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("Priority", "other jobs with a higher priority are ahead in the queue (Priority)"),
        ("Resources", "waiting for CPUs, memory or GPUs to free up (Resources)"),
        ("(Resources)", "waiting for CPUs, memory or GPUs to free up (Resources)"),
        ("QOSMaxGRESPerUser",
         "you already use the most GPUs or other generic resources the QOS allows one user at a"
         " time (QOSMaxGRESPerUser)"),
        ("QOSGrpGRES", "the QOS has reached its total limit of GPUs or other generic resources"
                       " (QOSGrpGRES)"),
        ("AssocGrpCpuLimit", "your account has reached its total limit of CPUs (AssocGrpCpuLimit)"),
        ("QOSMaxWallDurationPerJobLimit",
         "it asks for more run time per job than the QOS allows (QOSMaxWallDurationPerJobLimit)"),
        ("QOSMaxJobsPerUserLimit",
         "you already use the most running jobs the QOS allows one user at a time"
         " (QOSMaxJobsPerUserLimit)"),
        ("PartitionDown",
         "the partition is down; ask the cluster's administrators (PartitionDown)"),
        ("SomethingNew", "Slurm says: SomethingNew"),
        ("", "waiting for the scheduler"),
    ],
)  # fmt: skip
def test_reasons_in_plain_words(code: str, words: str) -> None:
    assert describe_reason(code) == words


def test_expected_start() -> None:
    now = datetime(2026, 11, 21, 14, 0)
    assert describe_start(None, now) == ""
    assert describe_start(datetime(2026, 11, 21, 14, 12), now) == (
        "expected start 14:12 (in 12 minutes)"
    )
    assert (
        describe_start(datetime(2026, 11, 21, 14, 1), now) == "expected start 14:01 (in 1 minute)"
    )
    assert describe_start(datetime(2026, 11, 22, 2, 0), now) == (
        "expected start 2026-11-22 02:00 (in 12.0 hours)"
    )
    assert describe_start(datetime(2026, 11, 21, 13, 0), now) == "expected start 13:00 (now)"
    assert queued_message("42", "gpu", "Resources", datetime(2026, 11, 21, 14, 30), now) == (
        "Job 42 is queued in partition gpu: waiting for CPUs, memory or GPUs to free up"
        " (Resources); expected start 14:30 (in 30 minutes)"
    )
    assert queued_message("42", None, "Priority", None, now) == (
        "Job 42 is queued: other jobs with a higher priority are ahead in the queue (Priority)"
    )


def test_port_report_accepts_one_integer_port() -> None:
    assert parse_port_report(b'{"port": 8888}') == 8888
    assert parse_port_report(b'{"port":1}') == 1


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"8888",
        b"not json",
        b'{"port": "8888"}',
        b'{"port": 8888.0}',
        b'{"port": true}',
        b'{"port": 0}',
        b'{"port": 65536}',
        b'{"port": -1}',
        b'{"port": null}',
        b'{"port": 8888, "ip": "10.0.0.1"}',
        b'{"ip": "evil", "port": 8888}',
        b'{"server": {"ip": "x"}}',
        b'[{"port": 8888}]',
        b'{"port": 8888, "cmd": ["id"]}',
        b'{"port": 8' + b"8" * 2000 + b"}",
        b"\xff\xfe",
    ],
)
def test_port_report_refuses_everything_else(body: bytes) -> None:
    with pytest.raises(web.HTTPError) as info:
        parse_port_report(body)
    assert info.value.status_code == 400


def test_service_url_keeps_scheme_and_path() -> None:
    assert service_url("http://0.0.0.0:0/user/alice/nb/", "10.1.0.11", 4321) == (
        "http://10.1.0.11:4321/user/alice/nb/"
    )
    assert service_url("https://x:1/user/a%40b/s/", "::1", 80) == "https://[::1]:80/user/a%40b/s/"
    assert service_url("", "127.0.0.1", 5) == "http://127.0.0.1:5/"
