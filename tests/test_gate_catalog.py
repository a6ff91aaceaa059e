"""The example catalog's gated services, launched as the catalog launches them: the launch spec's
own berth-gate options, command and environment, with the program itself replaced by a faithful
stand-in where the real one cannot run here (vLLM, Ollama) and the real one where it can
(python's http.server, ttyd when Debian provides it).

An OpenAI client with the user's hub token as its API key talks to the vLLM stand-in through the
gate, streaming included.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

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
    hub: FakeHub, spec: LaunchSpec, program: list[str] | None, **kwargs: object
) -> GateProcess:
    """Run the spec's argv, with its program swapped for ``program`` (None: the real one)."""
    argv = list(spec.argv)
    assert argv[0] == "berth-gate"
    split = argv.index("--")
    options, command = argv[1:split], argv[split + 1 :]
    if program is not None:
        command = [*program, *command[1:]]
    env = {k: v for k, v in spec.environment.items()}
    gate = await start_gate(hub.url, command, options=options, env=env, **kwargs)  # type: ignore[arg-type]
    await gate.wait_logged("The service is ready")
    return gate


@pytest_asyncio.fixture
async def hub() -> AsyncIterator[FakeHub]:
    async with fake_hub() as hub:
        yield hub


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


@pytest.mark.skipif(shutil.which("ttyd") is None, reason="ttyd is not installed (not in Debian 12)")
async def test_terminal_with_ttyd(hub: FakeHub) -> None:
    spec = launch_spec("terminal")
    gate = await start_from_spec(hub, spec, None)
    async with aiohttp.ClientSession() as session:
        async with session.get(gate.url, headers=OWNER) as r:
            assert r.status == 200
            assert "ttyd" in (await r.text()).lower()
        async with session.ws_connect(gate.url + "ws", headers=OWNER, protocols=("tty",)) as ws:
            await ws.send_str(json.dumps({"AuthToken": "", "columns": 80, "rows": 24}))
            await ws.send_bytes(b"0echo gate-$((6*7))\n")
            seen = b""
            while b"gate-42" not in seen:
                message = await ws.receive(timeout=30)
                assert message.type == aiohttp.WSMsgType.BINARY
                seen += message.data[1:]
    assert await gate.stop() == 0
