"""Helpers for berth-gate tests: a stand-in hub API in the test's loop and the real berth-gate
command started as a process, with the environment a JupyterHub spawner gives it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from .standins.hubapi import HubState, build

HERE = Path(__file__).parent
EXAMPLE_CATALOG = HERE.parent / "hub_config" / "examples" / "berth.yaml"
STANDINS = HERE / "standins"
GATE = Path(sys.executable).with_name("berth-gate")
API_TOKEN = "gate-api-token-for-tests"
OWNER_TOKEN = "alice-token"
OTHER_TOKEN = "bob-token"
SHARED_TOKEN = "carol-token-with-access"
PREFIX = "/user/alice/web/"
SCOPES = ["access:servers!server=alice/web", "access:servers!user=alice"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def user_model(name: str, scopes: list[str]) -> dict[str, object]:
    return {"kind": "user", "name": name, "admin": False, "groups": [], "scopes": scopes}


@dataclass
class FakeHub:
    url: str
    state: HubState


@contextlib.asynccontextmanager
async def fake_hub() -> AsyncIterator[FakeHub]:
    state = HubState(
        tokens={
            OWNER_TOKEN: user_model(
                "alice", ["access:servers!user=alice", "read:users!user=alice"]
            ),
            OTHER_TOKEN: user_model("bob", ["access:servers!user=bob"]),
            SHARED_TOKEN: user_model("carol", ["access:servers!server=alice/web"]),
        }
    )
    runner = web.AppRunner(build(state, API_TOKEN), access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield FakeHub(f"http://127.0.0.1:{port}", state)
    finally:
        await runner.cleanup()


@dataclass
class GateProcess:
    process: asyncio.subprocess.Process
    port: int
    prefix: str
    log: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_listening(self, seconds: float = 20) -> None:
        for _ in range(int(seconds / 0.05)):
            if self.process.returncode is not None:
                raise AssertionError("berth-gate exited:\n" + "\n".join(self.log))
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
        raise AssertionError("berth-gate did not listen:\n" + "\n".join(self.log))

    async def wait_logged(self, text: str, seconds: float = 30) -> None:
        for _ in range(int(seconds / 0.05)):
            if any(text in line for line in self.log):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"{text!r} never logged:\n" + "\n".join(self.log))

    async def stop(self, seconds: float = 30) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), seconds)
        if self._reader is not None:
            await self._reader
        return code


def gate_environment(hub_url: str, port: int, prefix: str = PREFIX, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}{prefix}",
            "JUPYTERHUB_SERVICE_PREFIX": prefix,
            "JUPYTERHUB_BASE_URL": "/",
            "JUPYTERHUB_API_TOKEN": API_TOKEN,
            "JUPYTERHUB_API_URL": f"{hub_url}/hub/api",
            "JUPYTERHUB_CLIENT_ID": "jupyterhub-user-alice-web",
            "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
            "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps(SCOPES),
            "JUPYTERHUB_ACTIVITY_URL": f"{hub_url}/hub/api/users/alice/activity",
            "JUPYTERHUB_USER": "alice",
            "JUPYTERHUB_SERVER_NAME": "web",
        }
    )
    env.update(extra)
    return env


async def start_gate(
    hub_url: str,
    command: Sequence[str],
    *,
    options: Sequence[str] = (),
    prefix: str = PREFIX,
    env: dict[str, str] | None = None,
    wait: bool = True,
    cwd: str | None = None,
) -> GateProcess:
    port = free_port()
    environ = gate_environment(hub_url, port, prefix)
    environ.update(env or {})
    process = await asyncio.create_subprocess_exec(
        str(GATE), *options, "--", *command,
        env=environ,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    gate = GateProcess(process, port, prefix)

    async def read() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            gate.log.append(line.decode("utf-8", "replace").rstrip())

    gate._reader = asyncio.create_task(read())
    if wait:
        await gate.wait_listening()
    return gate


def webapp(*args: str) -> list[str]:
    return [sys.executable, str(STANDINS / "webapp.py"), *args]
