"""berth-gate end to end: the real JupyterHub, the real configurable-http-proxy, BerthLocalSpawner.

Gated sessions of a small real web service (and the vLLM stand-in) are launched through the hub's
API; who gets through is checked for HTTP and websockets alike: anonymous, the owner by token and
by browser cookie, another user, an admin, and a user the hub grants access:servers on the
session. An OpenAI client talks to the vLLM stand-in through the hub's URL with the user's token.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest

from .gatekit import STANDINS
from .hubtest import Hub, running_hub

CATALOG = f"""
version: 1
backend: local
profiles:
  small: {{cpus: 1, memory: 1G}}
services:
  web:
    display_name: Web app
    kind: gated
    command: [{sys.executable}, {STANDINS / "webapp.py"}, --port, "{{port}}"]
    readiness_path: /health
    prefix: strip
    profiles: [small]
  llm:
    display_name: vLLM (stand-in)
    kind: gated
    command: [{sys.executable}, {STANDINS / "vllm.py"}, serve, "{{input.model}}",
              --host=127.0.0.1, "--port={{port}}", "--root-path={{base_url}}"]
    inputs:
      model: {{type: string, required: true, pattern: '^[a-z-]+/[a-z-]+$'}}
    readiness_path: /health
    prefix: strip
    profiles: [small]
"""

EXTRA = """
c.JupyterHub.load_roles.append(
    {"name": "share-alice-web", "scopes": ["access:servers!server=alice/web"], "users": ["carol"]}
)
c.Spawner.environment = {"JUPYTERHUB_ACTIVITY_INTERVAL": "1"}
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(
        tmp_path_factory.mktemp("gatehub"), catalog=CATALOG, extra_config=EXTRA
    ) as hub:
        yield hub


@pytest.fixture(scope="module")
def tokens(hub: Hub) -> dict[str, str]:
    hub.create_user("admin", admin=True)
    for name in ("alice", "bob", "carol"):
        hub.create_user(name)
    return {name: hub.token(name) for name in ("alice", "bob", "carol", "admin")}


@pytest.fixture(scope="module")
def web(hub: Hub, tokens: dict[str, str]) -> dict[str, Any]:
    r = hub.start_session("alice", "web", {"service": "web"}, token=tokens["alice"])
    assert r.status_code in (201, 202), r.text
    return hub.wait_ready("alice", "web")


def test_http_auth_matrix(hub: Hub, tokens: dict[str, str], web: dict[str, Any]) -> None:
    assert web["url"] == "/user/alice/web/"
    url = "/user/alice/web/echo/hello"
    assert hub.get(url).status_code == 401  # a program without a token
    browser = hub.get(url, headers={"Accept": "text/html"})
    assert browser.status_code == 302
    assert browser.headers["location"].startswith(
        "/hub/api/oauth2/authorize?client_id=jupyterhub-user-alice-web"
    )
    owner = hub.get(url, token=tokens["alice"])
    assert owner.status_code == 200
    assert owner.json()["path"] == "/echo/hello"
    assert hub.get(url, token=tokens["bob"]).status_code == 403
    assert hub.get(url, token=tokens["admin"]).status_code == 200
    assert hub.get(url, token=tokens["carol"]).status_code == 200  # granted access:servers
    with hub.login("alice") as alice:
        r = alice.get(url, headers={"Accept": "text/html"})  # through the hub's OAuth
        assert r.status_code == 200 and r.json()["path"] == "/echo/hello"
    with hub.login("bob") as bob:
        assert bob.get(url, headers={"Accept": "text/html"}).status_code == 403


async def _ws_status(hub: Hub, headers: dict[str, str]) -> int | str:
    url = hub.url.replace("http://", "ws://") + "/user/alice/web/ws"
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, headers=headers) as ws:
                await ws.send_str("ping over the hub")
                assert await ws.receive_str() == "ping over the hub"
                return "open"
        except aiohttp.WSServerHandshakeError as e:
            return e.status


async def test_websocket_auth_matrix(hub: Hub, tokens: dict[str, str], web: dict[str, Any]) -> None:
    def auth(name: str) -> dict[str, str]:
        return {"Authorization": f"token {tokens[name]}"}

    assert await _ws_status(hub, {}) == 403
    assert await _ws_status(hub, auth("alice")) == "open"
    assert await _ws_status(hub, auth("bob")) == 403
    assert await _ws_status(hub, auth("admin")) == "open"
    assert await _ws_status(hub, auth("carol")) == "open"
    with hub.login("alice") as alice:
        assert (
            alice.get("/user/alice/web/health", headers={"Accept": "text/html"}).status_code == 200
        )
        cookie = "; ".join(f"{c.name}={c.value}" for c in alice.cookies.jar)
    origin = {"Origin": hub.url}
    assert await _ws_status(hub, {"Cookie": cookie, **origin}) == "open"
    assert await _ws_status(hub, {"Cookie": cookie, "Origin": "http://evil.example"}) == 403


def test_activity_reaches_the_hub(hub: Hub, tokens: dict[str, str], web: dict[str, Any]) -> None:
    before = hub.server("alice", "web")
    assert before is not None
    assert hub.get("/user/alice/web/echo/", token=tokens["alice"]).status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        after = hub.server("alice", "web")
        assert after is not None
        if after["last_activity"] != before["last_activity"]:
            break
        time.sleep(0.3)
    assert after["last_activity"] > before["last_activity"]


def test_openai_client_through_the_hub(hub: Hub, tokens: dict[str, str]) -> None:
    options = {"service": "llm", "inputs": {"model": "org/tiny-chat"}}
    r = hub.start_session("alice", "llm", options, token=tokens["alice"])
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("alice", "llm")
    client = openai.OpenAI(base_url=f"{hub.url}/user/alice/llm/v1", api_key=tokens["alice"])
    with client:
        assert [m.id for m in client.models.list().data] == ["org/tiny-chat"]
        stream = client.chat.completions.create(
            model="org/tiny-chat",
            messages=[{"role": "user", "content": "through the hub"}],
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "echo: through the hub"
    with openai.OpenAI(
        base_url=f"{hub.url}/user/alice/llm/v1", api_key=tokens["bob"], max_retries=0
    ) as bob:
        with pytest.raises(openai.PermissionDeniedError):
            bob.models.list()
    hub.stop_session("alice", "llm")
