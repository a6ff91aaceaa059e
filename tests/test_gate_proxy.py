"""berth-gate in front of a real small web service: every method, streams both ways, websockets,
redirects, errors, bad input, and who gets through.

The gate runs as the real ``berth-gate`` command with JupyterHub's single-user environment; the
hub's user API is a loopback stand-in (tests/standins/hubapi.py) so these run in seconds. The
same checks against the real hub and configurable-http-proxy are in test_gate_hub.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

from berth.proxy.upstream import UpstreamPool

from .gatekit import (
    OTHER_TOKEN,
    OWNER_TOKEN,
    SHARED_TOKEN,
    FakeHub,
    GateProcess,
    fake_hub,
    start_gate,
    webapp,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

OWNER = {"Authorization": f"token {OWNER_TOKEN}"}
BROWSER = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def hub() -> AsyncIterator[FakeHub]:
    async with fake_hub() as hub:
        yield hub


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gate(hub: FakeHub) -> AsyncIterator[GateProcess]:
    gate = await start_gate(
        hub.url,
        webapp("--port", "{port}"),
        options=[
            "--ready-path",
            "/health",
            "--upstream-timeout",
            "2",
            "--max-header-size",
            "8192",
            "--activity-interval",
            "0.5",
        ],
    )
    await gate.wait_logged("The service is ready")
    yield gate
    assert await gate.stop() == 0
    assert not any("Traceback" in line for line in gate.log), "\n".join(gate.log)


@pytest_asyncio.fixture(loop_scope="module")
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


async def raw(gate: GateProcess, request: bytes, *, until_close: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", gate.port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(-1) if until_close else reader.read(65536), 10)
    writer.close()
    return data


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
async def test_every_method_reaches_the_service_with_the_prefix_stripped(
    gate: GateProcess, client: aiohttp.ClientSession, method: str
) -> None:
    async with client.request(method, gate.url + "echo/a%20b?x=1&y=2", headers=OWNER,
                              data=b"payload" if method != "GET" else None) as r:  # fmt: skip
        assert r.status == 200
        seen = await r.json()
    assert seen["method"] == method
    assert seen["path"] == "/echo/a b"
    assert seen["query"] == "x=1&y=2"
    assert seen["body_length"] == (0 if method == "GET" else 7)
    headers = {k.lower(): v for k, v in seen["headers"]}
    assert "authorization" not in headers  # the hub token stays with the gate
    assert headers["host"].startswith("127.0.0.1:") and headers["host"] != gate.origin[7:]
    assert headers["x-forwarded-host"] == f"127.0.0.1:{gate.port}"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-prefix"] == "/user/alice/web"


async def test_who_gets_through(gate: GateProcess, client: aiohttp.ClientSession) -> None:
    async def status(headers: dict[str, str]) -> int:
        async with client.get(gate.url + "echo/", headers=headers, allow_redirects=False) as r:
            return r.status

    assert await status({}) == 401
    assert await status({"Authorization": "token not-a-token"}) == 401
    assert await status(OWNER) == 200
    assert await status({"Authorization": f"Bearer {OWNER_TOKEN}"}) == 200
    assert await status({"Authorization": f"token {SHARED_TOKEN}"}) == 200  # granted access:servers
    assert await status({"Authorization": f"token {OTHER_TOKEN}"}) == 403
    async with client.get(gate.url + "echo/", allow_redirects=False) as r:
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="JupyterHub"'
        assert (await r.json())["error"].startswith("Sign in")


async def test_a_browser_is_sent_to_the_hub_login(
    gate: GateProcess, client: aiohttp.ClientSession
) -> None:
    async with client.get(gate.url + "tree?x=1", headers=BROWSER, allow_redirects=False) as r:
        assert r.status == 302
        location = r.headers["Location"]
        cookie = r.headers["Set-Cookie"]
    assert location.startswith("/hub/api/oauth2/authorize?client_id=jupyterhub-user-alice-web&")
    assert "redirect_uri=%2Fuser%2Falice%2Fweb%2Foauth_callback" in location
    assert cookie.startswith("jupyterhub-user-alice-web-oauth-state=")
    # a forged callback is refused, politely
    async with client.get(gate.url + "oauth_callback?code=x&state=forged", headers=BROWSER) as r:
        assert r.status == 403
        assert "log in again" in await r.text()


async def test_websocket_echo_text_binary_ping_close_code_subprotocol(
    gate: GateProcess, client: aiohttp.ClientSession
) -> None:
    async with client.ws_connect(gate.url + "ws", headers=OWNER, protocols=("tty",),
                                 autoping=False) as ws:  # fmt: skip
        assert ws.protocol == "tty"
        await ws.send_str("hello")
        assert (await ws.receive_str()) == "hello"
        blob = os.urandom(200_000)
        await ws.send_bytes(blob)
        assert (await ws.receive_bytes()) == blob
        await ws.ping(b"are you there")
        pong = await ws.receive()
        assert pong.type == aiohttp.WSMsgType.PONG and pong.data == b"are you there"
        await ws.send_str("close:4001")
        closing = await ws.receive()
        assert closing.type == aiohttp.WSMsgType.CLOSE
        assert closing.data == 4001


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 403),
        ({"Authorization": f"token {OTHER_TOKEN}"}, 403),
        ({"Authorization": "token nope"}, 403),
    ],
)
async def test_websocket_upgrade_without_access_is_refused(
    gate: GateProcess, headers: dict[str, str], status: int
) -> None:
    auth = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    response = await raw(gate, (
        f"GET {gate.prefix}ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{auth}\r\n"
    ).encode())  # fmt: skip
    assert response.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"Sec-WebSocket-Accept" not in response


async def test_server_sent_events_stream_without_buffering(
    gate: GateProcess, client: aiohttp.ClientSession
) -> None:
    async with client.get(gate.url + "sse?n=4&gap=0.3", headers=OWNER) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        assert r.headers["Transfer-Encoding"] == "chunked"
        first = await r.content.readuntil(b"\n\n")
        got_first = time.time()
        rest = await r.content.read()
    events = [
        json.loads(block.split(b"data: ")[1]) for block in (first + rest).split(b"\n\n") if block
    ]
    assert [e["i"] for e in events] == [0, 1, 2, 3]
    # the first event arrived before the service had even produced the next ones
    assert all(e["sent"] > got_first for e in events[1:])


async def test_ndjson_token_stream(gate: GateProcess, client: aiohttp.ClientSession) -> None:
    async with client.get(gate.url + "ndjson?n=3&gap=0.3", headers=OWNER) as r:
        first = json.loads(await r.content.readline())
        got_first = time.time()
        rest = [json.loads(line) for line in (await r.content.read()).splitlines()]
    assert [first["token"]] + [x["token"] for x in rest] == ["t0", "t1", "t2"]
    assert all(x["sent"] > got_first for x in rest)


async def test_large_download_and_uploads(gate: GateProcess, client: aiohttp.ClientSession) -> None:
    size = 30 * 1024 * 1024
    digest = hashlib.sha256()
    async with client.get(gate.url + f"download?size={size}", headers=OWNER) as r:
        assert r.headers["Content-Length"] == str(size)
        async for chunk in r.content.iter_chunked(1 << 20):
            digest.update(chunk)
    expected = hashlib.sha256((bytes(range(256)) * 256) * (size // 65536)).hexdigest()
    assert digest.hexdigest() == expected

    blob = os.urandom(40 * 1024 * 1024)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(blob), 1 << 20):
            yield blob[i : i + (1 << 20)]

    for body in (io.BytesIO(blob), chunks()):  # with Content-Length, then chunked
        async with client.post(gate.url + "upload", headers=OWNER, data=body) as r:
            assert await r.json() == {
                "length": len(blob),
                "sha256": hashlib.sha256(blob).hexdigest(),
            }


async def test_expect_continue_upload(gate: GateProcess, client: aiohttp.ClientSession) -> None:
    async with client.post(
        gate.url + "upload", headers=OWNER, data=b"x" * 100_000, expect100=True
    ) as r:
        assert (await r.json())["length"] == 100_000
    # refused before the body is sent
    async with client.post(gate.url + "upload", data=b"x" * 100_000, expect100=True) as r:
        assert r.status == 401


async def test_chunked_response_and_head(gate: GateProcess, client: aiohttp.ClientSession) -> None:
    async with client.get(gate.url + "chunked?n=3", headers=OWNER) as r:
        assert await r.text() == "chunk 0\nchunk 1\nchunk 2\n"
    async with client.head(gate.url + "download?size=1000", headers=OWNER) as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == "1000"
    async with client.get(gate.url + "echo/after-head", headers=OWNER) as r:
        assert r.status == 200


async def test_keep_alive_reuses_one_service_connection(gate: GateProcess) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as client:
        peers = []
        for _ in range(5):
            async with client.get(gate.url + "echo/", headers=OWNER) as r:
                peers.append(tuple((await r.json())["peer"]))
    assert len(set(peers)) == 1


async def test_pipelined_requests_answer_in_order(gate: GateProcess) -> None:
    auth = f"Authorization: token {OWNER_TOKEN}"
    one = f"GET {gate.prefix}echo/one HTTP/1.1\r\nHost: x\r\n{auth}\r\n\r\n"
    two = one.replace("/one", "/two").replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n")
    response = await raw(gate, (one + two).encode())
    assert response.count(b"HTTP/1.1 200 OK") == 2
    assert response.index(b'"/echo/one"') < response.index(b'"/echo/two"')


async def test_redirects_stay_behind_the_gate(
    gate: GateProcess, client: aiohttp.ClientSession
) -> None:
    async with client.get(gate.url + "redirect", headers=OWNER, allow_redirects=False) as r:
        assert r.status == 302
        assert r.headers["Location"] == "/user/alice/web/echo/landed"


async def test_outside_the_prefix_and_without_slash(
    gate: GateProcess, client: aiohttp.ClientSession
) -> None:
    async with client.get(gate.origin + "/user/bob/web/", headers=OWNER) as r:
        assert r.status == 404
    async with client.get(gate.origin + "/user/alice/web?x=1", headers=OWNER,
                          allow_redirects=False) as r:  # fmt: skip
        assert r.status == 302
        assert r.headers["Location"] == "/user/alice/web/?x=1"


async def test_a_hanging_service_gets_504_and_the_gate_keeps_serving(
    gate: GateProcess, client: aiohttp.ClientSession
) -> None:
    async with client.get(gate.url + "hang", headers=OWNER) as r:
        assert r.status == 504
        assert await r.json() == {"error": "The service did not answer in time.", "status": 504}
    async with client.get(gate.url + "hang", headers={**OWNER, **BROWSER}) as r:
        assert r.status == 504
        assert "text/html" in r.headers["Content-Type"]
        assert "did not answer in time" in await r.text()
    async with client.get(gate.url + "echo/", headers=OWNER) as r:
        assert r.status == 200


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
        (b"GET /user/alice/web/ HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"GET /user/alice/web/ HTTP/1.1\r\nX-Big: " + b"a" * 10000 + b"\r\n\r\n", 431),
        (b"GET /user/alice/web/" + b"a" * 10000 + b" HTTP/1.1\r\n\r\n", 431),
        (b"CONNECT example.org:443 HTTP/1.1\r\nHost: example.org\r\n\r\n", 405),
    ],
)
async def test_bad_requests_get_clean_errors(
    gate: GateProcess, client: aiohttp.ClientSession, request_bytes: bytes, status: int
) -> None:
    response = await raw(gate, request_bytes)
    assert response.startswith(f"HTTP/1.1 {status} ".encode()), response[:200]
    body = json.loads(response.split(b"\r\n\r\n", 1)[1])
    assert body["status"] == status
    async with client.get(gate.url + "echo/", headers=OWNER) as r:
        assert r.status == 200


async def test_activity_reaches_the_hub(hub: FakeHub, gate: GateProcess) -> None:
    # the module's traffic happened; the gate's first report comes within its interval
    async with aiohttp.ClientSession() as client:
        async with client.get(gate.url + "echo/", headers=OWNER) as r:
            assert r.status == 200
    for _ in range(200):
        if hub.state.activity:
            break
        await asyncio.sleep(0.05)
    report = hub.state.activity[-1]
    assert set(report) == {"last_activity", "servers"}
    assert report["servers"]["web"]["last_activity"] == report["last_activity"]


async def test_a_pooled_service_connection_is_handed_out_reading() -> None:
    """A response's last write to a slow client can pause its service connection (flow control)
    after the connection went back to the pool; whoever takes it next must be able to read the
    service's answer."""
    accepted: list[asyncio.BaseTransport] = []

    class Service(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            accepted.append(transport)

    server = await asyncio.get_running_loop().create_server(Service, "127.0.0.1", 0)
    pool = UpstreamPool(port=server.sockets[0].getsockname()[1])
    try:
        conn = await pool.connect()
        conn.reusable = True
        pool.release(conn)
        assert conn.transport is not None
        conn.transport.pause_reading()  # as ClientConnection.pause_writing does to its peer
        assert pool.take_idle() is conn
        assert conn.transport.is_reading()
        conn.close()
    finally:
        pool.close()
        for transport in accepted:
            transport.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0)
