"""Sessions on the local backend, end to end: a real hub, the real proxy, real processes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from .hubtest import Hub, marked_processes, running_hub

JUPYTER = {"service": "jupyter", "profile": "cpu-small", "hours": 1}


@pytest.fixture(scope="module")
def people(local_hub: Hub) -> dict[str, str]:
    """alice and bob with API tokens of their own."""
    for name in ("alice", "bob"):
        local_hub.create_user(name)
    return {name: local_hub.token(name) for name in ("alice", "bob")}


@pytest.fixture(scope="module")
def alice_notebook(local_hub: Hub, people: dict[str, str]) -> dict[str, Any]:
    r = local_hub.start_session("alice", "nb", JUPYTER, token=people["alice"])
    assert r.status_code in (201, 202), r.text
    return local_hub.wait_ready("alice", "nb")


def session_pids(hub: Hub) -> set[int]:
    """Processes started for sessions (the proxy carries the marker too; leave it out)."""
    pids = set()
    for pid in marked_processes(hub.marker):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(entry.startswith(b"JUPYTERHUB_SERVER_NAME=") for entry in environ):
            pids.add(pid)
    return pids


def test_a_launched_session_is_reachable_by_its_owner_only(
    local_hub: Hub, people: dict[str, str], alice_notebook: dict[str, Any]
) -> None:
    assert alice_notebook["url"] == "/user/alice/nb/"
    # the owner's token gets through the proxy to her JupyterLab
    r = local_hub.get("/user/alice/nb/api/status", token=people["alice"])
    assert r.status_code == 200
    assert "started" in r.json()
    # a browser without a login is sent to the hub's login
    r = local_hub.get("/user/alice/nb/lab")
    assert r.status_code == 302
    authorize = "/hub/api/oauth2/authorize?client_id=jupyterhub-user-alice-nb"
    assert r.headers["location"].startswith(authorize)
    r = local_hub.get(r.headers["location"])
    assert r.status_code == 302 and r.headers["location"].startswith("/hub/login")
    # another user is refused
    r = local_hub.get("/user/alice/nb/api/status", token=people["bob"])
    assert r.status_code == 403


def test_the_hub_stores_the_checked_options(local_hub: Hub, alice_notebook: dict[str, Any]) -> None:
    canonical = {"service": "jupyter", "profile": "cpu-small", "hours": 1.0, "inputs": {}}
    assert alice_notebook["user_options"] == canonical
    # in the hub's database too, every default filled in, for the culler and after a restart
    with sqlite3.connect(local_hub.dir / "jupyterhub.sqlite") as db:
        (stored,) = db.execute("SELECT user_options FROM spawners WHERE name = 'nb'").fetchone()
    assert json.loads(stored) == canonical


def test_a_browser_login_reaches_the_session(
    local_hub: Hub, alice_notebook: dict[str, Any]
) -> None:
    with local_hub.login("alice") as browser:
        r = browser.get("/user/alice/nb/lab")
        assert r.status_code == 200
        assert "JupyterLab" in r.text
    with local_hub.login("bob") as browser:
        r = browser.get("/user/alice/nb/lab")
        assert r.status_code == 403


def test_sessions_never_run_as_root(local_hub: Hub, alice_notebook: dict[str, Any]) -> None:
    pids = session_pids(local_hub)
    assert pids
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if os.geteuid() == 0:
            assert uid != 0, f"session process {pid} runs as root"
        else:
            assert uid == os.geteuid()


def test_a_user_runs_several_sessions_and_stops_one(
    local_hub: Hub, people: dict[str, str], alice_notebook: dict[str, Any]
) -> None:
    before = session_pids(local_hub)
    r = local_hub.start_session(
        "alice", "second", {"service": "jupyter", "profile": "cpu-large"}, token=people["alice"]
    )
    assert r.status_code in (201, 202), r.text
    local_hub.wait_ready("alice", "second")
    started = session_pids(local_hub) - before
    assert len(started) == 1
    for session in ("nb", "second"):
        r = local_hub.get(f"/user/alice/{session}/api/status", token=people["alice"])
        assert r.status_code == 200

    local_hub.stop_session("alice", "second")
    server = local_hub.server("alice", "second")
    assert server is not None and server["stopped"] and not server["ready"]
    assert not (session_pids(local_hub) & started), "the stopped session's process still runs"
    r = local_hub.get("/user/alice/second/api/status", token=people["alice"])
    assert r.status_code != 200
    # the other session is untouched
    r = local_hub.get("/user/alice/nb/api/status", token=people["alice"])
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("session", "options", "message"),
    [
        (
            "evil",
            {"service": "jupyter", "cmd": ["bash", "-c", "id"]},
            "unknown option 'cmd'; allowed options: service, profile, hours, inputs",
        ),
        (
            "evil",
            {"service": "vllm", "inputs": {"model": "org/m\n#SBATCH --gres=gpu:8"}},
            "input 'model' of vllm: control characters such as newlines are not allowed",
        ),
        (
            "evil",
            {"service": "jupyter", "hours": 100},
            "100 hours is longer than the 8 hours allowed for jupyter on cpu-small",
        ),
        (
            "evil",
            {"service": "jupyter", "profile": "gpu-1"},
            "profile 'gpu-1' cannot run here: it needs 1 GPU and this machine offers 0 to sessions",
        ),
        ("bad name", {"service": "jupyter"}, "Invalid server_name: 'bad name'"),
    ],
)
def test_bad_options_get_400_and_start_nothing(
    local_hub: Hub,
    people: dict[str, str],
    alice_notebook: dict[str, Any],
    session: str,
    options: dict[str, Any],
    message: str,
) -> None:
    before = session_pids(local_hub)
    r = local_hub.start_session("bob", session, options, token=people["bob"])
    assert r.status_code == 400
    assert message in r.json()["message"]
    server = local_hub.server("bob", session)
    assert server is None or (not server["ready"] and not server["pending"])
    assert session_pids(local_hub) == before
    # the hub keeps serving everyone else
    r = local_hub.get("/user/alice/nb/api/status", token=people["alice"])
    assert r.status_code == 200


def test_the_hub_refuses_to_start_on_a_broken_catalog(tmp_path: Path) -> None:
    catalog = tmp_path / "berth.yaml"
    catalog.write_text(
        "profiles:\n  small: {cpus: 1, memory: 1G}\nservices:\n"
        "  lab:\n    kind: jupyter\n    profiles: [small, big]\n"
    )
    config = tmp_path / "jupyterhub_config.py"
    config.write_text('import berth.hub_config\nberth.hub_config.configure(c, "berth.yaml")\n')
    done = subprocess.run(
        [sys.executable, "-m", "jupyterhub", "-f", str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert (
        f"{catalog}:6: services.lab.profiles[1]: 'big' is not a profile of this catalog;"
        " known profiles: small"
    ) in done.stderr
    assert "Traceback" not in done.stderr


def test_plain_traitlets_config_works_without_the_yaml(tmp_path: Path) -> None:
    extra = """
c.JupyterHub.spawner_class = "berth-local"
c.JupyterHub.allow_named_servers = True
c.BerthSpawner.catalog = {
    "profiles": {"tiny": {"cpus": 1, "memory": "512M"}},
    "services": {"notebook": {"kind": "jupyter", "profiles": ["tiny"]}},
}
"""
    with running_hub(tmp_path, catalog=None, extra_config=extra) as hub:
        hub.create_user("carol")
        token = hub.token("carol")
        r = hub.start_session("carol", "lab", {"service": "notebook"}, token=token)
        assert r.status_code in (201, 202), r.text
        server = hub.wait_ready("carol", "lab")
        assert server["user_options"]["profile"] == "tiny"
        assert hub.get("/user/carol/lab/api/status", token=token).status_code == 200
        r = hub.start_session("carol", "other", {"service": "jupyter"}, token=token)
        assert r.status_code == 400
        assert r.json()["message"] == "unknown service 'jupyter'; available: notebook"


def test_the_owner_reads_the_session_output(
    local_hub: Hub, people: dict[str, str], alice_notebook: dict[str, Any]
) -> None:
    path = "/berth/users/alice/sessions/nb/logs"
    r = local_hub.api("GET", path, token=people["alice"], params={"lines": 500})
    assert r.status_code == 200, r.text
    lines = r.json()["lines"]
    assert any("Jupyter Server" in line and "is running at" in line for line in lines)
    assert len(local_hub.api("GET", path, params={"lines": 3}).json()["lines"]) == 3  # admin
    r = local_hub.api("GET", path, token=people["bob"])
    assert r.status_code == 404  # another user's sessions do not exist for bob
    r = local_hub.api("GET", path, token=people["alice"], params={"lines": "all"})
    assert r.status_code == 400
    assert r.json()["message"] == "lines must be a whole number from 1 to 10000"


BROKEN = """
profiles:
  small: {cpus: 1, memory: 1G}
services:
  broken:
    kind: gated
    command: [python3, -c, "import sys; print('no model weights in /models'); sys.exit(3)",
              "{port}"]
    profiles: [small]
  silent:
    kind: gated
    command: [python3, -c, "import time; time.sleep(600)", "{port}"]
    ready_timeout: 3s
    profiles: [small]
"""


def test_a_service_that_dies_at_start_says_why_at_once(tmp_path: Path) -> None:
    with running_hub(tmp_path, catalog=BROKEN) as hub:
        hub.create_user("erin")
        token = hub.token("erin")
        started = time.monotonic()
        r = hub.start_session("erin", "llm", {"service": "broken"}, token=token)
        if r.status_code == 202:  # slower than the hub waits for an answer: follow it
            progress = hub.api("GET", "/users/erin/servers/llm/progress", token=token)
            text = progress.text
        else:
            text = r.json()["message"]
        assert "stopped (exit code 3) before it answered" in text
        assert "no model weights in /models" in text
        assert time.monotonic() - started < 60  # not the five minutes of its ready timeout
        server = hub.server("erin", "llm")
        assert server is None or not (server["ready"] or server["pending"])

        r = hub.start_session("erin", "quiet", {"service": "silent"}, token=token)
        text = (
            r.text
            if r.status_code != 202
            else hub.api("GET", "/users/erin/servers/quiet/progress", token=token).text
        )
        assert "did not answer within 3s" in text
        assert not session_pids(hub)
