"""Render a launch spec as a Slurm batch job: the sbatch command line and the batch script.

:func:`render_batch_job` is pure. Scheduler options (partition, resources, wall time...) go on
sbatch's command line, one argument each, never through a shell; the script only sets the
catalog's environment, runs the admin's setup lines and execs the launcher with the session's
command, every word shell-quoted. Every value is checked before it is used; a value that does not
pass raises :class:`RenderError` and nothing is submitted.

The hub's own variables for the session (``JUPYTERHUB_API_TOKEN``...) are not in the script: they
reach the job through sbatch's environment (``--export=ALL`` of an environment the spawner builds).
"""

from __future__ import annotations

import ipaddress
import math
import re
import shlex
from dataclasses import dataclass
from datetime import timedelta

from berth.hub_config.patterns import CONSTRAINT as _CONSTRAINT
from berth.hub_config.patterns import CONTROL as _CONTROL
from berth.hub_config.patterns import ENV_NAME as _ENV_NAME
from berth.hub_config.patterns import SCHEDULER_NAME
from berth.spawners.spec import LaunchSpec

__all__ = [
    "MANAGED_OPTIONS",
    "BatchJob",
    "JobSettings",
    "RenderError",
    "format_time_limit",
    "render_batch_job",
]

#: Scheduler names (partition, account, qos, reservation, gpu type), as the catalog allows them.
_SLURM_NAME = SCHEDULER_NAME
_JOB_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_PATH = re.compile(r"^/[^\x00-\x1f\x7f]*$")
_OPTION = re.compile(r"^--([a-z][a-z-]*)(=[^\x00-\x1f\x7f]*)?$")

#: sbatch options Berth sets itself; an admin's extra options may not repeat them.
MANAGED_OPTIONS = frozenset(
    {
        "parsable", "job-name", "output", "error", "chdir", "export", "no-requeue", "requeue",
        "nodes", "ntasks", "cpus-per-task", "mem", "time", "partition", "account", "qos",
        "constraint", "reservation", "gres", "gpus", "uid", "gid", "wrap",
    }
)  # fmt: skip


class RenderError(ValueError):
    """A value that cannot go into a batch job (a catalog or configuration mistake)."""


@dataclass(frozen=True)
class JobSettings:
    """What the hub decides about a session's job, besides the launch spec."""

    #: the session's deterministic job name (see :mod:`berth.spawners.slurm.names`)
    job_name: str
    #: the job's log file on the cluster's shared filesystem; ``%j`` is the job id
    output: str
    #: the job's working directory (the user's home)
    workdir: str
    #: the command on the compute node that reports the port and runs the session
    launcher: tuple[str, ...] = ("berth-slurm-job",)
    #: the address the session listens on, on the compute node
    bind_ip: str = "0.0.0.0"  # noqa: S104 (compute nodes: the hub's proxy must reach them)
    #: the admin's lines for every job, run before the service's own ``slurm.setup``
    setup: tuple[str, ...] = ()
    #: more sbatch options from the admin, each ``--name=value``
    extra_options: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchJob:
    """sbatch's arguments (after the command name) and the script it reads on stdin."""

    argv: tuple[str, ...]
    script: str


def format_time_limit(limit: timedelta) -> str:
    """Slurm's wall time: ``H:MM:00``, or ``D-HH:MM:00`` from one day, rounded up to a minute."""
    minutes = math.ceil(limit.total_seconds() / 60)
    if minutes < 1:
        raise RenderError(f"the time limit must be at least a minute, got {limit}")
    days, rest = divmod(minutes, 24 * 60)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days}-{hours:02d}:{minutes:02d}:00"
    return f"{hours}:{minutes:02d}:00"


def _check(value: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.match(value):
        raise RenderError(f"{what} {value!r} is not allowed in a Slurm job")
    return value


def _check_line(value: str, what: str) -> str:
    if _CONTROL.search(value):
        raise RenderError(f"{what} {value!r} contains a control character")
    return value


def _scheduler_options(spec: LaunchSpec) -> list[str]:
    resources, slurm = spec.resources, spec.profile.slurm
    options = [
        "--nodes=1",
        "--ntasks=1",
        f"--cpus-per-task={max(1, math.ceil(resources.cpus))}",
        f"--mem={max(1, resources.memory_mb)}M",
        f"--time={format_time_limit(spec.hard_limit)}",
    ]
    for key, value in (
        ("partition", slurm.partition),
        ("account", slurm.account),
        ("qos", slurm.qos),
        ("reservation", slurm.reservation),
    ):
        if value is not None:
            options.append(f"--{key}={_check(value, _SLURM_NAME, key)}")
    if slurm.constraint is not None:
        options.append(f"--constraint={_check(slurm.constraint, _CONSTRAINT, 'constraint')}")
    if resources.gpus:
        gpu_type = resources.gpu_type
        kind = f"gpu:{_check(gpu_type, _SLURM_NAME, 'gpu type')}" if gpu_type else "gpu"
        options.append(f"--gres={kind}:{int(resources.gpus)}")
    return options


def _extra_options(settings: JobSettings) -> list[str]:
    for option in settings.extra_options:
        match = _OPTION.match(option)
        if not match:
            raise RenderError(f"extra sbatch option {option!r} must look like --name=value")
        if match.group(1) in MANAGED_OPTIONS:
            raise RenderError(
                f"extra sbatch option {option!r} sets what Berth sets from the catalog;"
                " change the profile instead"
            )
    return list(settings.extra_options)


def _script(spec: LaunchSpec, settings: JobSettings) -> str:
    lines = [
        "#!/bin/bash",
        f"# Berth session {settings.job_name}: {spec.service.name} on {spec.profile.name}."
        " Written by the hub.",
        "# The scheduler options are on sbatch's command line: scontrol show job $SLURM_JOB_ID",
        "set -e",
    ]
    for name in sorted(spec.environment):
        value = spec.environment[name]
        if "\x00" in value:
            raise RenderError(f"environment variable {name} contains a NUL character")
        lines.append(
            f"export {_check(name, _ENV_NAME, 'environment variable name')}={shlex.quote(value)}"
        )
    setup = [*settings.setup, *spec.service.slurm.setup]
    if setup:
        lines.append("# set-up lines from the hub's configuration and the catalog")
        lines.extend(_check_line(line, "set-up line") for line in setup)
    launcher = [_check_line(word, "launcher word") for word in settings.launcher]
    if not launcher:
        raise RenderError("the launcher command is empty")
    for word in spec.argv:
        if "\x00" in word:
            raise RenderError("the session's command contains a NUL character")
    try:
        bind_ip = str(ipaddress.ip_address(settings.bind_ip))
    except ValueError:
        raise RenderError(f"bind address {settings.bind_ip!r} is not an IP address") from None
    words = [*launcher, "--ip", bind_ip, "--", *spec.argv]
    lines.append("exec " + " ".join(shlex.quote(word) for word in words))
    return "\n".join(lines) + "\n"


def render_batch_job(spec: LaunchSpec, settings: JobSettings) -> BatchJob:
    """The sbatch arguments and batch script that run ``spec``. Pure; raises RenderError."""
    argv = [
        "--parsable",
        f"--job-name={_check(settings.job_name, _JOB_NAME, 'job name')}",
        f"--output={_check(settings.output, _PATH, 'log path')}",
        f"--chdir={_check(settings.workdir, _PATH, 'working directory')}",
        "--export=ALL",
        "--no-requeue",
        *_scheduler_options(spec),
        *_extra_options(settings),
    ]
    return BatchJob(argv=tuple(argv), script=_script(spec, settings))
