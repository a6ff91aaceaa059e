"""Stand-ins the test hubs load (never used by Berth itself).

:class:`QueuedLocalSpawner` is the local backend with a pretend scheduler queue in front: a
session whose name starts with ``q-`` waits, reporting what the Slurm backend reports for a
pending job (its reason and expected start), until the test creates the file
``<BERTH_TEST_RELEASE_DIR>/<name>``; then it starts as a real local session. It lets the CLI and
page tests watch a queued session on a machine without a scheduler. A session whose name starts
with ``fail-`` fails at once, as a job that ends before its service is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from berth.spawners.local import BerthLocalSpawner

from .hubtest import ROOT, Hub, running_hub

QUEUED_PREFIX = "q-"
FAILING_PREFIX = "fail-"
#: What the Slurm backend says when a job ends before its service is up.
FAILURE = (
    "Slurm job 4243 ended (FAILED) before the session was up. Its last lines:\n"
    "module: command not found\n"
    "srun: error: node1: task 0: Exited with exit code 127"
)


def queued_message(now: datetime) -> str:
    start = now + timedelta(minutes=12)
    return (
        "Job 4242 is queued in partition gpu: waiting for GPUs to be free (Resources);"
        f" expected start {start:%H:%M} (in 12 minutes)"
    )


class QueuedLocalSpawner(BerthLocalSpawner):
    _released: asyncio.Event | None = None

    @property
    def released(self) -> asyncio.Event:
        if self._released is None:
            self._released = asyncio.Event()
        return self._released

    @property
    def _release_file(self) -> Path:
        return Path(os.environ["BERTH_TEST_RELEASE_DIR"]) / self.name

    async def start(self) -> Any:
        if self.name.startswith(FAILING_PREFIX):
            raise RuntimeError(FAILURE)
        if self.name.startswith(QUEUED_PREFIX):
            self._released = asyncio.Event()
            while not self._release_file.exists():  # noqa: ASYNC110 - the test makes the file
                await asyncio.sleep(0.1)
            self.released.set()
        return await super().start()

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        if not self.name.startswith(QUEUED_PREFIX):
            return
        yield {"progress": 30, "message": queued_message(datetime.now())}
        await self.released.wait()
        yield {"progress": 60, "message": "Job 4242 is running on node1; starting the session"}


#: Hub settings for a hub with the stand-in queue and four pretend GPU ids (CUDA_VISIBLE_DEVICES
#: is set, nothing uses them), where the hub answers a start at once (202) and streams progress.
STAND_IN_CONFIG = """
c.JupyterHub.spawner_class = "tests.stand_ins.QueuedLocalSpawner"
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}
c.BerthLocalSpawner.gpu_ids = ["0", "1", "2", "3"]
"""


@contextlib.contextmanager
def stand_in_hub(directory: Path, extra_config: str = "") -> Iterator[Hub]:
    """A real hub whose sessions named q-* wait in the stand-in queue until :func:`release`."""
    release_dir = directory / "release"
    release_dir.mkdir(parents=True, exist_ok=True)
    env = {"PYTHONPATH": str(ROOT), "BERTH_TEST_RELEASE_DIR": str(release_dir)}
    with running_hub(directory, extra_config=STAND_IN_CONFIG + extra_config, env=env) as hub:
        yield hub


def release(hub: Hub, name: str) -> None:
    """Let the queued session ``name`` start."""
    (hub.dir / "release" / name).touch()
