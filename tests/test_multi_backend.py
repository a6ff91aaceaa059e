"""One hub, several backends (`berth`): each session runs on its profile's backend; a backend
that is down fails only its own sessions; a restarted hub finds each session on its backend."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .hubtest import Hub, make_hub, marked_processes, running_hub
from .slurm_support import ALICE, require_cluster
from .test_slurm_hub import _wrappers, failed_start, slurm_hub_config

MIXED = """
backend: local
profiles:
  laptop: {cpus: 1, memory: 1G}
  cluster-gpu:
    cpus: 1
    memory: 1G
    gpus: 1
    gpu_type: a100
    backend: slurm
    slurm: {partition: gpu}
services:
  jupyter:
    kind: jupyter
    url_path: /lab
    profiles: [laptop, cluster-gpu]
"""
LOCAL = {"service": "jupyter", "profile": "laptop"}
ON_SLURM = {"service": "jupyter", "profile": "cluster-gpu"}


def processes_of(hub: Hub, session: str) -> set[int]:
    """This hub's processes serving ``session`` (a local process, or the job's on this node)."""
    wanted = f"JUPYTERHUB_SERVER_NAME={session}".encode()
    pids = set()
    for pid in marked_processes(hub.marker):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in environ:
            pids.add(pid)
    return pids


def reachable(hub: Hub, user: str, session: str) -> bool:
    return hub.get(f"/user/{user}/{session}/api/status", token=hub.admin_token).status_code == 200


def test_the_hub_picks_the_spawner_that_runs_several_backends(tmp_path: Path) -> None:
    with running_hub(tmp_path, catalog=MIXED) as hub:
        assert "Using Spawner: berth.spawners.multi.BerthMultiSpawner" in hub.log_text()


def test_a_backend_that_is_down_fails_only_its_own_sessions(tmp_path: Path) -> None:
    extra = 'c.BerthSlurmSpawner.slurm_bin_dir = "/nonexistent"'
    with running_hub(tmp_path, catalog=MIXED, extra_config=extra) as hub:
        hub.create_user(ALICE)
        assert hub.start_session(ALICE, "here", LOCAL).status_code in (201, 202)
        hub.wait_ready(ALICE, "here")
        assert reachable(hub, ALICE, "here")

        message = failed_start(hub, ALICE, "gpu", ON_SLURM)
        assert "/nonexistent/squeue is not installed on the hub machine" in message, message

        # the local session keeps running, and new local sessions still start
        assert reachable(hub, ALICE, "here")
        assert hub.start_session(ALICE, "again", LOCAL).status_code in (201, 202)
        hub.wait_ready(ALICE, "again")
        assert reachable(hub, ALICE, "again")


@pytest.fixture
def mixed_hub(tmp_path: Path) -> Iterator[tuple[Hub, str]]:
    require_cluster()
    prefix = "t" + secrets.token_hex(4)
    scratch = Path(tempfile.mkdtemp(prefix="berth-multi-test-"))
    scratch.chmod(0o755)
    _wrappers(scratch / prefix)
    hub = make_hub(
        tmp_path / "hub", catalog=MIXED, extra_config=slurm_hub_config(prefix, scratch / prefix)
    )
    try:
        hub.start()
        yield hub, prefix
    finally:
        hub.stop()
        out = subprocess.run(
            ["squeue", "--noheader", "--all", "--format=%i %j"], capture_output=True, text=True
        ).stdout
        ids = [
            i for i, name in (line.split() for line in out.splitlines()) if name.startswith(prefix)
        ]
        if ids:
            subprocess.run(["scancel", *ids], check=False)
        shutil.rmtree(scratch, ignore_errors=True)


def live_jobs(prefix: str) -> list[str]:
    out = subprocess.run(
        ["squeue", "--noheader", "--all", f"--name={prefix}.{ALICE}.gpu", "--format=%i %T"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line for line in out.splitlines() if line.split()[1] in ("PENDING", "RUNNING")]


@pytest.mark.slurm
def test_local_and_slurm_sessions_side_by_side_survive_a_hub_crash(
    mixed_hub: tuple[Hub, str],
) -> None:
    hub, prefix = mixed_hub
    hub.create_user(ALICE)
    for session, options in (("here", LOCAL), ("gpu", ON_SLURM)):
        r = hub.start_session(ALICE, session, options)
        assert r.status_code in (201, 202), r.text
    hub.wait_ready(ALICE, "here")
    hub.wait_ready(ALICE, "gpu", timeout=180)
    local_pids = processes_of(hub, "here")
    jobs = live_jobs(prefix)
    assert len(local_pids) == 1 and len(jobs) == 1
    assert reachable(hub, ALICE, "here") and reachable(hub, ALICE, "gpu")

    hub.kill()  # SIGKILL: sessions live on
    hub.start()
    for session in ("here", "gpu"):
        server: Any = hub.server(ALICE, session)
        assert server is not None and server["ready"], server
        assert reachable(hub, ALICE, session)
    assert processes_of(hub, "here") == local_pids and live_jobs(prefix) == jobs  # nothing new

    for session in ("here", "gpu"):
        hub.stop_session(ALICE, session)
    assert not processes_of(hub, "here")
    assert live_jobs(prefix) == []
