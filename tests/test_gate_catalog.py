"""The example catalog's gated services, launched as the catalog launches them: the launch spec's
own berth-gate options, command and environment, with the program itself replaced by a faithful
stand-in where the real one cannot run here (vLLM, Ollama, ttyd, code-server, RStudio's rserver;
tests/standins/) and the real one where it can (python's http.server, ttyd where it is installed).

An OpenAI client with the user's hub token as its API key talks to the vLLM stand-in through the
gate, streaming included; a terminal runs a real shell on a pseudo-terminal; code-server's page
loads through its relative links and its websocket passes its origin check; RStudio's absolute
redirects land under the session's prefix.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import openai
import pytest
import pytest_asyncio

from berth.hub_config.loader import load_catalog
from berth.spawners.options import validate_user_options
from berth.spawners.spec import LaunchSpec, build_launch_spec

from .gatekit import (
    EXAMPLE_CATALOG,
    OTHER_TOKEN,
    OWNER_TOKEN,
    STANDINS,
    FakeHub,
    GateProcess,
    fake_hub,
    start_gate,
)

OWNER = {"Authorization": f"token {OWNER_TOKEN}"}


def launch_spec(service: str, inputs: dict[str, object] | None = None) -> LaunchSpec:
    catalog = load_catalog(EXAMPLE_CATALOG)
    profile = catalog.services[service].profiles[0]
    options = {"service": service, "profile": profile, "inputs": inputs or {}}
    return build_launch_spec(validate_user_options(catalog, options, groups=[]), "alice", "web")


async def start_from_spec(
    hub: FakeHub,
    spec: LaunchSpec,
    program: list[str] | None,
    inherited: dict[str, str] | None = None,
    **kwargs: object,
) -> GateProcess:
    """Run the spec's argv, with its program swapped for ``program`` (None: the real one), in an
    environment that also has ``inherited`` (as a job inherits variables from where it starts)."""
    argv = list(spec.argv)
    assert argv[0] == "berth-gate"
    split = argv.index("--")
    options, command = argv[1:split], argv[split + 1 :]
    if program is not None:
        command = [*program, *command[1:]]
    env = {**(inherited or {}), **spec.environment}
    gate = await start_gate(hub.url, command, options=options, env=env, **kwargs)  # type: ignore[arg-type]
    STARTED.append(gate)
    await gate.wait_logged("The service is ready")
    return gate


#: gates a test started; any still running when it ends (it failed) are stopped
STARTED: list[GateProcess] = []


@pytest_asyncio.fixture
async def hub() -> AsyncIterator[FakeHub]:
    async with fake_hub() as hub:
        try:
            yield hub
        finally:
            while STARTED:
                gate = STARTED.pop()
                if gate.process.returncode is None:
                    await gate.stop()


async def test_openai_client_against_vllm(hub: FakeHub) -> None:
    spec = launch_spec("vllm", {"model": "org/tiny-chat"})
    gate = await start_from_spec(hub, spec, [sys.executable, str(STANDINS / "vllm.py")])
    client = openai.AsyncOpenAI(base_url=gate.url + "v1", api_key=OWNER_TOKEN, max_retries=0)
    try:
        models = await client.models.list()
        assert [m.id for m in models.data] == ["org/tiny-chat"]
        reply = await client.chat.completions.create(
            model="org/tiny-chat", messages=[{"role": "user", "content": "hello there"}]
        )
        assert reply.choices[0].message.content == "echo: hello there"
        stream = await client.chat.completions.create(
            model="org/tiny-chat",
            messages=[{"role": "user", "content": "one two three"}],
            stream=True,
        )
        pieces = [chunk.choices[0].delta.content async for chunk in stream if chunk.choices]
        assert "".join(p for p in pieces if p) == "echo: one two three"
        assert len(pieces) > 3  # token by token, not one block
        async with openai.AsyncOpenAI(
            base_url=gate.url + "v1", api_key=OTHER_TOKEN, max_retries=0
        ) as stranger:
            with pytest.raises(openai.PermissionDeniedError):
                await stranger.models.list()
        async with openai.AsyncOpenAI(
            base_url=gate.url + "v1", api_key="wrong", max_retries=0
        ) as nobody:
            with pytest.raises(openai.AuthenticationError):
                await nobody.models.list()
        async with aiohttp.ClientSession() as session:
            async with session.get(gate.url + "docs", headers=OWNER) as r:
                assert 'data-url="/user/alice/web/openapi.json"' in await r.text()
    finally:
        await client.close()
        assert await gate.stop() == 0


async def test_ollama_ndjson_through_the_gate(hub: FakeHub) -> None:
    spec = launch_spec("ollama")
    assert spec.environment["OLLAMA_HOST"] == "127.0.0.1:{port}"
    gate = await start_from_spec(hub, spec, [sys.executable, str(STANDINS / "ollama.py")])
    async with aiohttp.ClientSession() as session:
        async with session.post(gate.url + "api/generate", headers=OWNER,
                                json={"model": "llama3", "prompt": "hi"}) as r:  # fmt: skip
            assert r.status == 200  # Ollama's own Host check passed: the gate sends its address
            lines = [json.loads(line) async for line in r.content]
    assert "".join(x["response"] for x in lines) == "you said hi "
    assert lines[-1]["done"] is True
    assert await gate.stop() == 0


async def test_files_with_pythons_http_server(hub: FakeHub, tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "today.txt").write_text("served through the gate\n")
    spec = launch_spec("files")
    gate = await start_from_spec(hub, spec, None, cwd=str(tmp_path))
    async with aiohttp.ClientSession() as session:
        async with session.get(gate.url + "notes/today.txt", headers=OWNER) as r:
            assert await r.text() == "served through the gate\n"
        async with session.get(gate.url + "notes", headers=OWNER, allow_redirects=False) as r:
            assert r.status == 301
            assert r.headers["Location"] == "/user/alice/web/notes/"  # its redirect made public
        async with session.get(gate.url + "notes", headers=OWNER) as r:
            assert "today.txt" in await r.text()
    assert await gate.stop() == 0


TTYD = {
    "stand-in": [sys.executable, str(STANDINS / "ttyd.py")],
    "ttyd": None,  # the real one, where it is installed (Debian 12 has no package)
}


@pytest.mark.parametrize("program", list(TTYD))
async def test_terminal_runs_a_shell(hub: FakeHub, program: str) -> None:
    if program == "ttyd" and shutil.which("ttyd") is None:
        pytest.skip("ttyd is not installed (not in Debian 12); the stand-in covers this path")
    spec = launch_spec("terminal")
    gate = await start_from_spec(hub, spec, TTYD[program])
    async with aiohttp.ClientSession() as session:
        async with session.get(gate.url, headers=OWNER) as r:
            assert r.status == 200
            assert "ttyd" in (await r.text()).lower()
        async with session.get(gate.url + "token", headers=OWNER) as r:
            assert await r.json(content_type=None) == {"token": ""}
        async with session.ws_connect(gate.url + "ws", headers=OWNER, protocols=("tty",)) as ws:
            assert ws.protocol == "tty"
            await ws.send_str(json.dumps({"AuthToken": "", "columns": 80, "rows": 24}))
            title = await ws.receive_bytes(timeout=30)
            assert title.startswith(b"1bash -l (")  # ttyd's window title: command (host)
            assert (await ws.receive_bytes(timeout=30))[:1] == b"2"  # client preferences
            await ws.send_bytes(b"0echo berth-$((6*7))\r")  # typed, then Enter
            seen = b""
            while b"berth-42" not in seen:
                message = await ws.receive_bytes(timeout=30)
                assert message[:1] == b"0"
                seen += message[1:]
            await ws.send_bytes(b"0exit\r")
            closing = await ws.receive(timeout=30)
            while closing.type == aiohttp.WSMsgType.BINARY:
                closing = await ws.receive(timeout=30)
            assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1000
    assert await gate.stop() == 0


LINK = re.compile(r'(?:href|src)="([^"]+)"')


async def test_code_server_relative_links_and_origin_check(hub: FakeHub) -> None:
    spec = launch_spec("code-server")
    # code-server prefers $PORT to --bind-addr's port: the catalog pins it to the same port, so
    # a PORT the job inherits does not send it elsewhere
    assert spec.environment["PORT"] == "{port}" and ("--env", "PORT") == spec.argv[9:11]
    program = [sys.executable, str(STANDINS / "code_server.py")]
    gate = await start_from_spec(hub, spec, program, inherited={"PORT": "8080"})
    async with aiohttp.ClientSession() as session:
        async with session.get(gate.url, headers=OWNER) as r:
            assert r.status == 200
            page = await r.text()
        links = LINK.findall(page)
        assert len(links) == 4 and all(link.startswith("./") for link in links)
        for link in links:  # as a browser resolves them: under the session's prefix
            url = urljoin(gate.url, link)
            assert url.startswith(gate.url)
            async with session.get(url, headers=OWNER) as r:
                assert r.status == 200, url
        async with session.get(gate.url + "login", headers=OWNER, allow_redirects=False) as r:
            assert r.status == 302
            assert urljoin(gate.url + "login", r.headers["Location"]) == gate.url
        async with session.get(gate.url + "healthz", headers=OWNER) as r:
            assert (await r.json())["status"] == "alive"  # the page load counted as use

        socket_url = gate.url + "?reconnectionToken=t1&reconnection=false&skipWebSocketFrames=false"
        same_origin = {**OWNER, "Origin": gate.origin}
        async with session.ws_connect(socket_url, headers=same_origin) as ws:
            await ws.send_str("hello workbench")
            assert await ws.receive_str(timeout=10) == "hello workbench"
        foreign = {**OWNER, "Origin": "http://evil.example"}
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(socket_url, headers=foreign)
        assert refused.value.status == 403  # code-server's own origin check
    await gate.wait_logged('does not match origin "evil.example"')  # said by code-server
    assert await gate.stop() == 0


async def test_rstudio_redirects_land_under_the_prefix(hub: FakeHub) -> None:
    spec = launch_spec("rstudio")
    assert "--server-user={os_user}" in spec.argv
    data_dir = Path("/tmp/rstudio-alice-web")
    gate = await start_from_spec(hub, spec, [sys.executable, str(STANDINS / "rserver.py")])
    try:
        jar = aiohttp.CookieJar(unsafe=True)  # keep cookies for a bare IP address
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            async with session.get(gate.url, headers=OWNER, allow_redirects=False) as r:
                assert r.status == 302
                sign_in = r.headers["Location"]
            assert sign_in == gate.url + "auth-sign-in?appUri=%2F"  # absolute, public
            async with session.get(sign_in, headers=OWNER, allow_redirects=False) as r:
                assert r.status == 302
                assert r.headers["Location"] == gate.url
                assert all(c["path"] == "/user/alice/web" for c in r.cookies.values())
            async with session.get(gate.url, headers=OWNER) as r:
                assert r.status == 200
                assert "<title>RStudio Server</title>" in await r.text()
                assert r.headers["X-Frame-Options"] == "SAMEORIGIN"
            csrf = {c.key: c.value for c in jar}["csrf-token"]
            rpc = {**OWNER, "X-CSRF-Token": csrf}
            async with session.post(gate.url + "rpc/get_session_info", headers=rpc) as r:
                info = (await r.json())["result"]
        # {os_user} became the account the gate runs as, which rserver accepted
        assert info == {"user": pwd.getpwuid(os.getuid()).pw_name, "root_path": "/user/alice/web"}
        assert await gate.stop() == 0
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
