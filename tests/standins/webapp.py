"""A small real web service for the gate's tests: echo, streams, websockets, slow or failed starts.

    python webapp.py (--port N | --unix PATH) [--base-path /x] [--start-delay S] [--crash-at-start]

Routes (under --base-path when given, as a prefix-aware service would):
  /health                 200 "ok"
  /echo/...               JSON of method, path, query, headers and body length (any method)
  /upload                 reads the body in pieces; JSON of its length and sha256
  /download?size=N        N bytes (Content-Length), in 64 KiB writes
  /chunked?n=N            N chunks with no Content-Length
  /sse?n=N&gap=S          text/event-stream: N events S seconds apart
  /ndjson?n=N&gap=S       application/x-ndjson: N token lines S seconds apart
  /env/NAME               JSON {"value": $NAME}
  /exit/CODE              (POST) the process exits with CODE
  /redirect               302 to /echo/landed (host-absolute, as a prefix-unaware app does)
  /hang                   never answers
  /ws                     websocket echo; "close:CODE" closes with CODE; subprotocols honoured
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time

from aiohttp import WSMsgType, web


def build(base: str) -> web.Application:
    app = web.Application(client_max_size=1024**3)
    routes = web.RouteTableDef()

    @routes.get(base + "/health")
    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    @routes.route("*", base + "/echo/{tail:.*}")
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "headers": [[k, v] for k, v in request.headers.items()],
                "body_length": len(body),
                "body": body[:200].decode("utf-8", "replace"),
                "peer": request.transport.get_extra_info("peername") if request.transport else None,
            }
        )

    @routes.get(base + "/env/{name}")
    async def env(request: web.Request) -> web.Response:
        return web.json_response({"value": os.environ.get(request.match_info["name"])})

    @routes.post(base + "/exit/{code}")
    async def exit_(request: web.Request) -> web.Response:
        asyncio.get_running_loop().call_later(0.1, os._exit, int(request.match_info["code"]))
        return web.Response(text="exiting")

    @routes.post(base + "/upload")
    async def upload(request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"length": size, "sha256": digest.hexdigest()})

    @routes.get(base + "/download")
    async def download(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", "1048576"))
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        block = bytes(range(256)) * 256
        sent = 0
        while sent < size:
            piece = block[: min(len(block), size - sent)]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    @routes.get(base + "/chunked")
    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(int(request.query.get("n", "5"))):
            await response.write(f"chunk {i}\n".encode())
        await response.write_eof()
        return response

    async def stream(request: web.Request, content_type: str, line) -> web.StreamResponse:
        n = int(request.query.get("n", "5"))
        gap = float(request.query.get("gap", "0"))
        response = web.StreamResponse(
            headers={"Content-Type": content_type, "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        for i in range(n):
            await response.write(line(i, time.time()).encode())
            if gap:
                await asyncio.sleep(gap)
        await response.write_eof()
        return response

    @routes.get(base + "/sse")
    async def sse(request: web.Request) -> web.StreamResponse:
        return await stream(
            request,
            "text/event-stream",
            lambda i, t: f"id: {i}\ndata: {json.dumps({'i': i, 'sent': t})}\n\n",
        )

    @routes.get(base + "/ndjson")
    async def ndjson(request: web.Request) -> web.StreamResponse:
        return await stream(
            request,
            "application/x-ndjson",
            lambda i, t: json.dumps({"token": f"t{i}", "sent": t}) + "\n",
        )

    @routes.get(base + "/redirect")
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(base + "/echo/landed")

    @routes.get(base + "/hang")
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response()

    @routes.get(base + "/ws")
    async def ws(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(protocols=("chat", "tty"), autoping=True)
        await socket.prepare(request)
        async for message in socket:
            if message.type == WSMsgType.TEXT:
                if message.data.startswith("close:"):
                    await socket.close(code=int(message.data[6:]), message=b"bye")
                    break
                await socket.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await socket.send_bytes(message.data)
        return socket

    app.add_routes(routes)
    return app


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    parser.add_argument("--unix")
    parser.add_argument("--host", default="127.0.0.1", help="'localhost' binds IPv4 and IPv6")
    parser.add_argument("--base-path", default="")
    parser.add_argument("--start-delay", type=float, default=0)
    parser.add_argument("--crash-at-start", action="store_true")
    args = parser.parse_args()
    print(f"webapp starting (base path {args.base_path!r})", flush=True)
    if args.crash_at_start:
        print("webapp: cannot open model file /models/missing.bin", flush=True)
        sys.exit(3)
    if args.start_delay:
        await asyncio.sleep(args.start_delay)
    base = args.base_path.rstrip("/")
    app = build(base)

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = (
        web.UnixSite(runner, args.unix) if args.unix else web.TCPSite(runner, args.host, args.port)
    )
    await site.start()
    print("webapp ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
