"""Helpers for the tests that use the real single-node Slurm cluster (tests/system/20-slurm.sh)."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Users created by tests/system/20-slurm.sh, with a Slurm association.
ALICE = "berth-alice"
BOB = "berth-bob"
#: Where jobs find Berth, JupyterLab and berth-slurm-job (made by tests/system/20-slurm.sh).
JOB_VENV = Path(os.environ.get("BERTH_SLURM_JOB_VENV", "/opt/berth-slurm-jobs/venv"))
#: The dev cluster's node name and how the hub reaches it.
NODE = "berth-node"
NODE_ADDRESSES = {NODE: "127.0.0.1"}


def require_cluster() -> None:
    """Fail (not skip) with the fix when the cluster is not there: these tests must run."""
    problem = ""
    try:
        subprocess.run(["scontrol", "ping"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        problem = str(e)
    if problem or not (JOB_VENV / "bin" / "berth-slurm-job").exists():
        pytest.fail(
            f"the Slurm dev cluster is not up ({problem or 'no job virtualenv'}); run"
            " tests/system/20-slurm.sh as root", pytrace=False,
        )  # fmt: skip


def unique_prefix() -> str:
    """A job name prefix of its own per test, so tests never see each other's jobs."""
    return "t" + secrets.token_hex(4)


def sbatch(user: str, name: str, *args: str, wrap: str = "sleep 300") -> str:
    out = subprocess.run(
        ["runuser", "-u", user, "--", "sbatch", "--parsable", f"--job-name={name}",
         "--output=/dev/null", "--chdir=/tmp", *args, f"--wrap={wrap}"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return out.strip().split(";")[0]


def squeue_ids(*names: str) -> list[str]:
    out = subprocess.run(
        ["squeue", "--noheader", "--all", f"--name={','.join(names)}", "--format=%i"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return out.split()


def cancel_named(*names: str) -> None:
    ids = squeue_ids(*names)
    if ids:
        subprocess.run(["scancel", *ids], check=False)


@pytest.fixture
def cluster() -> Iterator[None]:
    require_cluster()
    yield
