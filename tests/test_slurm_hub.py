"""Berth sessions as jobs of the real single-node Slurm cluster, through a real JupyterHub and the
real configurable-http-proxy: start, reach, queue, fail, restart, stop, refuse.

The hub's Slurm commands go through logging wrappers (``slurm_bin_dir``) that exec the real ones,
so tests can say which commands ran. Each hub has its own job name prefix: tests see only their
own jobs. Sessions run as the system users made by tests/system/20-slurm.sh.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from .hubtest import EXAMPLE_CATALOG, Hub, make_hub
from .slurm_support import (
    ALICE,
    BOB,
    JOB_VENV,
    NODE_ADDRESSES,
    cancel_named,
    require_cluster,
    sbatch,
)

pytestmark = pytest.mark.slurm

COMMANDS = ("sbatch", "squeue", "scancel", "sacct", "scontrol")
# Test-only services appended to the example catalog (whose backend becomes slurm).
EXTRA_SERVICES = """
  broken:
    display_name: Broken on purpose
    kind: jupyter
    command: [jupyterhub-singleuser, --ServerApp.root_dir=/nonexistent/models]
    profiles: [cpu-small]
  files-gpu:
    display_name: Static web server on a GPU
    kind: gated
    command: [python3, -m, http.server, "{port}", --bind, 127.0.0.1]
    readiness_path: /
    prefix: strip
    profiles: [gpu-1]
"""


class SlurmHub:
    """A hub on the dev cluster, its command log, and the cluster's own view of its jobs."""

    def __init__(self, hub: Hub, prefix: str, bin_dir: Path) -> None:
        self.hub, self.prefix, self.bin_dir = hub, prefix, bin_dir
        self.calls_file = bin_dir / "calls"

    def calls(self, command: str | None = None) -> list[str]:
        lines = self.calls_file.read_text().splitlines() if self.calls_file.exists() else []
        return [line for line in lines if command is None or line.split(" ", 1)[0] == command]

    def job_name(self, user: str, session: str) -> str:
        return f"{self.prefix}.{user}.{session}"

    def jobs(self, user: str, session: str, *, states: str = "all") -> list[dict[str, str]]:
        """squeue's view: every job of this session, with its state."""
        out = subprocess.run(
            ["squeue", "--noheader", "--all", f"--states={states}",
             f"--name={self.job_name(user, session)}", "--format=%i|%T|%r|%u"],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        keys = ("id", "state", "reason", "user")
        return [dict(zip(keys, line.split("|"), strict=True)) for line in out.splitlines()]

    def live_jobs(self, user: str, session: str) -> list[dict[str, str]]:
        return [j for j in self.jobs(user, session) if j["state"] in ("PENDING", "RUNNING")]

    def sacct_state(self, job_id: str) -> str:
        for _ in range(50):
            out = subprocess.run(
                ["sacct", "-a", "-X", "-n", "-P", "-j", job_id, "--format=State"],
                check=True, capture_output=True, text=True,
            ).stdout.strip()  # fmt: skip
            if out and out not in ("PENDING", "RUNNING"):
                return out
            time.sleep(0.2)
        return out

    def scontrol(self, job_id: str) -> str:
        return subprocess.run(
            ["scontrol", "show", "job", "-o", job_id], check=True, capture_output=True, text=True
        ).stdout


def _wrappers(directory: Path, sbatch_delay_marker: Path | None = None) -> None:
    """Scripts named like Slurm's commands that log each call, then exec the real command."""
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    calls = directory / "calls"
    calls.touch()
    calls.chmod(0o666)  # sbatch and scancel run as the session's user
    for command in COMMANDS:
        real = shutil.which(command)
        assert real, f"{command} is not installed"
        body = f'echo "{command} $*" >> "{calls}"\nexec "{real}" "$@"\n'
        if command == "sbatch" and sbatch_delay_marker is not None:
            # submit, then take long to answer: the hub is killed while it waits
            body = (
                f'echo "{command} $*" >> "{calls}"\nout="$("{real}" "$@")" || exit $?\n'
                f'touch "{sbatch_delay_marker}"\nsleep 20\necho "$out"\n'
            )
        path = directory / command
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)


def slurm_hub_config(prefix: str, bin_dir: Path, extra: str = "") -> str:
    return f"""
c.BerthSlurmSpawner.slurm_bin_dir = {str(bin_dir)!r}
c.BerthSlurmSpawner.job_name_prefix = {prefix!r}
c.BerthSlurmSpawner.job_setup = ["source {JOB_VENV}/bin/activate"]
c.BerthSlurmSpawner.node_addresses = {NODE_ADDRESSES!r}
c.BerthSlurmSpawner.job_bind_ip = "127.0.0.1"
c.BerthSlurmSpawner.queue_interval = 10
c.BerthSlurmSpawner.queue_fast_interval = 0.5
c.Spawner.start_timeout = 300
{extra}
"""


@pytest.fixture
def slurm_hub_factory(tmp_path: Path) -> Iterator[Any]:
    require_cluster()
    made: list[SlurmHub] = []
    scratch = Path(tempfile.mkdtemp(prefix="berth-slurm-test-"))
    scratch.chmod(0o755)

    def factory(extra: str = "", sbatch_delay_marker: Path | None = None) -> SlurmHub:
        prefix = "t" + secrets.token_hex(4)
        bin_dir = scratch / prefix
        _wrappers(bin_dir, sbatch_delay_marker)
        catalog = EXAMPLE_CATALOG.read_text().replace("\nbackend: local\n", "\nbackend: slurm\n")
        hub = make_hub(
            tmp_path / prefix,
            catalog=catalog + EXTRA_SERVICES,
            extra_config=slurm_hub_config(prefix, bin_dir, extra),
        )
        hub.start()
        made.append(SlurmHub(hub, prefix, bin_dir))
        return made[-1]

    yield factory
    for slurm_hub in made:
        try:
            slurm_hub.hub.stop()
        finally:
            out = subprocess.run(
                ["squeue", "--noheader", "--all", "--format=%i %j"], capture_output=True, text=True
            ).stdout
            ids = [i for i, name in (line.split() for line in out.splitlines())
                   if name.startswith(slurm_hub.prefix + ".")]  # fmt: skip
            if ids:
                subprocess.run(["scancel", *ids], check=False)
    shutil.rmtree(scratch, ignore_errors=True)


def progress_messages(
    hub: Hub, user: str, session: str, until: str, timeout: float = 120
) -> list[str]:
    """Read the hub's progress event stream (as the pending page does) until a message contains
    ``until`` (or the stream ends)."""
    messages: list[str] = []
    url = f"{hub.api_url}/users/{quote(user)}/servers/{quote(session)}/progress"
    headers = {"Authorization": f"token {hub.admin_token}"}
    with httpx.stream("GET", url, headers=headers, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            event = json.loads(line[5:])
            messages.append(event.get("message", ""))
            if until in messages[-1] or event.get("ready") or event.get("failed"):
                break
    return messages


def failed_start(hub: Hub, user: str, session: str, options: dict[str, Any]) -> str:
    """Start a session that will fail; return what the user is told: the API's error if the
    failure is quick, else the pending page's progress stream (read while it is pending)."""
    hub.create_user(user)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        post = pool.submit(hub.start_session, user, session, options)
        messages: list[str] = []
        while not post.done():
            server = hub.server(user, session)
            if server and server.get("pending") == "spawn":
                with contextlib.suppress(AssertionError):
                    messages = progress_messages(hub, user, session, until="Spawn failed")
                break
            time.sleep(0.05)
        r = post.result()
    if r.status_code >= 400:
        return str(r.json()["message"])
    assert messages and "Spawn failed" in messages[-1], (r.status_code, messages)
    return "\n".join(messages)


def start(hub: Hub, user: str, session: str, options: dict[str, Any]) -> httpx.Response:
    hub.create_user(user)
    return hub.start_session(user, session, options)


# -- a Jupyter session on a GPU profile --------------------------------------------------------


def test_jupyter_session_on_a_gpu_profile(slurm_hub_factory: Any) -> None:
    sh: SlurmHub = slurm_hub_factory()
    hub = sh.hub
    r = start(hub, ALICE, "nb", {"service": "jupyter", "profile": "gpu-1", "hours": 1})
    assert r.status_code in (201, 202), r.text
    server = hub.wait_ready(ALICE, "nb", timeout=180)

    # the cluster's own view: one running job with the profile's resources, as the user
    (job,) = sh.jobs(ALICE, "nb")
    assert (job["state"], job["user"]) == ("RUNNING", ALICE)
    details = sh.scontrol(job["id"])
    for expected in ("Partition=gpu", "QOS=interactive", "NumCPUs=8", "gres/gpu=1",
                     "gres/gpu:a100=1", "mem=64G", "TimeLimit=05:00:00"):  # fmt: skip
        assert expected in details, (expected, details)  # 1 h + the 4 h extension cap

    # reachable through the proxy: the owner with a token; no one else
    token = hub.token(ALICE)
    r = hub.get(f"{server['url']}api/status", token=token)
    assert r.status_code == 200 and "last_activity" in r.json()
    assert hub.get(f"{server['url']}api/status").status_code in (302, 403)
    hub.create_user(BOB)
    assert hub.get(f"{server['url']}api/status", token=hub.token(BOB)).status_code == 403

    # the job's own output, as `berth logs` reads it
    r = hub.api("GET", f"/berth/users/{ALICE}/sessions/nb/logs?lines=50", token=token)
    assert r.status_code == 200, r.text
    assert "berth-slurm-job: session listens on 127.0.0.1:" in r.text

    assert len(sh.calls("sbatch")) == 1
    hub.stop_session(ALICE, "nb")
    assert sh.live_jobs(ALICE, "nb") == []
    assert sh.sacct_state(job["id"]).startswith("CANCELLED")
    assert len(sh.calls("scancel")) == 1
    assert Path(f"/home/{ALICE}/.berth/slurm/nb-{job['id']}.log").exists()


def test_gated_session_on_a_gpu_profile(slurm_hub_factory: Any) -> None:
    """berth-gate and a web service (python's http.server) in a GPU job, behind the hub's login."""
    sh: SlurmHub = slurm_hub_factory()
    hub = sh.hub
    r = start(hub, ALICE, "web", {"service": "files-gpu", "profile": "gpu-1", "hours": 1})
    assert r.status_code in (201, 202), r.text
    server = hub.wait_ready(ALICE, "web", timeout=180)
    (job,) = sh.jobs(ALICE, "web")
    details = sh.scontrol(job["id"])
    assert "Partition=gpu" in details and "gres/gpu:a100=1" in details, details
    marker = Path(f"/home/{ALICE}") / ".berth" / "slurm"
    r = hub.get(server["url"], token=hub.token(ALICE))
    # the gate stripped the prefix: http.server lists the job's working directory (the home)
    assert r.status_code == 200 and "Directory listing for /" in r.text, r.text[:300]
    assert ".berth/" in r.text and marker.is_dir()
    hub.create_user(BOB)
    assert hub.get(server["url"], token=hub.token(BOB)).status_code == 403
    assert hub.get(server["url"]).status_code in (302, 401, 403)
    hub.stop_session(ALICE, "web")
    assert sh.live_jobs(ALICE, "web") == []
    assert sh.sacct_state(job["id"]).startswith("CANCELLED")


# -- queued: reasons and expected start; restarts -----------------------------------------------


def test_queued_progress_then_hub_killed_while_queued_and_while_running(
    slurm_hub_factory: Any,
) -> None:
    sh: SlurmHub = slurm_hub_factory()
    hub = sh.hub
    # alice already holds the 4 GPUs her QOS allows one user at a time
    blocker = f"{sh.prefix}-blocker"
    sbatch(ALICE, blocker, "--partition=gpu", "--qos=interactive", "--gres=gpu:a100:4",
           "--time=10")  # fmt: skip
    try:
        r = start(hub, ALICE, "llm", {"service": "jupyter", "profile": "gpu-1", "hours": 1})
        assert r.status_code == 202, r.text
        messages = progress_messages(hub, ALICE, "llm", until="QOSMaxGRESPerUser")
        assert any(m.startswith("Submitted Slurm job") for m in messages), messages
        assert messages[-1].endswith(
            "you already use the most GPUs or other generic resources the QOS allows one user"
            " at a time (QOSMaxGRESPerUser)"
        ), messages
        (job,) = sh.jobs(ALICE, "llm")
        assert job["state"] == "PENDING"

        hub.kill()  # SIGKILL while queued
        hub.start()
        server = hub.server(ALICE, "llm")
        assert server is not None and not server["ready"]  # found again, still waiting
        assert [j["id"] for j in sh.live_jobs(ALICE, "llm")] == [job["id"]]
    finally:
        cancel_named(blocker)
    server = hub.wait_ready(ALICE, "llm", timeout=180)
    assert [j["id"] for j in sh.live_jobs(ALICE, "llm")] == [job["id"]]  # no duplicate
    token = hub.token(ALICE)
    assert hub.get(f"{server['url']}api/status", token=token).status_code == 200

    hub.kill()  # SIGKILL while running
    hub.start()
    server = hub.wait_ready(ALICE, "llm", timeout=60)
    assert hub.get(f"{server['url']}api/status", token=token).status_code == 200
    assert [j["id"] for j in sh.live_jobs(ALICE, "llm")] == [job["id"]]
    assert len(sh.calls("sbatch")) == 1

    hub.stop_session(ALICE, "llm")
    assert sh.live_jobs(ALICE, "llm") == []  # no orphan
    assert sh.sacct_state(job["id"]).startswith("CANCELLED")


def test_job_submitted_just_before_the_kill_is_found_by_its_name(
    slurm_hub_factory: Any, tmp_path: Path
) -> None:
    marker = Path(tempfile.mkdtemp(prefix="berth-sbatch-")) / "submitted"
    marker.parent.chmod(0o777)
    sh: SlurmHub = slurm_hub_factory(sbatch_delay_marker=marker)
    hub = sh.hub
    start(hub, ALICE, "late", {"service": "jupyter", "profile": "cpu-small"})
    for _ in range(300):
        if marker.exists():
            break
        time.sleep(0.1)
    assert marker.exists(), hub.log_tail()
    hub.kill()  # sbatch has submitted; the hub never read the job id
    shutil.rmtree(marker.parent, ignore_errors=True)
    hub.start()
    server = hub.wait_ready(ALICE, "late", timeout=180)
    assert hub.get(f"{server['url']}api/status", token=hub.token(ALICE)).status_code == 200
    assert len(sh.live_jobs(ALICE, "late")) == 1
    assert "found its Slurm job" in hub.log_text()
    hub.stop_session(ALICE, "late")
    assert sh.live_jobs(ALICE, "late") == []


# -- failures the user should understand --------------------------------------------------------


def test_a_job_that_fails_shows_its_own_error_lines(slurm_hub_factory: Any) -> None:
    sh: SlurmHub = slurm_hub_factory()
    hub = sh.hub
    text = failed_start(hub, ALICE, "bad", {"service": "broken", "profile": "cpu-small"})
    assert "ended (FAILED) before the session was up" in text, text
    assert "No such directory: ''/nonexistent/models''" in text, text  # Jupyter's own words
    assert hub.api("GET", "/").status_code == 200


HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("nb", {"service": "vllm", "profile": "gpu-1", "inputs": {"model": "$(id)/x"}}, "model"),
    ("nb", {"service": "vllm", "profile": "gpu-1", "inputs": {"model": "a/b`id`"}}, "model"),
    (
        "nb",
        {"service": "vllm", "profile": "gpu-1", "inputs": {"model": "org/m\n#SBATCH --uid=0"}},
        "model",
    ),
    ("nb", {"service": "vllm", "profile": "gpu-1", "inputs": {"model": "o/m' ; id"}}, "model"),
    ("nb", {"service": "jupyter", "partition": "gpu"}, "unknown option"),
    ("nb", {"service": "jupyter", "gres": "gpu:8"}, "unknown option"),
    ("nb", {"service": "jupyter", "account": "root"}, "unknown option"),
    ("nb", {"service": "jupyter", "command": ["bash", "-c", "id"]}, "unknown option"),
    ("nb", {"service": "jupyter", "gpus": 8}, "unknown option"),
    ("nb", {"service": "jupyter", "profile": "gpu-4"}, "limited to the groups gpu-large"),
    ("nb", {"service": "jupyter", "profile": "gpu-8"}, "not a profile"),
    ("nb", {"service": "jupyter", "profile": "gpu-1\n#SBATCH -p x"}, "not a profile"),
    ("nb", {"service": "jupyter", "hours": "1\n#SBATCH --time=9999"}, "hours"),
    ("nb", {"service": "jupyter", "hours": 1000}, "longer than"),
    ("nb", {"service": "jupyter", "inputs": {"x": "$(id)"}}, "no input"),
    ("a\n#SBATCH", {"service": "jupyter"}, "Invalid server_name"),  # JupyterHub's own check
    ("a'b", {"service": "jupyter"}, "Invalid server_name"),
    ("x$(id)", {"service": "jupyter"}, "Invalid server_name"),
    ("a" * 70, {"service": "jupyter"}, "Invalid server_name"),
]


def test_hostile_options_are_refused_before_sbatch_runs(slurm_hub_factory: Any) -> None:
    sh: SlurmHub = slurm_hub_factory()
    hub = sh.hub
    hub.create_user(ALICE)
    for session, options, words in HOSTILE:
        r = hub.start_session(ALICE, session, options)
        assert r.status_code == 400, (session, options, r.status_code, r.text)
        assert words in r.json()["message"], (options, r.json())
    assert sh.calls("sbatch") == []  # sbatch never ran
    assert hub.api("GET", "/").status_code == 200


def test_port_endpoint_takes_only_an_integer_port_with_the_sessions_token(
    slurm_hub_factory: Any,
) -> None:
    sh: SlurmHub = slurm_hub_factory()
    hub = sh.hub
    start(hub, ALICE, "nb", {"service": "jupyter", "profile": "cpu-small"})
    server = hub.wait_ready(ALICE, "nb", timeout=180)
    port = int(hub.api("GET", f"/users/{ALICE}").json()["servers"]["nb"]["state"]["port"])
    url = f"/berth/slurm/port/{ALICE}/nb"
    hub.create_user(BOB)
    # someone else's token, the user's own token (not the session's), the admin's: 403
    for token in (hub.token(BOB), hub.token(ALICE), hub.admin_token):
        assert hub.api("POST", url, token=token, json={"port": port}).status_code == 403
    assert httpx.post(f"{hub.api_url}{url}", json={"port": port}).status_code == 403
    # batchspawner's setattr endpoint is not there
    assert hub.api("POST", "/batchspawner", json={"port": 1}).status_code == 404
    assert hub.get(f"{server['url']}api/status", token=hub.token(ALICE)).status_code == 200
    hub.stop_session(ALICE, "nb")


def test_controller_down_or_commands_missing_says_so_and_the_hub_keeps_serving(
    slurm_hub_factory: Any,
) -> None:
    missing: SlurmHub = slurm_hub_factory(
        extra='c.BerthSlurmSpawner.slurm_bin_dir = "/nonexistent"'
    )
    message = failed_start(missing.hub, ALICE, "nb", {"service": "jupyter", "profile": "cpu-small"})
    assert "/nonexistent/squeue is not installed on the hub machine" in message, message
    assert missing.hub.api("GET", "/").status_code == 200

    sh: SlurmHub = slurm_hub_factory()
    hub = sh.hub
    start(hub, BOB, "keep", {"service": "jupyter", "profile": "cpu-small"})
    hub.wait_ready(BOB, "keep", timeout=180)
    pid = int(Path("/run/slurmctld.pid").read_text())
    os.kill(pid, 15)  # the controller goes down
    try:
        for _ in range(200):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
        message = failed_start(hub, ALICE, "nb", {"service": "jupyter", "profile": "cpu-small"})
        assert "Slurm is not answering" in message and "Unable to contact slurm controller" in (
            message
        ), message
        assert hub.api("GET", "/").status_code == 200
        assert hub.server(BOB, "keep")["ready"]  # the running session is kept
    finally:
        subprocess.run(["/usr/sbin/slurmctld"], check=True)
        for _ in range(100):
            ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True).stdout
            if " is UP" in ping:
                break
            time.sleep(0.2)
    server = hub.server(BOB, "keep")
    assert server is not None and server["ready"]
    assert hub.get(f"{server['url']}api/status", token=hub.token(BOB)).status_code == 200
    hub.stop_session(BOB, "keep")
    assert sh.live_jobs(BOB, "keep") == []
