"""``berth`` against the real single-node Slurm cluster: a GPU launch that waits in the queue shows
Slurm's own reason as it waits, becomes ready when the GPUs free up, prints its URL, reads the
job's output, and its stop cancels the job."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from .clikit import Cli
from .slurm_support import ALICE, cancel_named, sbatch
from .test_slurm_hub import SlurmHub, slurm_hub_factory

pytestmark = pytest.mark.slurm
__all__ = ["slurm_hub_factory"]  # the fixture, shared with the Slurm backend's own tests


def test_a_gpu_launch_waits_for_slurm_and_says_why(
    slurm_hub_factory: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    sh: SlurmHub = slurm_hub_factory()
    hub = sh.hub
    hub.create_user(ALICE)
    cli = Cli(tmp_path_factory.mktemp("slurm-home"), hub)
    login = cli("login", "--url", hub.url, "--token-stdin", input=hub.token(ALICE))
    assert login.returncode == 0, login.stderr

    # alice already holds the 4 GPUs her QOS allows one user at a time
    blocker = f"{sh.prefix}-blocker"
    sbatch(ALICE, blocker, "--partition=gpu", "--qos=interactive", "--gres=gpu:a100:4",
           "--time=10")  # fmt: skip
    waiting = cli.popen("launch", "jupyter", "--gpus", "1", "--gpu-type", "a100", "--name", "nb",
                        "--hours", "1", "--wait")  # fmt: skip
    try:
        assert waiting.stderr is not None
        seen = []
        for line in waiting.stderr:
            seen.append(line.rstrip("\n"))
            if "QOSMaxGRESPerUser" in line:
                break
        assert re.fullmatch(
            r"\[\d:\d\d\] queued +Job \d+ is queued in partition gpu: you already use the most"
            r" GPUs or other generic resources the QOS allows one user at a time"
            r" \(QOSMaxGRESPerUser\).*",
            seen[-1],
        ), seen
        assert any(re.search(r"starting +Submitted Slurm job \d+", line) for line in seen), seen
        listed = json.loads(cli("list", "--json").stdout)["sessions"]
        assert [(s["name"], s["state"], s["profile"]) for s in listed] == [
            ("nb", "queued", "gpu-1")
        ]
        assert "QOSMaxGRESPerUser" in listed[0]["progress"]["message"]
    finally:
        cancel_named(blocker)
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err
    assert out == f"{hub.url}/user/{ALICE}/nb/\n"
    (job,) = sh.jobs(ALICE, "nb")
    assert job["state"] == "RUNNING"

    logs = cli("logs", "nb", "--lines", "50")
    assert "berth-slurm-job: session listens on 127.0.0.1:" in logs.stdout
    assert cli("stop", "nb").returncode == 0
    assert sh.live_jobs(ALICE, "nb") == []
    assert sh.sacct_state(job["id"]).startswith("CANCELLED")
