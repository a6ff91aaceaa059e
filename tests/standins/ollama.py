"""A stand-in for ``ollama serve``: listens where $OLLAMA_HOST says, refuses foreign Host headers
as Ollama does when bound to loopback, and streams /api/generate as NDJSON.

    OLLAMA_HOST=127.0.0.1:PORT python ollama.py serve
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import sys

from aiohttp import web


@web.middleware
async def allowed_hosts(request: web.Request, handler):  # type: ignore[no-untyped-def]
    host = request.host.rsplit(":", 1)[0].strip("[]")
    try:
        ok = ipaddress.ip_address(host).is_loopback or ipaddress.ip_address(host).is_private
    except ValueError:
        ok = host == "localhost" or host.endswith((".localhost", ".local", ".internal"))
    if not ok:
        raise web.HTTPForbidden()
    return await handler(request)


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


async def generate(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    words = ("you said " + body["prompt"]).split(" ")
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    for word in words:
        line = {"model": body["model"], "response": word + " ", "done": False}
        await response.write((json.dumps(line) + "\n").encode())
        await asyncio.sleep(0.01)
    await response.write(
        (json.dumps({"model": body["model"], "response": "", "done": True}) + "\n").encode()
    )
    await response.write_eof()
    return response


def main() -> None:
    assert sys.argv[1:] == ["serve"], "usage: ollama serve"
    host, port = os.environ["OLLAMA_HOST"].rsplit(":", 1)
    app = web.Application(middlewares=[allowed_hosts])
    app.router.add_get("/", root)
    app.router.add_post("/api/generate", generate)
    web.run_app(app, host=host, port=int(port), print=None, access_log=None)


if __name__ == "__main__":
    main()
