"""The service process: started in its own process group, its output kept, stopped without orphans.

The service runs in a new session (so a new process group whose id is its pid): stopping it sends
SIGTERM to the whole group, waits ``grace`` seconds, then SIGKILLs whatever is left. On Linux the
service also gets SIGKILL if the gate itself dies without cleaning up (``PR_SET_PDEATHSIG``).
Its output goes on to the gate's stderr (so the job or pod log has it) and the last lines are
kept for the "failed to start" page.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
from collections import deque
from collections.abc import Mapping, Sequence

__all__ = ["ServiceProcess", "exit_code"]

log = logging.getLogger("berth.gate")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def exit_code(returncode: int) -> int:
    """A shell-style exit status: negative return codes (killed by a signal) become 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class ServiceProcess:
    """One child command and its process group."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        keep_lines: int = 40,
        echo: bool = True,
    ) -> None:
        self.argv = tuple(argv)
        self.env = dict(env)
        self.output: deque[str] = deque(maxlen=keep_lines)
        self.echo = echo
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self.stopping = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    async def start(self) -> None:
        """Start the command; raise OSError (with the program's name) if it cannot run."""
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        self._process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=preexec,
        )
        self._reader = asyncio.create_task(self._read_output())

    async def _read_output(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        stream = self._process.stdout
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the stream limit: take it in pieces
                line = await stream.read(65536)
            if not line:
                return
            if self.echo:
                sys.stderr.buffer.write(line)
                sys.stderr.buffer.flush()
            self.output.append(line.decode("utf-8", "replace").rstrip("\r\n"))

    async def wait(self) -> int:
        """Wait for the service to exit; return its shell-style exit status."""
        assert self._process is not None
        returncode = await self._process.wait()
        # Whatever the leader left behind in its group goes with it.
        self._signal_group(signal.SIGKILL)
        if self._reader is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 2)
        return exit_code(returncode)

    def _signal_group(self, signum: int) -> bool:
        if self._process is None:
            return False
        try:
            os.killpg(self._process.pid, signum)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    async def stop(self, grace: float) -> int:
        """SIGTERM the group, SIGKILL it after ``grace`` seconds; return the exit status.

        A service that ends from the SIGTERM it was sent counts as a clean stop (0); one that had
        to be killed returns 137.
        """
        assert self._process is not None
        self.stopping = True
        if self._process.returncode is None:
            log.info("Stopping the service (process group %d)", self._process.pid)
            self._signal_group(signal.SIGTERM)
            try:
                returncode = await asyncio.wait_for(self._process.wait(), grace)
            except TimeoutError:
                log.warning("The service did not stop within %gs; killing it", grace)
                self._signal_group(signal.SIGKILL)
                await self._process.wait()
                self._signal_group(signal.SIGKILL)
                return exit_code(-signal.SIGKILL)
            self._signal_group(signal.SIGKILL)
            if returncode in (-signal.SIGTERM, 128 + signal.SIGTERM):
                return 0
            return exit_code(returncode)
        return await self.wait()
