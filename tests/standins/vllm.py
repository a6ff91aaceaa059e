"""A stand-in for ``vllm serve``: the same command line, an OpenAI-compatible API at /v1.

    python vllm.py serve MODEL --host H --port P --root-path R [--tensor-parallel-size N]
        [--max-model-len N]

Like vLLM's API server (FastAPI under uvicorn, ``root_path`` from --root-path): GET /health,
GET /v1/models, POST /v1/chat/completions with and without ``stream`` (server-sent events, one
token per chunk, ending in ``data: [DONE]``), and /docs whose OpenAPI link includes the root path.
It answers only once it has "loaded the model" (a short delay), as vLLM binds its port late.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web


def build(model: str, root_path: str) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.Response()

    async def models(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": model, "object": "model", "created": 0, "owned_by": "vllm"}],
            }
        )

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        words = ("echo: " + body["messages"][-1]["content"]).split(" ")
        created = int(time.time())
        base = {"id": "chatcmpl-standin", "created": created, "model": body.get("model", model)}
        if not body.get("stream"):
            return web.json_response(
                {
                    **base,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": " ".join(words)},
                        }
                    ],
                    "usage": {
                        "prompt_tokens": 1,
                        "completion_tokens": len(words),
                        "total_tokens": 1 + len(words),
                    },
                }
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i, word in enumerate(words):
            chunk = {
                **base,
                "object": "chat.completion.chunk",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": None,
                        "delta": {"role": "assistant", "content": word if i == 0 else " " + word},
                    }
                ],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            await asyncio.sleep(0.01)
        done = {
            **base,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "finish_reason": "stop", "delta": {}}],
        }
        await response.write(f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n".encode())
        await response.write_eof()
        return response

    async def docs(request: web.Request) -> web.Response:
        return web.Response(
            text=f'<html><body><div id="swagger" data-url="{root_path}/openapi.json">'
            "</div></body></html>",
            content_type="text/html",
        )

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/docs", docs)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="vllm")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("model")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root-path", default="")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--max-model-len", type=int, default=0)
    args = parser.parse_args()
    print(f"INFO loading {args.model} (tp={args.tensor_parallel_size})", flush=True)
    time.sleep(0.5)
    web.run_app(
        build(args.model, args.root_path),
        host=args.host,
        port=args.port,
        print=None,
        access_log=None,
    )


if __name__ == "__main__":
    main()
