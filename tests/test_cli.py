"""The ``berth`` command, run as a subprocess against a real hub (real proxy, real sessions).

The hub runs the local backend with four pretend GPU ids (so GPU profiles are offered and Jupyter
runs on them with CUDA_VISIBLE_DEVICES set) and a stand-in queue for sessions named ``q-*``
(tests/stand_ins.py), which reports what the Slurm backend reports while a job waits.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import select
import sqlite3
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .clikit import BERTH, Cli, one_line_error
from .hubtest import EXAMPLE_CATALOG, Hub, running_hub
from .stand_ins import release, stand_in_hub

MODEL = "org/model"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with stand_in_hub(tmp_path_factory.mktemp("cli-hub")) as hub:
        for name, groups in (("alice", ()), ("bob", ()), ("carol", ("gpu-large",))):
            hub.create_user(name, groups=groups)
        yield hub


@pytest.fixture(scope="module")
def tokens(hub: Hub) -> dict[str, str]:
    return {name: hub.token(name) for name in ("alice", "bob", "carol")}


@pytest.fixture(scope="module")
def alice(hub: Hub, tokens: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Cli:
    """alice's berth, logged in."""
    cli = Cli(tmp_path_factory.mktemp("alice-home"), hub)
    result = cli("login", "--url", hub.url, "--token-stdin", input=tokens["alice"] + "\n")
    assert result.returncode == 0, result.stderr
    return cli


@pytest.fixture
def fresh(hub: Hub, tmp_path: Path) -> Cli:
    """berth with no login at all."""
    return Cli(tmp_path, hub)


# -- login ------------------------------------------------------------------------------------


def test_login_keeps_the_url_and_token_for_its_owner_only(
    fresh: Cli, hub: Hub, tokens: dict[str, str]
) -> None:
    result = fresh("login", "--url", hub.url + "/hub/", "--token-stdin", input=tokens["bob"])
    assert result.returncode == 0, result.stderr
    path = fresh.home / ".config" / "berth" / "config.json"
    assert f"Logged in to {hub.url} as bob. Saved to {path}" in result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {"url": hub.url, "token": tokens["bob"]}
    # the stored login is what later commands use
    assert fresh("list").returncode == 0
    assert fresh("logout").returncode == 0
    assert not path.exists()
    one_line_error(fresh("list"), 3, "not logged in: run `berth login --url")


def test_the_session_variables_work_without_a_login(
    fresh: Cli, hub: Hub, tokens: dict[str, str]
) -> None:
    env = {"JUPYTERHUB_API_URL": f"{hub.url}/hub/api", "JUPYTERHUB_API_TOKEN": tokens["bob"]}
    result = fresh("services", "--json", **env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["user"] == "bob"
    # and `berth login` with no arguments stores them
    assert fresh("login", **env).returncode == 0
    saved = json.loads((fresh.home / ".config" / "berth" / "config.json").read_text())
    assert saved == {"url": hub.url, "token": tokens["bob"]}


def test_login_refuses_a_wrong_token_and_writes_nothing(fresh: Cli, hub: Hub) -> None:
    result = fresh("login", "--url", hub.url, "--token-stdin", input="not-a-token\n")
    one_line_error(result, 3, f"the hub at {hub.url} does not accept your token")
    assert not (fresh.home / ".config" / "berth" / "config.json").exists()


def test_login_needs_an_address(fresh: Cli) -> None:
    one_line_error(fresh("login", input=""), 2, "give the hub's address: berth login --url")
    one_line_error(fresh("login", "--url", "ftp://x", input="t\n"), 2, "is not a hub address")


# -- the catalog ------------------------------------------------------------------------------


def test_services_lists_what_this_user_may_launch(
    alice: Cli, hub: Hub, tokens: dict[str, str]
) -> None:
    result = alice("services", "--json")
    assert result.returncode == 0, result.stderr
    catalog = json.loads(result.stdout)
    r = hub.api("GET", "/berth/catalog", token=tokens["alice"])
    assert catalog == r.json()
    names = [service["name"] for service in catalog["services"]]
    assert names == ["jupyter", "code-server", "rstudio", "vllm", "ollama", "terminal", "files"]

    text = alice("services").stdout
    jupyter = text.split("\n\n")[0].splitlines()
    assert jupyter[0] == "jupyter: JupyterLab. Notebooks, consoles and a file browser. (default)"
    assert re.match(r"\s+cpu-small \*\s+2\s+4G\s+-\s+2h\s+8h\s+\+4h\s+1h\s+2 CPUs", jupyter[2])
    assert re.match(r"\s+gpu-1\s+8\s+64G\s+1 x A100\s+2h\s+8h\s+\+4h\s+30m", jupyter[4])
    # alice is not in gpu-large: gpu-4 is not offered to her
    assert "gpu-4" not in text
    vllm = alice("services", "vllm").stdout
    assert (
        "--input model=<string> (required); --input max_model_len=<integer> (default 8192)" in vllm
    )


def test_a_group_opens_more_profiles(hub: Hub, tokens: dict[str, str], fresh: Cli) -> None:
    result = fresh("services", "vllm", "--json", BERTH_URL=hub.url, BERTH_TOKEN=tokens["carol"])
    profiles = {p["name"]: p for p in json.loads(result.stdout)["profiles"]}
    assert set(profiles) == {"gpu-1", "gpu-4"}
    assert profiles["gpu-4"]["policy"]["max_seconds"] == 4 * 3600


# -- a session's life -------------------------------------------------------------------------


def test_launch_wait_list_describe_url_logs_stop(
    alice: Cli, hub: Hub, tokens: dict[str, str]
) -> None:
    result = alice("launch", "jupyter", "--profile", "cpu-large", "--hours", "1.5", "--wait")
    assert result.returncode == 0, result.stderr
    url = f"{hub.url}/user/alice/jupyter/"
    assert result.stdout == url + "\n"
    assert "Launching jupyter: JupyterLab on Large CPU (cpu-large) for 1h30m." in result.stderr
    assert re.search(r"\[0:\d\d\] starting +Server requested", result.stderr)
    assert re.search(r"\[0:\d\d\] ready +Server ready at /user/alice/jupyter/", result.stderr)
    assert f"Ready. Open {url}lab in a browser" in result.stderr
    # the URL works for its owner
    r = httpx.get(url + "api/status", headers={"Authorization": f"token {tokens['alice']}"})
    assert r.status_code == 200

    listing = alice("list")
    assert listing.returncode == 0, listing.stderr
    header, row = listing.stdout.splitlines()
    assert header.split() == ["NAME", "SERVICE", "PROFILE", "STATE", "TIME", "LEFT", "URL"]
    cells = row.split()
    assert cells[:7] == ["jupyter", "jupyter", "cpu-large", "(8", "CPU,", "32G)", "running"]
    assert cells[-1] == url
    time_left = " ".join(cells[7:-1])
    assert re.fullmatch(r"(59m|1h) \(idle\)", time_left), time_left

    view = json.loads(alice("describe", "jupyter", "--json").stdout)
    assert view["state"] == "running"
    assert view["open_url"] == url + "lab"
    assert view["hours"] == 1.5
    assert view["resources"] == {
        "cpus": 8, "memory": "32G", "memory_bytes": 32 * 2**30, "gpus": 0, "gpu_type": None,
    }  # fmt: skip
    text = alice("describe", "jupyter").stdout
    assert "Profile      Large CPU (cpu-large): 8 CPU, 32G" in text
    assert f"Open         {url}lab" in text

    assert alice("url", "jupyter").stdout == url + "\n"
    assert json.loads(alice("url", "jupyter", "--json").stdout) == {
        "name": "jupyter", "url": url, "open_url": url + "lab",
    }  # fmt: skip
    logs = alice("logs", "jupyter", "--lines", "50")
    assert "Jupyter Server" in logs.stdout
    assert len(logs.stdout.splitlines()) <= 50

    stopped = alice("stop", "jupyter")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stderr == "Stopped jupyter.\n"
    assert hub.server("alice", "jupyter")["stopped"]  # type: ignore[index]
    assert alice("list").stderr.startswith("No sessions.")
    assert "stopped" in alice("list", "--all").stdout
    assert alice("stop", "jupyter").stderr == "jupyter is already stopped.\n"
    one_line_error(alice("url", "jupyter"), 6, "jupyter is stopped; start it again with")
    assert alice("stop", "jupyter", "--remove").returncode == 0
    assert hub.server("alice", "jupyter") is None


def test_gpus_pick_the_profile(alice: Cli, hub: Hub) -> None:
    result = alice("launch", "jupyter", "--gpus", "1", "--gpu-type", "A100", "--name", "gpu",
                   "--wait", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["profile"] == "gpu-1"
    assert view["resources"]["gpus"] == 1
    assert "1 x A100 GPU" in alice("describe", "gpu").stdout
    one_line_error(
        alice("launch", "jupyter", "--gpus", "2"),
        4,
        "no profile of jupyter has 2 GPUs; it offers: cpu-small (no GPU), cpu-large (no GPU),"
        " gpu-1 (1 x A100 GPU)",
    )
    alice("stop", "gpu", "--remove")


def test_a_queued_session_says_why_and_when(alice: Cli, hub: Hub) -> None:
    waiting = alice.popen("launch", "jupyter", "--name", "q-one", "--wait")
    assert waiting.stderr is not None
    seen = []
    for line in waiting.stderr:
        seen.append(line)
        if "queued" in line:
            break
    assert re.search(
        r"\[0:\d\d\] queued +Job 4242 is queued in partition gpu: waiting for GPUs to be free"
        r" \(Resources\); expected start \d\d:\d\d \(in 12 minutes\)",
        seen[-1],
    ), seen
    # meanwhile, the other commands say the same
    listing = alice("list")
    assert re.search(r"^q-one +jupyter +cpu-small .* queued +- +http", listing.stdout, re.M)
    described = alice("describe", "q-one").stdout
    assert re.search(r"^State +queued$", described, re.M)
    assert "Progress     Job 4242 is queued in partition gpu" in described
    one_line_error(alice("url", "q-one"), 6, "q-one is queued (Job 4242 is queued in partition")
    gave_up = alice("wait", "q-one", "--timeout", "1")
    assert gave_up.returncode == 8
    *progress, last = gave_up.stderr.splitlines()
    assert "queued   Job 4242 is queued" in progress[-1]
    assert last == (
        "berth: q-one is still queued after 1s; it goes on: follow it with `berth wait q-one`"
        " or give up with `berth stop q-one`"
    )
    release(hub, "q-one")
    out, err = waiting.communicate(timeout=180)
    assert waiting.returncode == 0, err
    assert out == f"{hub.url}/user/alice/q-one/\n"
    assert re.search(r"starting +Job 4242 is running on node1; starting the session", err)
    # a second `wait` on a ready session answers at once
    assert alice("wait", "q-one").stdout == f"{hub.url}/user/alice/q-one/\n"
    alice("stop", "q-one", "--remove")


def test_on_a_terminal_the_wait_is_a_live_line(alice: Cli, hub: Hub) -> None:
    """stderr on a terminal: the messages above, a status line redrawn in place below them."""
    controller, terminal = pty.openpty()
    waiting = subprocess.Popen(
        [BERTH, "launch", "jupyter", "--name", "q-live", "--wait"],
        env=alice.env(),
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
    )
    os.close(terminal)
    screen = b""
    while b"queued for 0:0" not in screen:
        ready, _, _ = select.select([controller], [], [], 60)
        assert ready, screen
        screen += os.read(controller, 4096)
    release(hub, "q-live")
    out, _ = waiting.communicate(timeout=180)
    with contextlib.suppress(OSError):
        while chunk := os.read(controller, 4096):
            screen += chunk
    os.close(controller)
    assert waiting.returncode == 0
    assert out == f"{hub.url}/user/alice/q-live/\n"
    text = screen.decode()
    assert "\r\x1b[2K" in text  # the status line is cleared and redrawn
    assert re.search(r"[|/\\-] queued for 0:\d\d", text)
    assert re.search(r"\[0:\d\d\] queued +Job 4242 is queued", text)
    assert re.search(r"\[0:\d\d\] ready +Server ready at /user/alice/q-live/", text)
    alice("stop", "q-live", "--remove")


def test_a_session_that_cannot_start_says_so(alice: Cli) -> None:
    result = alice("launch", "jupyter", "--name", "fail-now", "--wait")
    assert result.returncode == 7, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "berth: fail-now failed to start: Slurm job 4243 ended (FAILED) before the session was"
        " up. Its last lines: module: command not found / srun: error: node1: task 0: Exited"
        " with exit code 127; see `berth logs fail-now`"
    )
    # `wait` on it later says the same
    later = alice("wait", "fail-now")
    assert later.returncode == 7
    assert later.stderr.splitlines()[-1].startswith("berth: fail-now failed to start: Slurm job")
    alice("stop", "fail-now", "--remove")


def test_without_wait_launch_returns_at_once(alice: Cli, hub: Hub) -> None:
    result = alice("launch", "jupyter", "--name", "q-later")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "q-later\n"
    assert "Follow it with `berth wait q-later`" in result.stderr
    # stopping a queued session gives up its place
    assert alice("stop", "q-later", "--remove").returncode == 0
    assert hub.server("alice", "q-later") is None


# -- what is refused --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["launch", "jupytr"], 4, "unknown service 'jupytr'; this hub offers: jupyter, code-"),
        (["launch", "jupyter", "-p", "huge"], 4,
         "'huge' is not a profile jupyter runs on; choose one of: cpu-small, cpu-large, gpu-1"),
        (["launch", "vllm", "-p", "gpu-4", "-i", f"model={MODEL}"], 4,
         "'gpu-4' is not a profile vllm runs on; choose one of: gpu-1"),
        (["launch", "jupyter", "-p", "cpu-small", "--gpus", "1"], 2,
         "give either --profile or --gpus/--gpu-type, not both"),
        (["launch", "vllm", "--input", "model"], 2,
         "--input expects key=value (e.g. --input model=...), got 'model'"),
        (["launch", "vllm", "--input", "=x"], 2, "--input expects key=value"),
        (["launch", "vllm", "--input", "modle=x"], 2,
         "vllm has no input 'modle'; its inputs are: model, max_model_len"),
        (["launch", "vllm", "-i", f"model={MODEL}", "-i", "max_model_len=big"], 2,
         "--input max_model_len=big: expected a whole number"),
        (["launch", "vllm", "-i", f"model={MODEL}", "-i", f"model={MODEL}"], 2,
         "--input model is given twice"),
        (["launch", "vllm"], 2, "vllm needs --input model=... (Hugging Face model id"),
        (["launch", "vllm", "-i", "model=../../etc/passwd", "--name", "bad-model"], 2,
         "the hub refused to start bad-model: input 'model' of vllm: '../../etc/passwd' does not"
         " match the allowed pattern"),
        (["launch", "vllm", "-i", "model=a/b", "-i", "max_model_len=100", "--name", "short"], 2,
         "input 'max_model_len' of vllm: 100 is below the minimum of 512"),
        (["launch", "jupyter", "--hours", "100", "--name", "long"], 2,
         "100 hours is longer than the 8 hours allowed for jupyter on cpu-small; ask for at most"),
        (["launch", "jupyter", "--hours", "-1"], 2, "'-1': hours must be more than 0"),
        (["launch", "jupyter", "--hours", "soon"], 2, "'soon' is not a number of hours"),
        (["launch", "jupyter", "--name", "My Lab"], 2, "'My Lab' is not a valid session name"),
        (["launch", "jupyter", "--colour", "red"], 2, "unrecognized arguments: --colour red"),
        (["lunch", "jupyter"], 2, "invalid choice: 'lunch'"),
        (["describe", "nope"], 4, "you have no session named 'nope'; see `berth list`"),
        (["url", "nope"], 4, "you have no session named 'nope'"),
        (["wait", "nope"], 4, "you have no session named 'nope'"),
        (["stop", "nope"], 4, "you have no session named 'nope'"),
        (["logs", "nope"], 4, "no output is kept for 'nope'"),
        (["logs", "nope", "--lines", "many"], 2, "'many' is not a whole number"),
        (["list", "--user", "bob"], 4, "no user named 'bob' (or your token may not see it)"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_an_exit_code(
    alice: Cli, hub: Hub, args: list[str], code: int, message: str
) -> None:
    before = hub.api("GET", "/users/alice").json()["servers"]
    one_line_error(alice(*args), code, message)
    # nothing was started, and a refused launch leaves no session record behind
    assert hub.api("GET", "/users/alice").json()["servers"] == before
    assert {"bad-model", "short", "long"}.isdisjoint(
        hub.api("GET", "/users/alice", params={"include_stopped_servers": 1}).json()["servers"]
    )


def test_a_name_in_use_is_refused(alice: Cli) -> None:
    assert alice("launch", "jupyter", "--name", "q-busy").returncode == 0
    one_line_error(
        alice("launch", "files", "--name", "q-busy"),
        6,
        "you already have a session named 'q-busy'; choose another --name, or stop it with"
        " `berth stop q-busy`",
    )
    alice("stop", "q-busy", "--remove")


def test_an_unreachable_hub(alice: Cli) -> None:
    one_line_error(
        alice("list", BERTH_URL="http://127.0.0.1:9"),
        5,
        "cannot reach the hub at http://127.0.0.1:9: no connection",
    )


def test_an_address_that_is_not_a_hub(alice: Cli, hub: Hub) -> None:
    # the proxy answers, but this path has no hub behind it
    one_line_error(
        alice("list", BERTH_URL=f"{hub.url}/elsewhere"),
        1,
        f"is {hub.url}/elsewhere the hub's address?",
    )


def test_wrong_revoked_and_expired_tokens(alice: Cli, hub: Hub) -> None:
    expected = f"the hub at {hub.url} does not accept your token (wrong, expired or revoked)"
    one_line_error(alice("list", BERTH_TOKEN="0123456789abcdef"), 3, expected)
    revoked = hub.token("bob")
    hub.api("DELETE", f"/users/bob/tokens/{token_id(hub, 'bob', revoked)}")
    one_line_error(alice("list", BERTH_TOKEN=revoked), 3, expected)
    expired = hub.token("bob")
    expire(hub, token_id(hub, "bob", expired))
    one_line_error(alice("services", BERTH_TOKEN=expired), 3, expected)


def test_a_token_without_the_permission(alice: Cli, hub: Hub) -> None:
    narrow = hub.token("bob", scopes=["read:users:name!user"])
    one_line_error(
        alice("list", BERTH_TOKEN=narrow),
        3,
        "your token may not read bob's sessions (it lacks the read:servers scope); create a"
        f" token with more permissions at {hub.url}/hub/token and run `berth login`",
    )
    one_line_error(
        alice("services", BERTH_TOKEN=narrow),
        3,
        "your token may not read the catalog (Action is not authorized with current scopes;"
        " requires any of [read:servers])",
    )


def test_an_admin_acts_for_a_user(alice: Cli, hub: Hub) -> None:
    assert alice("launch", "jupyter", "--name", "q-mine").returncode == 0
    result = alice("list", "--user", "alice", "--json", BERTH_TOKEN=hub.admin_token)
    assert [s["name"] for s in json.loads(result.stdout)["sessions"]] == ["q-mine"]
    alice("stop", "q-mine", "--remove")


def test_extend_needs_the_culler(tmp_path: Path) -> None:
    """A hub whose admin turned berth-culler off: sessions have no deadline to extend."""
    extra = f"berth.hub_config.configure(c, {str(EXAMPLE_CATALOG)!r}, culler=False)"
    with running_hub(tmp_path, catalog=None, extra_config=extra) as hub:
        hub.create_user("alice")
        cli = Cli(tmp_path / "home", hub)
        assert (
            cli("login", "--url", hub.url, "--token-stdin", input=hub.token("alice")).returncode
            == 0
        )
        one_line_error(
            cli("extend", "nope"), 1, "this hub runs no berth-culler, so sessions have no deadline"
        )


def test_deadlines_and_extensions(alice: Cli, hub: Hub, tokens: dict[str, str]) -> None:
    assert alice("launch", "jupyter", "--name", "ext", "--hours", "2", "--wait").returncode == 0
    catalog = json.loads(alice("services", "--json").stdout)
    assert catalog["culler_api"] == "/services/berth-culler/api/"

    # the idle limit (1h) comes before the end of the 2 hours
    row = next(line for line in alice("list").stdout.splitlines() if line.startswith("ext "))
    assert re.search(r" running +(59m|1h) \(idle\) +http", row), row
    text = alice("describe", "ext").stdout
    assert re.search(r"^Ends +\d\d:\d\d \(in (59m|1h)\), idle limit$", text, re.M), text
    assert re.search(r"^Time limit +\d\d:\d\d \(in (1h59m|2h)\)$", text, re.M), text
    assert re.search(r"^Idle limit +\d\d:\d\d \(in (59m|1h)\) unless used$", text, re.M)
    assert re.search(r"^Extension +0s used of 4h, 4h left$", text, re.M), text
    view = json.loads(alice("describe", "ext", "--json").stdout)
    assert view["deadlines"]["extension"] == {
        "used_seconds": 0, "cap_seconds": 4 * 3600, "left_seconds": 4 * 3600,
    }  # fmt: skip

    extended = alice("extend", "ext", "--hours", "1", "--reason", "one more run")
    assert extended.returncode == 0, extended.stderr
    assert re.fullmatch(
        r"Extended ext by 1h: its time ends at \d\d:\d\d \(in (2h59m|3h)\); 3h of extension"
        r" left\. Unused, it ends sooner: \d\d:\d\d \(in (59m|1h)\)\.\n",
        extended.stdout,
    ), extended.stdout
    # the culler's own record says the same
    r = hub.get(f"{catalog['culler_api']}sessions/alice/ext", token=tokens["alice"])
    assert r.status_code == 200, r.text
    assert r.json()["extension"]["used_seconds"] == 3600

    as_json = json.loads(alice("extend", "ext", "--hours", "0.5", "--json").stdout)
    assert as_json["extended_by_seconds"] == 1800
    assert as_json["extension"]["left_seconds"] == 2.5 * 3600
    one_line_error(
        alice("extend", "ext", "--hours", "5"),
        2,
        "berth-culler refused to extend ext: 5h is more than the extension cap of 4h for this"
        " session",
    )
    one_line_error(
        alice("extend", "ext", "--hours", "3"),
        6,
        "cannot extend alice/ext: only 2h30m of the 4h extension cap is left (1h30m used); ask"
        " for at most 2.5 hours",
    )
    one_line_error(alice("extend", "nope"), 4, "you have no session named 'nope'")
    one_line_error(alice("extend", "ext", "--hours", "0"), 2, "'0': hours must be more than 0")
    alice("stop", "ext", "--remove")


def token_id(hub: Hub, user: str, token: str) -> str:
    r = hub.api("GET", "/user", token=token)
    assert r.status_code == 200
    tokens: list[dict[str, Any]] = hub.api("GET", f"/users/{user}/tokens").json()["api_tokens"]
    newest = max(tokens, key=lambda t: t["created"])
    return str(newest["id"])


def expire(hub: Hub, token_id: str) -> None:
    """Move the token's expiry into the past (time travel in the hub's own database)."""
    with sqlite3.connect(hub.dir / "jupyterhub.sqlite") as db:
        db.execute(
            "UPDATE api_tokens SET expires_at = '2000-01-01 00:00:00.000000' WHERE id = ?",
            (int(token_id.lstrip("a")),),
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tokens = hub.api("GET", "/users/bob/tokens").json()["api_tokens"]
        if not any(str(t["id"]) == token_id for t in tokens):
            return
        time.sleep(0.2)
