"""The CLI's pure parts against literal expected output: addresses, logins, profile matching,
inputs, names, states, tables, the progress stream, error sentences; and the home page's cards."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from berth.cli.client import explain
from berth.cli.config import Login, find_login, normalize_url, save_login
from berth.cli.display import describe_text, duration, list_table, when
from berth.cli.errors import CliError, ExitCode
from berth.cli.progress import parse_sse, phase_of
from berth.cli.sessions import (
    choose_profile,
    default_name,
    parse_inputs,
    session_view,
    state_of,
)
from berth.hub_config.catalog import Catalog
from berth.hub_config.catalog_json import catalog_document
from berth.hub_config.pages import session_card, suggest_name

LOGIN = Login(url="https://hub.example.org", token="t", api_url="https://hub.example.org/hub/api",
              source="test")  # fmt: skip
NOW = datetime(2025, 3, 4, 14, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def catalog(example_catalog: Catalog) -> dict[str, Any]:
    unavailable = {"gpu-4": "it needs 4 GPUs and this machine offers 1 to sessions"}
    return catalog_document(example_catalog, (), unavailable, user="ann")


def service(catalog: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in catalog["services"] if s["name"] == name)
    return found


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("hub.example.org", "https://hub.example.org"),
        ("https://hub.example.org/", "https://hub.example.org"),
        ("http://127.0.0.1:8000/hub/", "http://127.0.0.1:8000"),
        ("https://host/jhub/hub/api", "https://host/jhub"),
        ("https://host/jhub/hub/home", "https://host/jhub"),
        ("https://host/jhub", "https://host/jhub"),
    ],
)
def test_hub_addresses(text: str, url: str) -> None:
    assert normalize_url(text) == url


@pytest.mark.parametrize("text", ["", "ftp://host", "https://", "://x"])
def test_not_hub_addresses(text: str) -> None:
    with pytest.raises(CliError) as info:
        normalize_url(text)
    assert info.value.code == ExitCode.USAGE


def test_where_the_login_comes_from(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert find_login(env) is None
    session = {
        **env,
        "JUPYTERHUB_API_URL": "http://10.0.0.5:8081/hub/api",
        "JUPYTERHUB_PUBLIC_HUB_URL": "https://hub.example.org/hub/",
        "JUPYTERHUB_API_TOKEN": "server-token",
    }
    # inside a session: the public address to show, the internal one for the API
    assert find_login(session) == Login(
        url="https://hub.example.org",
        token="server-token",
        api_url="http://10.0.0.5:8081/hub/api",
        source="the session's JUPYTERHUB_* variables",
    )
    path = save_login("https://other.example.org", "personal", env)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text()) == {"url": "https://other.example.org", "token": "personal"}
    # a login beats the session's variables; BERTH_* beat both
    assert find_login(session) == Login(
        "https://other.example.org", "personal", "https://other.example.org/hub/api", str(path)
    )
    assert find_login({**session, "BERTH_TOKEN": "ci"}).token == "ci"  # type: ignore[union-attr]


def test_profiles_are_chosen_by_name_or_gpus(catalog: dict[str, Any]) -> None:
    jupyter = service(catalog, "jupyter")
    assert choose_profile(jupyter)["name"] == "cpu-small"
    assert choose_profile(jupyter, gpus=0)["name"] == "cpu-small"
    assert choose_profile(jupyter, gpus=1)["name"] == "gpu-1"
    assert choose_profile(jupyter, gpu_type="A100")["name"] == "gpu-1"
    assert choose_profile(jupyter, profile="cpu-large")["name"] == "cpu-large"
    with pytest.raises(CliError) as info:
        choose_profile(jupyter, gpus=1, gpu_type="h100")
    assert info.value.message == (
        "no profile of jupyter has 1 H100 GPU; it offers: cpu-small (no GPU), cpu-large (no GPU),"
        " gpu-1 (1 x A100 GPU)"
    )
    assert info.value.code == ExitCode.NOT_FOUND


def test_a_profile_this_hub_cannot_run(example_catalog: Catalog) -> None:
    everything = {name: "no GPUs here" for name in ("gpu-1", "gpu-4")}
    catalog = catalog_document(example_catalog, ("gpu-large",), everything, user="ann")
    with pytest.raises(CliError) as info:
        choose_profile(service(catalog, "vllm"))
    assert info.value.message == (
        "vllm cannot run on this hub (gpu-1: no GPUs here; gpu-4: no GPUs here)"
    )
    # when the default profile cannot run, the first one that can is used
    ollama = service(catalog, "ollama")
    assert choose_profile(ollama)["name"] == "cpu-large"


def test_inputs_are_typed_from_the_catalog(catalog: dict[str, Any]) -> None:
    vllm = service(catalog, "vllm")
    assert parse_inputs(vllm, ["model=org/m=1", "max_model_len=4096"]) == {
        "model": "org/m=1",
        "max_model_len": 4096,
    }
    for pairs, message in [
        (["model"], "--input expects key=value (e.g. --input model=...), got 'model'"),
        (["model=a/b", "max_model_len=4k"], "--input max_model_len=4k: expected a whole number"),
        (["max_model_len=4096"], "vllm needs --input model=... (Hugging Face model id"),
    ]:
        with pytest.raises(CliError) as info:
            parse_inputs(vllm, pairs)
        assert info.value.message.startswith(message)
        assert info.value.code == ExitCode.USAGE


def test_default_names() -> None:
    assert default_name("jupyter", []) == "jupyter"
    assert default_name("jupyter", ["jupyter", "jupyter-2"]) == "jupyter-3"
    assert default_name("My_Service", []) == "my-service"
    assert default_name("3d", []) == "s-3d"
    assert suggest_name(["session-1", "lab"]) == "session-2"


def test_states_and_phases() -> None:
    queued = {"message": "Job 7 is queued in partition gpu: waiting for GPUs (Resources)"}
    kube = {"message": "Waiting for 1 free A100 GPU", "raw_event": {"reason": "FailedScheduling"}}
    assert phase_of(queued) == "queued"
    assert phase_of(kube) == "queued"
    assert phase_of({"message": "Server requested"}) == "starting"
    assert phase_of({"ready": True}) == "ready"
    assert phase_of({"failed": True, "message": "queued"}) == "failed"
    assert state_of({"ready": True, "pending": None}) == "running"
    assert state_of({"ready": False, "pending": "spawn"}, queued) == "queued"
    assert state_of({"ready": False, "pending": "spawn"}) == "starting"
    assert state_of({"ready": False, "pending": "stop"}) == "stopping"
    assert state_of({"ready": False, "pending": None}) == "stopped"


def test_the_progress_stream() -> None:
    lines = [
        "",
        ": keep-alive",
        'data: {"progress": 0, "message": "Server requested"}',
        "",
        "data: not json",
        "",
        'data: {"progress": 100,',
        'data:  "ready": true}',
        "",
        'data: {"late": 1}',
    ]
    assert list(parse_sse(lines)) == [
        {"progress": 0, "message": "Server requested"},
        {"progress": 100, "ready": True},
        {"late": 1},
    ]


def test_durations_and_moments() -> None:
    assert [duration(s) for s in (None, 0, 59, 60, 3599, 3600, 5400, 90061)] == [
        "-", "0s", "59s", "1m", "59m", "1h", "1h30m", "1d1h1m",
    ]  # fmt: skip
    assert when("2025-03-04T14:48:00Z", NOW) == "14:48 (in 48m)"
    assert when("2025-03-04T13:48:00.5Z", NOW) == "13:48 (12m ago)"
    assert when("2025-03-05T09:00:00Z", NOW) == "Mar 05 09:00 (in 19h)"
    assert when(None, NOW) == "-"


SERVER = {
    "ready": True,
    "pending": None,
    "url": "/user/ann/llm/",
    "started": "2025-03-04T13:00:00Z",
    "last_activity": "2025-03-04T13:58:00Z",
    "user_options": {"service": "vllm", "profile": "gpu-1", "hours": 2, "inputs": {"model": "a/b"}},
}
DEADLINES = {
    "ends_at": "2025-03-04T14:28:00Z",
    "ends_because": "idle",
    "seconds_left": 1680,
    "hard_deadline": "2025-03-04T15:00:00Z",
    "idle_deadline": "2025-03-04T14:28:00Z",
    "extension": {"used_seconds": 0, "cap_seconds": 14400, "left_seconds": 14400},
    "warning": None,
}


def test_a_session_as_people_see_it(catalog: dict[str, Any]) -> None:
    view = session_view(
        "llm", SERVER, user="ann", hub_url="https://hub.example.org/jhub", catalog=catalog,
        deadline=DEADLINES,
    )  # fmt: skip
    assert view["url"] == "https://hub.example.org/user/ann/llm/"
    assert view["open_url"] == "https://hub.example.org/user/ann/llm/docs"
    assert list_table([view], NOW).splitlines() == [
        "NAME  SERVICE  PROFILE                           STATE    TIME LEFT   URL",
        "llm   vllm     gpu-1 (8 CPU, 64G, 1 x A100 GPU)  running  28m (idle)"
        "  https://hub.example.org/user/ann/llm/",
    ]
    assert describe_text(view, NOW.astimezone(timezone(timedelta(0)))) == "\n".join(
        [
            "Session      ann/llm",
            "Service      vLLM inference server (vllm)",
            "Profile      1 GPU (gpu-1): 8 CPU, 64G, 1 x A100 GPU",
            "State        running since 13:00 (1h ago)",
            "URL          https://hub.example.org/user/ann/llm/",
            "Open         https://hub.example.org/user/ann/llm/docs",
            "Asked for    2h",
            "Ends         14:28 (in 28m), idle limit",
            "Time limit   15:00 (in 1h)",
            "Idle limit   14:28 (in 28m) unless used",
            "Extension    0s used of 4h, 4h left",
            "Last active  13:58 (2m ago)",
            "Inputs       model=a/b",
        ]
    )


def test_the_home_page_card(example_catalog: Catalog) -> None:
    card = session_card(
        "llm",
        SERVER["user_options"],  # type: ignore[arg-type]
        state="starting",
        catalog=example_catalog,
        url="/user/ann/llm/",
        progress_url="/hub/api/users/ann/servers/llm/progress",
    )
    assert card == {
        "name": "llm",
        "state": "starting",
        "state_label": "Starting",
        "active": True,
        "service": "vllm",
        "service_display_name": "vLLM inference server",
        "profile": "gpu-1",
        "profile_display_name": "1 GPU",
        "cpus": "8",
        "memory": "64G",
        "gpus": 1,
        "gpu_type": "A100",
        "hours": 2,
        "inputs": {"model": "a/b"},
        "url": "/user/ann/llm/",
        "open_url": "/user/ann/llm/docs",
        "progress_url": "/hub/api/users/ann/servers/llm/progress",
    }
    # a session Berth did not start (or whose service left the catalog) still gets a card
    other = session_card("old", {}, state="stopped", catalog=example_catalog, url="/u/",
                         progress_url="/p")  # fmt: skip
    assert (other["service_display_name"], other["active"], other["gpus"]) == ("Session", False, 0)


def response(status: int, body: object, path: str = "/hub/api/users/ann") -> httpx.Response:
    request = httpx.Request("GET", f"https://hub.example.org{path}")
    return httpx.Response(status, json=body, request=request)


@pytest.mark.parametrize(
    ("status", "message", "code", "sentence"),
    [
        (403, "Missing or invalid credentials.", ExitCode.AUTH,
         "the hub at https://hub.example.org does not accept your token (wrong, expired or"
         " revoked); create one at https://hub.example.org/hub/token and run `berth login`"),
        (403, "Action is not authorized with current scopes; requires any of [servers]",
         ExitCode.AUTH,
         "your token may not start lab (Action is not authorized with current scopes; requires"
         " any of [servers]); create a token with more permissions at"
         " https://hub.example.org/hub/token and run `berth login`"),
        (400, "100 hours is longer than the 8 hours allowed", ExitCode.USAGE,
         "the hub refused to start lab: 100 hours is longer than the 8 hours allowed"),
        (404, "Not Found", ExitCode.NOT_FOUND, "the hub found nothing to start lab: Not Found"),
        (409, "lab is already running", ExitCode.CONFLICT, "lab is already running"),
        (500, "boom", ExitCode.FAILED,
         "the hub failed to start lab (500 Internal Server Error: boom); try again in a moment,"
         " or ask an admin to look at the hub log"),
    ],
)  # fmt: skip
def test_hub_errors_in_one_sentence(status: int, message: str, code: int, sentence: str) -> None:
    error = explain(response(status, {"status": status, "message": message}), LOGIN,
                    action="start lab")  # fmt: skip
    assert (error.message, error.code) == (sentence, code)
    assert "\n" not in error.message
