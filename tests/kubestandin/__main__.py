"""Run the stand-in: ``python -m kubestandin --kubeconfig PATH [--gpus N] [--start-delay S]``.

Binds 127.0.0.1 on a free port, writes a kubeconfig for it, prints ``READY <url>`` and serves until
SIGTERM or SIGINT, then stops every pod process it started.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from aiohttp import web

from .api import make_app
from .kubelet import Kubelet, default_nodes
from .store import Store

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: standin
  cluster: {{server: "{url}"}}
users:
- name: standin
  user: {{token: standin-token}}
contexts:
- name: standin
  context: {{cluster: standin, user: standin, namespace: default}}
current-context: standin
"""


async def serve(args: argparse.Namespace) -> None:
    store = Store()
    for namespace in args.namespace:
        store.create("namespaces", "", {"metadata": {"name": namespace}})
    kubelet = Kubelet(
        store,
        default_nodes(args.gpus),
        start_delay=args.start_delay,
        builtin_http=frozenset(args.builtin_http),
    )
    await kubelet.start()
    app = make_app(store, kubelet, validate=args.validate or None)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    await asyncio.to_thread(Path(args.kubeconfig).write_text, KUBECONFIG.format(url=url))
    print(f"READY {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await kubelet.shutdown()
    kubelet.cleanup()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig")
    parser.add_argument("--gpus", type=int, default=1, help="nvidia.com/gpu on the GPU node")
    parser.add_argument(
        "--start-delay", type=float, default=0.0, help="seconds before a container starts"
    )
    parser.add_argument(
        "--namespace", action="append", default=[], help="extra namespaces to create"
    )
    parser.add_argument(
        "--builtin-http",
        action="append",
        default=[],
        metavar="COMMAND",
        help="serve containers running COMMAND in-process (answers 200); for benchmarks",
    )
    parser.add_argument("--validate", default="1.30", help="schema-check created pods ('' to skip)")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
