"""One pass of jupyterhub-idle-culler 2.x, timed; run with the peer's own virtualenv.

    .peer-venv/bin/python peer_pass.py API_URL TOKEN TIMEOUT CONCURRENCY PAGE_SIZE

Prints {"seconds": ...}. It calls the peer's own ``cull_idle`` (what its service runs every
``--cull-every`` seconds) once, exactly as ``python -m jupyterhub_idle_culler`` would.
"""

import asyncio
import json
import logging
import sys
import time

from jupyterhub_idle_culler import cull_idle


async def main() -> None:
    url, token, timeout, concurrency, page_size = sys.argv[1:6]
    logger = logging.getLogger("idle-culler")
    logging.basicConfig(level=logging.WARNING)
    began = time.perf_counter()
    await cull_idle(
        url,
        token,
        inactive_limit=int(timeout),
        logger=logger,
        concurrency=int(concurrency),
        api_page_size=int(page_size),
    )
    print(json.dumps({"seconds": time.perf_counter() - began}))


asyncio.run(main())
