"""berth-gate's life: the starting page, a crash at start, exit codes, SIGTERM and no orphans,
unix sockets, a prefix-aware service, and placeholders filled in the command and environment."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from .gatekit import (
    OWNER_TOKEN,
    STANDINS,
    FakeHub,
    fake_hub,
    start_gate,
    webapp,
)

OWNER = {"Authorization": f"token {OWNER_TOKEN}"}
BROWSER = {"Accept": "text/html"}


@pytest_asyncio.fixture
async def hub() -> AsyncIterator[FakeHub]:
    async with fake_hub() as hub:
        yield hub


@pytest_asyncio.fixture
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is gone for every practical purpose
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[1].split()[0] != "Z"


async def test_starting_page_then_the_service(hub: FakeHub, client: aiohttp.ClientSession) -> None:
    gate = await start_gate(hub.url, webapp("--port", "{port}", "--start-delay", "2"),
                            options=["--ready-path", "/health"])  # fmt: skip
    await gate.wait_logged("webapp starting")
    async with client.get(gate.url + "echo/", headers=OWNER) as r:
        assert r.status == 503
        assert r.headers["Retry-After"] == "2"
        body = await r.json()
    assert body["state"] == "starting"
    assert "webapp starting (base path '')" in body["output"]  # the owner sees its output
    async with client.get(gate.url + "echo/", headers=BROWSER) as r:
        assert r.status == 503  # the hub's spawn check keeps waiting; no login redirect yet
        page = await r.text()
    assert '<meta http-equiv="refresh" content="2">' in page
    assert "webapp starting" not in page  # strangers do not see the service's output
    await gate.wait_logged("The service is ready")
    async with client.get(gate.url + "echo/", headers=OWNER) as r:
        assert r.status == 200
    assert await gate.stop() == 0


async def test_crash_at_start_shows_its_output_and_passes_its_code(
    hub: FakeHub, client: aiohttp.ClientSession
) -> None:
    gate = await start_gate(hub.url, webapp("--port", "{port}", "--crash-at-start"),
                            options=["--linger", "30"])  # fmt: skip
    await gate.wait_logged("The service exited before it was ready")
    async with client.get(gate.url, headers={**OWNER, **BROWSER}) as r:
        assert r.status == 503
        page = await r.text()
    assert "The service exited before it was ready (exit code 3)" in page
    assert "cannot open model file /models/missing.bin" in page
    assert "http-equiv" not in page  # a failure does not reload itself
    async with client.get(gate.url, headers=OWNER) as r:
        body = await r.json()
    assert body["state"] == "failed" and body["exit_code"] == 3
    assert await gate.stop() == 3  # stopped while lingering: still the service's code


async def test_exit_code_passthrough(hub: FakeHub, client: aiohttp.ClientSession) -> None:
    gate = await start_gate(
        hub.url, webapp("--port", "{port}"), options=["--ready-path", "/health"]
    )
    await gate.wait_logged("The service is ready")
    async with client.post(gate.url + "exit/7", headers=OWNER) as r:
        assert r.status == 200
    assert await asyncio.wait_for(gate.process.wait(), 30) == 7
    await gate.stop()


async def test_missing_program_and_ready_timeout(hub: FakeHub) -> None:
    gate = await start_gate(hub.url, ["no-such-program-berth", "{port}"], options=["--linger", "0"],
                            wait=False)  # fmt: skip
    assert await asyncio.wait_for(gate.process.wait(), 30) == 127
    await gate.stop()
    assert any("could not start" in line for line in gate.log)
    gate = await start_gate(hub.url, ["sleep", "60"],
                            options=["--ready-timeout", "1", "--linger", "0", "--grace", "5"],
                            wait=False)  # fmt: skip
    assert await asyncio.wait_for(gate.process.wait(), 30) == 124
    await gate.stop()
    assert any("did not answer / within 1 seconds" in line for line in gate.log)


@pytest.mark.parametrize("ignore_term", [False, True])
async def test_sigterm_stops_the_service_and_leaves_no_orphans(
    hub: FakeHub, tmp_path: Path, ignore_term: bool
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    command = [sys.executable, str(STANDINS / "stubborn.py"), "{port}", str(pidfile)]
    if ignore_term:
        command.append("--ignore-term")
    gate = await start_gate(hub.url, command, options=["--grace", "1"])
    await gate.wait_logged("The service is ready")
    grandchild = int(pidfile.read_text())
    assert alive(grandchild)
    code = await gate.stop()
    # a clean SIGTERM is a clean stop; one that had to be killed says so
    assert code == (137 if ignore_term else 0)
    for _ in range(100):
        if not alive(grandchild):
            break
        await asyncio.sleep(0.05)
    assert not alive(grandchild)
    if ignore_term:
        assert any("did not stop within 1s; killing it" in line for line in gate.log)


async def test_unix_socket_service(hub: FakeHub, client: aiohttp.ClientSession) -> None:
    gate = await start_gate(hub.url, webapp("--unix", "{unix_socket}"),
                            options=["--transport", "unix", "--ready-path", "/health"])  # fmt: skip
    await gate.wait_logged("The service is ready")
    async with client.get(gate.url + "echo/over-a-socket", headers=OWNER) as r:
        assert (await r.json())["path"] == "/echo/over-a-socket"
    async with client.ws_connect(gate.url + "ws", headers=OWNER) as ws:
        await ws.send_str("through a socket")
        assert await ws.receive_str() == "through a socket"
    socket_line = next(line for line in gate.log if "--unix" in line)
    socket_path = socket_line.split("--unix ")[1].split()[0]
    assert await gate.stop() == 0
    assert not Path(socket_path).parent.exists()  # its private directory is removed


async def test_keep_prefix_and_rendered_environment(
    hub: FakeHub, client: aiohttp.ClientSession
) -> None:
    gate = await start_gate(
        hub.url,
        webapp("--port", "{port}", "--base-path", "{base_url}"),
        options=["--prefix", "keep", "--ready-path", "/health", "--env", "SERVICE_URL"],
        env={"SERVICE_URL": "http://127.0.0.1:{port}{base_url}/", "PLAIN": "{not-filled}"},
    )
    await gate.wait_logged("The service is ready")
    async with client.get(gate.url + "echo/x", headers=OWNER) as r:
        assert (await r.json())["path"] == "/user/alice/web/echo/x"
    async with client.get(gate.url + "env/SERVICE_URL", headers=OWNER) as r:
        url = (await r.json())["value"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/user/alice/web/")
    async with client.get(gate.url + "env/PLAIN", headers=OWNER) as r:
        assert (await r.json())["value"] == "{not-filled}"
    async with client.get(gate.url + "env/JUPYTERHUB_API_TOKEN", headers=OWNER) as r:
        assert (await r.json())["value"] is None  # the server's hub token is not handed on
    assert await gate.stop() == 0


async def test_service_that_closes_to_end_its_body(
    hub: FakeHub, client: aiohttp.ClientSession
) -> None:
    gate = await start_gate(hub.url, [sys.executable, str(STANDINS / "eofserver.py"), "{port}"])
    await gate.wait_logged("The service is ready")
    for _ in range(2):
        async with client.get(gate.url, headers=OWNER) as r:
            assert r.headers["Transfer-Encoding"] == "chunked"
            text = await r.text()
        assert text.endswith("first part, the end") and len(text) == 12 * 1000 + 7
    assert await gate.stop() == 0


async def test_service_down_gives_502(hub: FakeHub, client: aiohttp.ClientSession) -> None:
    # the service answers its readiness check, then its port goes away
    gate = await start_gate(
        hub.url,
        [sys.executable, "-c", (
            "import http.server, sys, threading\n"
            "class H(http.server.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        self.send_response(200); self.end_headers()\n"
            "        threading.Thread(target=server.shutdown).start()\n"
            "server = http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H)\n"
            "server.serve_forever(); server.server_close()\n"
            "import time; time.sleep(600)\n"
        ), "{port}"],
    )  # fmt: skip
    await gate.wait_logged("The service is ready")
    async with client.get(gate.url, headers=OWNER) as r:
        assert r.status == 502
        assert json.loads(await r.text())["error"] == (
            "The service is not answering; it may have stopped."
        )
    assert await gate.stop() == 0
