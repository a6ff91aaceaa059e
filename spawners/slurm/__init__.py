"""The Slurm backend: Berth sessions as Slurm jobs (``c.JupyterHub.spawner_class = "berth-slurm"``).

- :mod:`.render`: launch spec -> sbatch arguments and batch script (pure)
- :mod:`.names`: deterministic job names
- :mod:`.commands`: running Slurm commands, transient vs refused errors
- :mod:`.status`, :mod:`.reasons`: what squeue/sacct say, and pending reasons in plain words
- :mod:`.queue`: the one shared squeue poller
- :mod:`.api`: the hub endpoint a job reports its port to; :func:`slurm_handlers` registers it
- :mod:`.job`: ``berth-slurm-job``, run by the batch script on the compute node
- :mod:`.spawner`: :class:`BerthSlurmSpawner`, the lifecycle

The spawner and the hub handlers are imported on first use, so that ``berth-slurm-job`` on a
compute node and the pure modules do not load JupyterHub's spawner machinery or batchspawner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import slurm_handlers
    from .spawner import BerthSlurmSpawner, SlurmSpawnError

__all__ = ["BerthSlurmSpawner", "SlurmSpawnError", "slurm_handlers"]


def __getattr__(name: str) -> Any:
    if name in ("BerthSlurmSpawner", "SlurmSpawnError"):
        from . import spawner

        return getattr(spawner, name)
    if name == "slurm_handlers":
        from . import api

        return api.slurm_handlers
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
