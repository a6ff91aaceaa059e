"""Run Slurm's commands: no shell, a time limit, as the session's user when needed, and errors
sorted into "try again" (:class:`SlurmUnavailable`) and "Slurm said no" (:class:`SlurmRefused`).

A command that is missing, times out, or cannot reach the controller (or munge, or slurmdbd) is
*transient*: the caller retries, and a running session is never dropped because of it. Anything
else Slurm refuses (an unknown QOS, a time limit over the partition's) is shown as Slurm wrote it.
"""

from __future__ import annotations

import asyncio
import os
import pwd
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "RunAs",
    "RunAsMode",
    "SlurmError",
    "SlurmRefused",
    "SlurmUnavailable",
    "run_command",
]

RunAsMode = Literal["setuid", "sudo", "none"]

#: stderr fragments meaning "the cluster could not answer now", not "the request is wrong".
_TRANSIENT = (
    "Unable to contact slurm controller",
    "Socket timed out",
    "Zero Bytes were transmitted",
    "Connection refused",
    "Communication connection failure",
    "backup controller in standby mode",
    "Transport endpoint is not connected",
    "Resource temporarily unavailable",
    "Slurm temporarily unable to accept job",
    "Unable to connect to database",
    "Problem talking to the database",
    "slurmdbd: Connection",
    "Invalid authentication credential",
    "Munge",
    "munge",
)


class SlurmError(Exception):
    """A Slurm command that did not do what was asked. ``str()`` is meant for people."""

    transient = False

    def __init__(self, message: str, *, command: Sequence[str] = (), stderr: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.command = tuple(command)
        self.stderr = stderr

    def __str__(self) -> str:
        return self.message


class SlurmUnavailable(SlurmError):
    """Slurm could not be asked: the command is missing, timed out, or the controller is down."""

    transient = True


class SlurmRefused(SlurmError):
    """Slurm answered and refused (or the command failed for a reason retrying will not fix)."""


@dataclass(frozen=True)
class RunAs:
    """Run a command as ``user``: by switching uid (hub runs as root), through ``sudo -n -u``
    (hub runs as a service user with sudo rights for sbatch/scancel), or not at all ("none":
    the hub runs as the same user as the jobs)."""

    mode: RunAsMode
    user: str


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


async def run_command(
    argv: Sequence[str],
    *,
    limit: float,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    run_as: RunAs | None = None,
) -> str:
    """Run ``argv`` (never through a shell) for at most ``limit`` seconds; return its output.

    Raises SlurmUnavailable (missing command, time-out, cluster not answering) or SlurmRefused.
    """
    name = os.path.basename(argv[0])
    full: list[str] = list(argv)
    kwargs: dict[str, object] = {}
    if run_as is not None and run_as.mode == "sudo":
        preserve = f"--preserve-env={','.join(sorted(env))}" if env else "--preserve-env=PATH"
        full = ["sudo", "-n", "-u", run_as.user, preserve, *argv]
    elif run_as is not None and run_as.mode == "setuid":
        try:
            entry = pwd.getpwnam(run_as.user)
        except KeyError:
            raise SlurmRefused(
                f"there is no system user {run_as.user!r} on the hub machine; Slurm jobs run as"
                " the system user of the same name as the hub user",
                command=argv,
            ) from None
        kwargs = {
            "user": entry.pw_uid,
            "group": entry.pw_gid,
            "extra_groups": os.getgrouplist(entry.pw_name, entry.pw_gid),
        }
    try:
        proc = await asyncio.create_subprocess_exec(
            *full,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env) if env is not None else None,
            cwd="/",
            **kwargs,  # type: ignore[arg-type]
        )
    except FileNotFoundError:
        raise SlurmUnavailable(
            f"{full[0]} is not installed on the hub machine (not found on its PATH); the hub"
            " needs Slurm's client commands (Debian: apt-get install slurm-client)",
            command=argv,
        ) from None
    except PermissionError as e:
        raise SlurmUnavailable(f"cannot run {full[0]}: {e}", command=argv) from None
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(input.encode() if input is not None else None), limit
        )
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise SlurmUnavailable(
            f"{name} did not answer within {limit:g} seconds; the Slurm controller may be"
            " overloaded or down",
            command=argv,
        ) from None
    stdout = out.decode(errors="replace")
    stderr = err.decode(errors="replace")
    if proc.returncode == 0:
        return stdout
    said = _last_line(stderr) or _last_line(stdout) or f"exit status {proc.returncode}"
    if any(fragment in stderr for fragment in _TRANSIENT):
        raise SlurmUnavailable(
            f"Slurm is not answering ({said})",
            command=argv,
            stderr=stderr,
        )
    if run_as is not None and run_as.mode == "sudo" and stderr.startswith("sudo:"):
        raise SlurmUnavailable(
            f"sudo refused to run {name} as {run_as.user} ({said}); see deploy/slurm/README.md"
            " for the sudoers rule the hub needs",
            command=argv,
            stderr=stderr,
        )
    raise SlurmRefused(f"{name}: {said}", command=argv, stderr=stderr)
