"""The shared poller: one squeue for every watched job, transient failures, confirming ends."""

from __future__ import annotations

import asyncio
import stat
import time
from pathlib import Path

import pytest

from berth.spawners.slurm.commands import RunAs, SlurmRefused, SlurmUnavailable, run_command
from berth.spawners.slurm.queue import QueueSettings, SlurmQueue
from berth.spawners.slurm.status import Phase

from .slurm_support import ALICE, BOB, cancel_named, cluster, sbatch, unique_prefix

__all__ = ["cluster"]

FAST = QueueSettings(interval=0.05, fast_interval=0.05, max_backoff=0.4, command_timeout=20)


def logging_squeue(tmp_path: Path) -> tuple[str, Path]:
    """A squeue in front of the real one that logs each call, and fails while `down` exists."""
    log, down = tmp_path / "calls", tmp_path / "down"
    script = tmp_path / "squeue"
    script.write_text(
        "#!/bin/sh\n"
        f'echo call >> "{log}"\n'
        f'if [ -e "{down}" ]; then\n'
        '  echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2\n'
        "  exit 1\n"
        "fi\n"
        'exec squeue "$@"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script), log


def calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.slurm
async def test_one_listing_serves_every_session(cluster: None, tmp_path: Path) -> None:
    squeue, log = logging_squeue(tmp_path)
    prefix = unique_prefix()
    names = [f"{prefix}.{user}.s{i}" for user in (ALICE, BOB) for i in range(5)]
    ids = {name: sbatch(name.split(".")[1], name, "--hold") for name in names}
    queue = SlurmQueue(QueueSettings(squeue=squeue, interval=3600, fast_interval=0.05))
    try:
        for name in names:
            queue.watch(name)
        listing = await queue.fresh_listing(time.monotonic())
        assert listing is not None
        assert calls(log) == 1  # ten sessions, one squeue
        assert {job.name: job.job_id for job in listing.jobs.values()} == ids
        job = listing.jobs[ids[names[0]]]
        assert (job.user, job.phase, job.reason) == (ALICE, Phase.QUEUED, "JobHeldUser")
    finally:
        cancel_named(*names)
        await queue.close()


@pytest.mark.slurm
async def test_confirms_ends_with_sacct_and_scontrol(cluster: None) -> None:
    prefix = unique_prefix()
    job_id = sbatch(ALICE, f"{prefix}.a.b", wrap="true")
    queue = SlurmQueue(FAST)
    # the job runs `true` and ends; sacct (slurmdbd) records it
    for _ in range(100):
        record = await queue.confirm_ended(job_id)
        if record is not None:
            break
        await asyncio.sleep(0.2)
    assert record is not None
    assert (record.state, record.phase, record.user) == ("COMPLETED", Phase.ENDED, ALICE)
    # a job id Slurm never had: no sacct record, scontrol says "Invalid job id"
    gone = await queue.confirm_ended("987654321")
    assert gone is not None and gone.phase is Phase.ENDED


@pytest.mark.slurm
async def test_a_running_job_is_not_confirmed_ended(cluster: None) -> None:
    prefix = unique_prefix()
    job_id = sbatch(ALICE, f"{prefix}.a.b", "--hold")
    try:
        assert await SlurmQueue(FAST).confirm_ended(job_id) is None
    finally:
        cancel_named(f"{prefix}.a.b")


@pytest.mark.slurm
async def test_failed_listings_keep_the_last_one_and_back_off(
    cluster: None, tmp_path: Path
) -> None:
    squeue, _ = logging_squeue(tmp_path)
    name = f"{unique_prefix()}.x.y"
    job_id = sbatch(ALICE, name, "--hold")
    queue = SlurmQueue(QueueSettings(squeue=squeue, interval=0.05, fast_interval=0.05,
                                     max_backoff=0.2))  # fmt: skip
    try:
        queue.watch(name)
        first = await queue.fresh_listing(time.monotonic())
        assert first is not None and job_id in first.jobs
        (tmp_path / "down").touch()
        assert await queue.fresh_listing(time.monotonic()) is None
        assert isinstance(queue.error, SlurmUnavailable)
        assert "Unable to contact slurm controller" in str(queue.error)
        assert queue.listing is first  # the session still has what Slurm last said
        delays = []
        for _ in range(4):
            await queue.next_round()
            delays.append(queue._delay())
        assert delays == sorted(delays) and delays[-1] == 0.2  # backoff, capped
        (tmp_path / "down").unlink()
        listing = await queue.fresh_listing(time.monotonic())
        assert listing is not None and listing is not first and queue.error is None
        assert job_id in listing.jobs
    finally:
        cancel_named(name)
        await queue.close()


async def test_missing_command_is_transient_and_says_so() -> None:
    queue = SlurmQueue(QueueSettings(squeue="/nonexistent/squeue", fast_interval=0.01,
                                     max_backoff=0.02))  # fmt: skip
    queue.watch("x.y.z")
    try:
        assert await queue.fresh_listing(time.monotonic()) is None
        assert isinstance(queue.error, SlurmUnavailable)
        assert "/nonexistent/squeue is not installed on the hub machine" in str(queue.error)
    finally:
        await queue.close()


async def test_run_command_sorts_errors(tmp_path: Path) -> None:
    with pytest.raises(SlurmUnavailable, match=r"did not answer within 0\.2 seconds"):
        await run_command(["sleep", "5"], limit=0.2)
    with pytest.raises(SlurmRefused, match="sbatch: error: Invalid qos specification"):
        await run_command(
            ["sh", "-c", "echo 'sbatch: error: Invalid qos specification' >&2; exit 1"],
            limit=5,
        )
    assert await run_command(["cat"], input="hello", limit=5) == "hello"
    with pytest.raises(SlurmRefused, match="no system user 'no-such-user-here'"):
        await run_command(["true"], limit=5, run_as=RunAs("setuid", "no-such-user-here"))


@pytest.mark.slurm
async def test_run_command_as_the_user(cluster: None) -> None:
    assert (
        await run_command(["id", "-un"], limit=5, run_as=RunAs("setuid", ALICE))
    ).strip() == ALICE
    groups = (await run_command(["id", "-G", ALICE], limit=5)).split()
    out = await run_command(["id", "-G"], limit=5, run_as=RunAs("setuid", ALICE))
    assert sorted(out.split()) == sorted(groups)
