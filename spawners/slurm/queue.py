"""One scheduler poll for every session: a single ``squeue`` call per interval lists all of the
hub's jobs, and every session's start-wait, poll and stop-confirmation reads that listing.

- The interval is :attr:`QueueSettings.interval` while every session is steady, and
  :attr:`QueueSettings.fast_interval` while any session waits for its job to change (queued ->
  running, running -> gone); :meth:`SlurmQueue.wake` asks for a listing now (coalesced).
- A failed listing (command missing, time-out, controller down) is kept as the queue's
  :attr:`~SlurmQueue.error` and retried with exponential backoff; the previous listing stays, and
  no session is judged on a failed listing.
- A job that has left squeue's listing is confirmed ended by ``sacct`` or, without accounting,
  by ``scontrol show job`` answering "Invalid job id" (:meth:`SlurmQueue.confirm_ended`). Until
  one of them confirms it, the job counts as alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from .commands import SlurmError, run_command
from .status import (
    SACCT_FIELDS,
    SQUEUE_FORMAT,
    VANISHED,
    JobInfo,
    Phase,
    parse_sacct,
    parse_squeue,
    scontrol_says_unknown,
)

__all__ = ["Listing", "QueueSettings", "SlurmQueue"]
#: Names per squeue call: beyond this many sessions the listing takes more than one call.
_NAMES_PER_CALL = 2000


@dataclass(frozen=True)
class QueueSettings:
    squeue: str = "squeue"
    sacct: str = "sacct"
    scontrol: str = "scontrol"
    #: seconds between listings while no session waits for a change
    interval: float = 30.0
    #: seconds between listings while a session waits (start, stop)
    fast_interval: float = 1.0
    #: the longest wait between retries after failures
    max_backoff: float = 60.0
    #: seconds a Slurm command may take
    command_timeout: float = 30.0


@dataclass(frozen=True)
class Listing:
    """One successful squeue listing. ``started`` is the monotonic time the call began, so a job
    submitted before then and missing from ``jobs`` really was not listed."""

    started: float
    jobs: Mapping[str, JobInfo] = field(default_factory=dict)

    def named(self, name: str) -> list[JobInfo]:
        return [job for job in self.jobs.values() if job.name == name]


class SlurmQueue:
    """The shared poller. Create one per hub with :meth:`shared`; spawners call :meth:`watch` for
    their job name while they have a session and read :attr:`listing`."""

    _instances: dict[tuple[QueueSettings, asyncio.AbstractEventLoop | None], SlurmQueue] = {}

    def __init__(self, settings: QueueSettings, log: logging.Logger | None = None) -> None:
        self.settings = settings
        self.log = log or logging.getLogger("berth.slurm")
        self.listing: Listing | None = None
        self.error: SlurmError | None = None
        #: how many squeue calls this queue made (for the hub's log and the benchmark)
        self.calls = 0
        self._names: Counter[str] = Counter()
        self._urgent = 0
        self._failures = 0
        self._wake = asyncio.Event()
        self._round: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_call = float("-inf")
        self._ended: dict[str, JobInfo] = {}
        self._confirming: dict[str, asyncio.Task[JobInfo | None]] = {}

    @classmethod
    def shared(cls, settings: QueueSettings, log: logging.Logger | None = None) -> SlurmQueue:
        """The one queue of this hub process (and event loop) for these settings."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        key = (settings, loop)
        queue = cls._instances.get(key)
        if queue is None:
            queue = cls._instances[key] = cls(settings, log)
        return queue

    # -- who is watched ---------------------------------------------------------------------------
    def watch(self, name: str) -> None:
        """Include jobs named ``name`` in every listing until :meth:`unwatch`."""
        self._names[name] += 1
        if self._names[name] == 1:
            self.wake()
        self._ensure_running()

    def unwatch(self, name: str) -> None:
        if self._names[name] <= 1:
            self._names.pop(name, None)
            if not self._names:
                self.wake()  # let the loop see it has nothing left to list, and end
        else:
            self._names[name] -= 1

    async def close(self) -> None:
        """Stop polling now (the hub is shutting down, or a test ends)."""
        self._names.clear()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._end_round()

    @contextlib.contextmanager
    def urgent(self) -> Iterator[None]:
        """While inside, list every ``fast_interval`` seconds (someone waits for a change)."""
        self._urgent += 1
        self.wake()
        try:
            yield
        finally:
            self._urgent -= 1

    def wake(self) -> None:
        """Ask for a listing as soon as the fast interval allows."""
        self._wake.set()

    # -- waiting for listings ---------------------------------------------------------------------
    async def next_round(self) -> None:
        """Return after the next listing attempt (successful or not)."""
        self._ensure_running()
        if self._round is None or self._round.done():
            self._round = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._round)

    async def fresh_listing(self, since: float) -> Listing | None:
        """Wait for a listing that started at or after ``since`` (monotonic); None if the
        attempt failed (see :attr:`error`)."""
        while self.listing is None or self.listing.started < since:
            self.wake()
            await self.next_round()
            if self.error is not None:
                return None
        return self.listing

    # -- confirming that a job ended --------------------------------------------------------------
    def ended(self, job_id: str) -> JobInfo | None:
        """What Slurm confirmed about a job that ended, if it did."""
        return self._ended.get(job_id)

    async def confirm_ended(self, job_id: str) -> JobInfo | None:
        """Ask sacct (then scontrol) about a job squeue no longer lists; the job's final record if
        Slurm confirms it ended, None if it could not say (the job then counts as alive)."""
        if job_id in self._ended:
            return self._ended[job_id]
        task = self._confirming.get(job_id)
        if task is None:
            task = self._confirming[job_id] = asyncio.ensure_future(self._confirm(job_id))
            task.add_done_callback(lambda _: self._confirming.pop(job_id, None))
        return await asyncio.shield(task)

    async def _confirm(self, job_id: str) -> JobInfo | None:
        timeout = self.settings.command_timeout
        try:
            out = await run_command(
                [
                    self.settings.sacct,
                    "--allusers",
                    "-X",
                    "-n",
                    "-P",
                    "-j",
                    job_id,
                    f"--format={SACCT_FIELDS}",
                ],
                limit=timeout,
            )
            record = parse_sacct(out, job_id)
            if record is not None:
                if record.phase is Phase.ENDED:
                    self._ended[job_id] = record
                    return record
                return None  # sacct still sees it alive: squeue's listing raced with it
        except SlurmError as e:
            self.log.debug("sacct could not confirm job %s: %s", job_id, e)
        try:
            await run_command([self.settings.scontrol, "show", "job", job_id], limit=timeout)
            return None  # the controller still knows it
        except SlurmError as e:
            if not e.transient and scontrol_says_unknown(e.stderr):
                record = JobInfo(job_id=job_id, name="", state=VANISHED, user="")
                self._ended[job_id] = record
                return record
            self.log.warning("Could not confirm whether Slurm job %s ended: %s", job_id, e)
            return None

    # -- the loop ---------------------------------------------------------------------------------
    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def _delay(self) -> float:
        settings = self.settings
        if self._failures:
            backoff = settings.fast_interval * 2.0 ** min(self._failures, 16)
            return float(min(settings.max_backoff, backoff))
        return settings.fast_interval if self._urgent else settings.interval

    async def _sleep_until_due(self) -> None:
        while True:
            now = time.monotonic()
            due = self._last_call + self._delay()
            if self._wake.is_set() and not self._failures:
                due = min(due, self._last_call + self.settings.fast_interval)
            if now >= due or not self._names:
                return
            if self._wake.is_set():
                await asyncio.sleep(due - now)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), due - now)

    async def _run(self) -> None:
        while self._names:
            await self._sleep_until_due()
            if not self._names:
                break
            self._wake.clear()
            try:
                await self._list()
            except Exception:  # never let the poller die; the next round retries
                self.log.exception("Listing Slurm jobs failed unexpectedly")
                self._failures += 1
            self._end_round()
        self._end_round()

    def _end_round(self) -> None:
        if self._round is not None and not self._round.done():
            self._round.set_result(None)

    async def _list(self) -> None:
        names = sorted(self._names)
        started = self._last_call = time.monotonic()
        jobs: dict[str, JobInfo] = {}
        try:
            for i in range(0, len(names), _NAMES_PER_CALL):
                self.calls += 1
                out = await run_command(
                    [
                        self.settings.squeue,
                        "--noheader",
                        "--all",
                        "--states=all",
                        f"--name={','.join(names[i : i + _NAMES_PER_CALL])}",
                        f"--format={SQUEUE_FORMAT}",
                    ],
                    limit=self.settings.command_timeout,
                )
                jobs.update((job.job_id, job) for job in parse_squeue(out))
        except SlurmError as e:
            self._failures += 1
            if self.error is None or str(self.error) != str(e):
                self.log.warning("Listing Slurm jobs failed (retrying with backoff): %s", e)
            self.error = e
            return
        if self.error is not None:
            self.log.info("Slurm answers again after %d failed listings", self._failures)
        self._failures = 0
        self.error = None
        for job in jobs.values():
            if job.phase is Phase.ENDED:
                self._ended.setdefault(job.job_id, job)
        self.listing = Listing(started, jobs)
