"""Fixtures around one real hub shared by a test module, with the culler registered on it.

The culler is registered exactly as a site registers it (``register_culler``), except that the
test runs it in-process (so it can move the culler's clock) instead of letting the hub start it:
the service entry keeps its URL and role and gets a known token instead of a command.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jupyterhub.services.auth import HubOAuth
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.httpserver import HTTPServer

from berth.hub_config import load_catalog
from berth.services.api import make_handlers
from berth.services.culler import Culler
from berth.services.hubclient import HubClient, RetryPolicy
from berth.services.ledger import Ledger
from berth.services.webhook import Webhook

from .hub import RealHub, free_port

CATALOG_PATH = Path(__file__).with_name("berth-test.yaml")
CULLER_TOKEN = "culler-test-service-token-0123456789abcdef"
PREFIX = "/services/berth-culler/"
_names = itertools.count()


def unique(name: str) -> str:
    return f"{name}{next(_names)}"


@dataclass
class LiveHub:
    hub: RealHub
    api_port: int


def start_live_hub(workdir: Path, extra: str = "") -> LiveHub:
    api_port = free_port()
    config = f"""
from berth.services import register_culler
register_culler(c, {str(CATALOG_PATH)!r}, port={api_port})
_culler = c.JupyterHub.services[-1]
del _culler["command"]
_culler["api_token"] = {CULLER_TOKEN!r}
_culler["timeout"] = 1  # the test serves the API after the hub is up: do not wait for it
c.JupyterHub.log_level = "DEBUG"
{extra}
"""
    hub = RealHub(workdir, extra_config=config)
    hub.start()
    return LiveHub(hub, api_port)


@pytest.fixture(scope="module")
def live_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    live = start_live_hub(tmp_path_factory.mktemp("hub"))
    yield live
    try:
        live.hub.stop_all()
    finally:
        live.hub.stop()


def make_culler(
    live: LiveHub, db_url: str, webhook: Webhook | None = None, retry_for: float = 5
) -> Culler:
    hub = HubClient(live.hub.api, CULLER_TOKEN, retry=RetryPolicy(retry_for=retry_for))
    return Culler(load_catalog(CATALOG_PATH), hub, Ledger(db_url), webhook=webhook)


def close_culler(culler: Culler) -> None:
    culler.hub.close()
    culler.ledger.close()


@pytest.fixture
async def api(
    live_hub: LiveHub, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Culler]:
    """The culler with its API served at the service URL the hub proxies to."""
    for key, value in {
        "JUPYTERHUB_API_URL": live_hub.hub.api,
        "JUPYTERHUB_API_TOKEN": CULLER_TOKEN,
        "JUPYTERHUB_SERVICE_NAME": "berth-culler",
        "JUPYTERHUB_SERVICE_PREFIX": PREFIX,
        "JUPYTERHUB_CLIENT_ID": "service-berth-culler",
        "JUPYTERHUB_BASE_URL": "/",
    }.items():
        monkeypatch.setenv(key, value)
    HubOAuth.clear_instance()
    culler = make_culler(live_hub, db_url)
    app = web.Application(make_handlers(PREFIX, culler), cookie_secret=os.urandom(32))
    server = HTTPServer(app)
    server.listen(live_hub.api_port, "127.0.0.1")
    yield culler
    server.stop()
    await server.close_all_connections()
    close_culler(culler)
    HubOAuth.clear_instance()


async def call(
    live: LiveHub, method: str, path: str, token: str, body: Any = None, raw: bytes | None = None
) -> tuple[int, Any]:
    """A request through the hub's proxy to the culler's API (``path`` after ``/api/``)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    if method == "POST" and data is None:
        data = b""
    client = AsyncHTTPClient()
    response = await client.fetch(
        HTTPRequest(
            f"{live.hub.url}{PREFIX}api/{path}",
            method=method,
            body=data,
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
            request_timeout=30,
        ),
        raise_error=False,
    )
    try:
        parsed = json.loads(response.body) if response.body else None
    except ValueError:
        parsed = response.body.decode(errors="replace")
    return response.code, parsed
