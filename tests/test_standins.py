"""The stand-ins for services that cannot run here behave as the real ones do where Berth depends
on it: ttyd's protocol, paths and read-only default; code-server's relative URLs and origin check;
rserver's refusal of a --server-user it cannot be. If a stand-in drifted from the real service,
the catalog tests that run through it would prove nothing; these keep it honest."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from multidict import CIMultiDict

from .gatekit import STANDINS, free_port
from .standins.code_server import bind_address, origin_refusal, parse, redirect_path, relative_root
from .standins.rserver import root_path

TTYD = [sys.executable, str(STANDINS / "ttyd.py")]

# A shell that, once the terminal is resized, reports what it can read and the new size.
REPORTER = [
    "bash", "-c",
    'trap \'read -t 1 line; echo "got[$line] size[$(stty size)]"; exit 0\' WINCH;'
    " echo listening; while :; do sleep 0.05; done",
]  # fmt: skip


@pytest_asyncio.fixture
async def unix_ttyd(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Path]:
    sock = tmp_path / "ttyd.sock"
    extra = ["--writable"] if request.param else []
    argv = [*TTYD, f"--interface={sock}", "--port=1", *extra, *REPORTER]
    process = subprocess.Popen(argv)  # noqa: ASYNC220 (started once, not awaited)
    try:
        for _ in range(200):
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        yield sock
    finally:
        process.terminate()
        assert process.wait(10) == 0
        assert not sock.exists()  # ttyd removes its socket


@pytest.mark.parametrize(
    ("unix_ttyd", "typed"), [(False, ""), (True, "secret")], indirect=["unix_ttyd"]
)
async def test_ttyd_is_read_only_unless_writable(unix_ttyd: Path, typed: str) -> None:
    connector = aiohttp.UnixConnector(path=str(unix_ttyd))
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.ws_connect("http://localhost/ws", protocols=("tty",)) as ws:
            await ws.send_bytes(json.dumps({"AuthToken": "", "columns": 80, "rows": 24}).encode())
            assert (await ws.receive_bytes(timeout=10)).startswith(b"1bash -c ")
            assert await ws.receive_bytes(timeout=10) == b"2{}"
            assert await ws.receive_bytes(timeout=10) == b"0listening\r\n"  # its trap is set
            await ws.send_bytes(b"0secret\r")
            await ws.send_bytes(b'1{"columns": 100, "rows": 30}')
            seen = b""
            while b"size[" not in seen or not seen.rstrip().endswith(b"]"):
                seen += (await ws.receive_bytes(timeout=10))[1:]
    assert f"got[{typed}] size[30 100]".encode() in seen


@pytest.fixture
def ttyd_port() -> Iterator[int]:
    port = free_port()
    args = [f"--port={port}", "--interface=127.0.0.1", "--base-path=/user/a/t//", "sh"]
    process = subprocess.Popen([*TTYD, *args])
    try:
        yield port
    finally:
        process.terminate()
        process.wait(10)


async def test_ttyd_answers_only_its_own_paths(ttyd_port: int) -> None:
    base = f"http://127.0.0.1:{ttyd_port}"
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            try:
                await (await session.get(base + "/")).release()
                break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        async with session.get(base + "/user/a/t", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (302, "/user/a/t/")
        async with session.get(base + "/user/a/t/") as r:
            assert r.status == 200 and r.headers["Server"].startswith("ttyd/")
        for path in ("/", "/user/a/t/other", "/user/a/t/ws"):
            async with session.get(base + path) as r:
                assert r.status == 404, path
        with pytest.raises(aiohttp.WSServerHandshakeError) as no_subprotocol:
            await session.ws_connect(base + "/user/a/t/ws")
        assert no_subprotocol.value.status == 400
        with pytest.raises(aiohttp.WSServerHandshakeError) as wrong_path:
            await session.ws_connect(base + "/ws", protocols=("tty",))
        assert wrong_path.value.status == 403


def run(argv: list[str], user: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, user=user)


def test_stand_ins_refuse_what_the_real_ones_refuse() -> None:
    ttyd = run([*TTYD, "--port=0", "--ssl", "bash"])
    assert ttyd.returncode == 1 and "--ssl is not implemented" in ttyd.stderr
    assert run([*TTYD, "--port=0"]).stderr.strip() == "ttyd: missing start command"
    code_server = [sys.executable, str(STANDINS / "code_server.py")]
    unknown = run([*code_server, "--auth=none", "--bind-adr=127.0.0.1:1"])
    assert unknown.returncode == 1 and "Unknown option --bind-adr" in unknown.stderr
    password = run([*code_server, "--password=x"])
    assert "--password can only be set in the config file or passed in via $PASSWORD" in (
        password.stderr
    )
    rserver = [sys.executable, str(STANDINS / "rserver.py"), "--server-daemonize=0"]
    assert "unrecognised option '--www-prot'" in run([*rserver, "--www-prot=1"]).stderr


def test_rserver_must_run_as_its_server_user() -> None:
    """Not root, rserver runs only as --server-user itself: why the catalog says {os_user}."""
    # as root, try it from the unprivileged account sessions run as (tests/hubtest.py: run_as)
    account = pwd.getpwnam("berth") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
    refused = run(
        [sys.executable, str(STANDINS / "rserver.py"), "--server-user=root",
         "--server-daemonize=0", "--www-port=1"],
        user=account.pw_name if os.geteuid() == 0 else None,
    )  # fmt: skip
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"[rserver] ERROR Attempt to run server as user 'root' (uid 0) from account"
        f" '{account.pw_name}' (uid {account.pw_uid}) without privilege, which is required to"
        " run as a different uid"
    )


def test_code_server_relative_urls() -> None:
    # the examples in code-server's own relativeRoot documentation
    assert [relative_root(p) for p in ("/", "/foo", "/foo/", "/foo/bar", "/foo/bar/")] == [
        ".", ".", "./..", "./..", "./../..",
    ]  # fmt: skip
    assert redirect_path("/login?to=%2F", {}, "/") == "./"
    assert redirect_path("/", {"folder": "/home/a b"}, "/") == "./?folder=/home/a%20b"
    assert redirect_path("/vscode/", {"folder": "/w"}, "/vscode/") == "./../vscode/?folder=/w"


def test_code_server_origin_check() -> None:
    def refusal(trusted: tuple[str, ...] = (), **headers: str) -> str | None:
        names = {k: k.replace("_", "-") for k in headers}
        return origin_refusal(CIMultiDict({names[k]: v for k, v in headers.items()}), [*trusted])

    assert refusal(Host="gate:1") is None  # no Origin: not a browser
    assert refusal(Origin="http://hub:8000", Host="hub:8000") is None
    assert refusal(Origin="http://hub:80", Host="hub") is None  # the default port is dropped
    assert (
        refusal(Origin="http://hub:8000", Host="127.0.0.1:5", X_Forwarded_Host="hub:8000") is None
    )
    assert refusal(Origin="https://hub", Host="x", Forwarded="for=1.2.3.4;host=hub") is None
    assert refusal(Origin="http://evil.example", Host="hub:8000") == (
        'host "hub:8000" does not match origin "evil.example"'
    )
    assert refusal(("evil.example",), Origin="http://evil.example", Host="hub:8000") is None
    assert refusal(Origin="null", Host="hub") == 'unable to parse malformed origin "null"'
    assert refusal(Origin="http://hub") == "no host headers found"


def test_code_server_bind_address() -> None:
    args = parse(["--bind-addr=127.0.0.1:4567", "--auth", "none", "/work"])
    assert args.folders == ["/work"] and args.get("auth") == "none"
    assert bind_address(args, {}) == ("127.0.0.1", 4567)
    assert bind_address(args, {"PORT": "9999"}) == ("127.0.0.1", 9999)  # as code-server does
    assert bind_address(parse(["--bind-addr", "0.0.0.0"]), {}) == ("0.0.0.0", 80)


def test_rserver_root_path() -> None:
    assert root_path("/", None) == "/"
    assert root_path("/user/a/rs/", None) == "/user/a/rs"
    assert root_path("user/a/rs", None) == "/user/a/rs"
    assert root_path("/user/a/rs", "/from/proxy") == "/from/proxy"
