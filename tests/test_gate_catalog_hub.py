"""The example catalog's terminal, code-server and RStudio entries end to end: the real JupyterHub,
the real configurable-http-proxy, BerthLocalSpawner and berth-gate, each service launched from
the catalog's own entry with only its program swapped for the stand-in in tests/standins/ (none
of the three can be installed here).

- terminal: a websocket client with the owner's token types into the shell and reads the answer;
  the websocket's auth matrix (anonymous, another user, the owner by token and by cookie, a
  cookie sent from another site);
- code-server: a browser-like client logged in through the hub loads the page and every relative
  link under the session prefix, follows code-server's relative redirect, and opens the
  workbench websocket with the hub's origin; a foreign origin is refused, by the gate for a
  cookie and by code-server's own check for a token;
- RStudio: rserver's absolute redirects (sign-in and back) land under the session prefix and its
  cookies are scoped to it; ``{os_user}`` became the account the session runs as.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
import pytest
import yaml
from playwright.sync_api import expect

from .browser import chromium, log_in
from .gatekit import STANDINS
from .hubtest import EXAMPLE_CATALOG, USER_PASSWORD, Hub, running_hub

#: catalog entry -> the stand-in that replaces its program (argv[0])
STANDIN_FOR = {
    "terminal": STANDINS / "ttyd.py",
    "code-server": STANDINS / "code_server.py",
    "rstudio": STANDINS / "rserver.py",
}


def example_catalog_with_standins() -> str:
    """The example catalog, with each entry's program (and nothing else) swapped."""
    catalog = yaml.safe_load(EXAMPLE_CATALOG.read_text())
    for name, standin in STANDIN_FOR.items():
        command = catalog["services"][name]["command"]
        catalog["services"][name]["command"] = [sys.executable, str(standin), *command[1:]]
    return yaml.safe_dump(catalog, sort_keys=False)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(
        tmp_path_factory.mktemp("cataloghub"), catalog=example_catalog_with_standins()
    ) as hub:
        yield hub


@pytest.fixture(scope="module")
def tokens(hub: Hub) -> dict[str, str]:
    for name in ("alice", "bob"):
        hub.create_user(name)
    return {name: hub.token(name) for name in ("alice", "bob")}


def start(hub: Hub, token: str, session: str, service: str) -> dict[str, Any]:
    r = hub.start_session("alice", session, {"service": service}, token=token)
    assert r.status_code in (201, 202), r.text
    return hub.wait_ready("alice", session)


def login_cookie(hub: Hub, path: str) -> str:
    """alice's cookies after a browser-like visit of ``path`` through the hub's OAuth."""
    with hub.login("alice") as alice:
        r = alice.get(path, headers={"Accept": "text/html"})
        assert r.status_code == 200, r.text
        return "; ".join(f"{c.name}={c.value}" for c in alice.cookies.jar)


def ws_url(hub: Hub, path: str) -> str:
    return hub.url.replace("http://", "ws://") + path


# -- terminal -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def terminal(hub: Hub, tokens: dict[str, str]) -> dict[str, Any]:
    return start(hub, tokens["alice"], "term", "terminal")


async def shell_says(hub: Hub, headers: dict[str, str]) -> str | int:
    """Type into the terminal; what the shell answered, or the handshake's refusal status."""
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(
                ws_url(hub, "/user/alice/term/ws"), headers=headers, protocols=("tty",)
            )
        except aiohttp.WSServerHandshakeError as e:
            return e.status
        async with ws:
            await ws.send_str(json.dumps({"AuthToken": "", "columns": 80, "rows": 24}))
            await ws.send_bytes(b"0echo berth-$((6*7))\r")
            seen = b""
            while b"berth-42" not in seen:
                message = await ws.receive_bytes(timeout=30)
                if message[:1] == b"0":
                    seen += message[1:]
            return "berth-42"


async def test_terminal_through_the_hub(
    hub: Hub, tokens: dict[str, str], terminal: dict[str, Any]
) -> None:
    assert terminal["url"] == "/user/alice/term/"
    page = hub.get("/user/alice/term/", token=tokens["alice"])
    assert page.status_code == 200 and "ttyd" in page.text
    assert await shell_says(hub, {"Authorization": f"token {tokens['alice']}"}) == "berth-42"


async def test_terminal_websocket_auth_matrix(
    hub: Hub, tokens: dict[str, str], terminal: dict[str, Any]
) -> None:
    assert await shell_says(hub, {}) == 403
    assert await shell_says(hub, {"Authorization": f"token {tokens['bob']}"}) == 403
    cookie = login_cookie(hub, "/user/alice/term/")
    assert await shell_says(hub, {"Cookie": cookie, "Origin": hub.url}) == "berth-42"
    assert await shell_says(hub, {"Cookie": cookie, "Origin": "http://evil.example"}) == 403


# -- code-server ----------------------------------------------------------------------------------

LINK = re.compile(r'(?:href|src)="([^"]+)"')


@pytest.fixture(scope="module")
def code_server(hub: Hub, tokens: dict[str, str]) -> dict[str, Any]:
    return start(hub, tokens["alice"], "code", "code-server")


def test_code_server_page_and_relative_links(hub: Hub, code_server: dict[str, Any]) -> None:
    prefix = f"{hub.url}/user/alice/code/"
    with hub.login("alice") as browser:
        page = browser.get("/user/alice/code/", headers={"Accept": "text/html"})
        assert page.status_code == 200 and str(page.url) == prefix
        links = LINK.findall(page.text)
        assert len(links) == 4
        for link in links:
            url = urljoin(str(page.url), link)
            assert url.startswith(prefix), url
            assert browser.get(url).status_code == 200, url
        # code-server's own redirects are relative: they stay under the prefix
        landed = browser.get("/user/alice/code/login", headers={"Accept": "text/html"})
        assert [r.headers["location"] for r in landed.history] == ["./"]
        assert str(landed.url) == prefix and "<title>code-server</title>" in landed.text


async def workbench_socket(hub: Hub, headers: dict[str, str]) -> str | int:
    url = ws_url(hub, "/user/alice/code/?reconnectionToken=t&skipWebSocketFrames=false")
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, headers=headers) as ws:
                await ws.send_str("workbench hello")
                return await ws.receive_str(timeout=30)
        except aiohttp.WSServerHandshakeError as e:
            return e.status


async def test_code_server_websocket_origin(
    hub: Hub, tokens: dict[str, str], code_server: dict[str, Any]
) -> None:
    cookie = login_cookie(hub, "/user/alice/code/")
    browser = {"Cookie": cookie, "Origin": hub.url}
    assert await workbench_socket(hub, browser) == "workbench hello"
    assert await workbench_socket(hub, {**browser, "Origin": "http://evil.example"}) == 403
    token = {"Authorization": f"token {tokens['alice']}"}
    assert await workbench_socket(hub, {**token, "Origin": hub.url}) == "workbench hello"
    # a token is not a cross-site risk for the gate, but code-server checks origins itself
    assert await workbench_socket(hub, {**token, "Origin": "http://evil.example"}) == 403
    said = 'does not match origin "evil.example"'  # code-server's own words, in the session log
    for _ in range(100):
        r = hub.api("GET", "/berth/users/alice/sessions/code/logs", token=tokens["alice"])
        if any(said in line for line in r.json()["lines"]):
            break
        await asyncio.sleep(0.1)
    assert any(said in line for line in r.json()["lines"])


# -- RStudio --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rstudio(hub: Hub, tokens: dict[str, str]) -> Iterator[dict[str, Any]]:
    try:
        yield start(hub, tokens["alice"], "rstudio", "rstudio")
    finally:
        shutil.rmtree("/tmp/rstudio-alice-rstudio", ignore_errors=True)  # --server-data-dir


def test_rstudio_redirects_land_under_the_prefix(hub: Hub, rstudio: dict[str, Any]) -> None:
    prefix = f"{hub.url}/user/alice/rstudio/"
    with hub.login("alice") as browser:
        page = browser.get("/user/alice/rstudio/", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "<title>RStudio Server</title>" in page.text
        assert str(page.url) == prefix
        rstudio_redirects = [
            r.headers["location"] for r in page.history if "oauth" not in r.headers["location"]
        ]
        assert rstudio_redirects[-2:] == [prefix + "auth-sign-in?appUri=%2F", prefix]
        cookies = {c.name: c for c in browser.cookies.jar}
        assert cookies["user-id"].path == "/user/alice/rstudio"
        rpc = browser.post(
            "/user/alice/rstudio/rpc/get_session_info",
            headers={"X-CSRF-Token": cookies["csrf-token"].value, "Origin": hub.url},
        )
        assert rpc.status_code == 200, rpc.text
    # --server-user={os_user}: the account the session runs as, which rserver accepted
    account = "berth" if getpass.getuser() == "root" else getpass.getuser()
    assert rpc.json()["result"] == {"user": account, "root_path": "/user/alice/rstudio"}


# -- in a real browser ----------------------------------------------------------------------------


@pytest.mark.browser
def test_terminal_and_editor_pages_in_a_real_browser(
    hub: Hub, terminal: dict[str, Any], code_server: dict[str, Any], artifacts: Path
) -> None:
    """Chromium signs in at the hub and uses both pages: their scripts find their websockets from
    the page's own location, and the browser's cookie and Origin get them through."""
    with chromium() as browser:
        page = browser.new_page()
        log_in(page, hub.url, "alice", USER_PASSWORD)
        page.goto(f"{hub.url}/user/alice/term/")
        screen = page.locator("#terminal-container")
        page.wait_for_function("document.title.startsWith('bash -l (')")  # ttyd's title message
        expect(screen).not_to_be_empty()  # the shell's prompt
        page.keyboard.type("echo berth-$((6*7))")
        page.keyboard.press("Enter")
        expect(screen).to_contain_text("berth-42")
        page.screenshot(path=artifacts / "gate-terminal.png")

        page.goto(f"{hub.url}/user/alice/code/")
        expect(page.locator("#status")).to_contain_text("connected: workbench ")
        expect(page.locator("body")).to_have_attribute("data-manifest", "code-server")
