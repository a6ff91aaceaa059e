"""The hub starts berth-culler as a managed service, exactly as a site's config registers it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from berth.services import clock
from berth.services.deadlines import SessionKey
from berth.services.ledger import Ledger

from .hub import RealHub
from .livehub import CATALOG_PATH

PREFIX = "/services/berth-culler/api"


@pytest.fixture(scope="module")
def managed_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RealHub, Path]]:
    workdir = tmp_path_factory.mktemp("managed")
    ledger = workdir / "ledger.sqlite"
    config = f"""
from berth.services import register_culler
register_culler(c, {str(CATALOG_PATH)!r}, db_url={f"sqlite:///{ledger}"!r}, interval=3600)
"""
    hub = RealHub(workdir, extra_config=config)
    hub.start()
    yield hub, ledger
    try:
        hub.stop_all()
    finally:
        hub.stop()


def wait_for_first_pass(hub: RealHub, token: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status, body = hub.proxy_request("GET", f"{PREFIX}/status", token)
        if status == 200 and body["last_pass"] is not None:
            return dict(body["last_pass"])
        time.sleep(0.2)
    raise AssertionError(f"berth-culler never reported a pass:\n{hub.log()}")


def test_managed_culler_serves_deadlines_and_extensions(managed_hub: tuple[RealHub, Path]) -> None:
    hub, ledger_path = managed_hub
    token = hub.create_user("maria", groups=("no-idle",))
    other = hub.create_user("nina")
    model = hub.start_server("maria", "nb", {"service": "jupyter", "profile": "cpu", "hours": 1})
    started = clock.parse_time(model["started"])
    assert started is not None

    last_pass = wait_for_first_pass(hub, token)
    assert last_pass["complete"] is True and last_pass["error"] is None

    status, body = hub.proxy_request("GET", f"{PREFIX}/sessions", token)
    assert status == 200
    (session,) = body["sessions"]
    assert session["id"] == "maria/nb"
    assert session["hard_deadline"] == clock.isoformat(started + timedelta(hours=1))
    assert session["limit"] == clock.isoformat(started + timedelta(hours=5))
    assert session["extension"] == {"used_seconds": 0, "cap_seconds": 14400, "left_seconds": 14400}

    status, body = hub.proxy_request(
        "POST", f"{PREFIX}/sessions/maria/nb/extend", token, b'{"hours": 2, "reason": "run"}'
    )
    assert status == 200, body
    assert body["hard_deadline"] == clock.isoformat(started + timedelta(hours=3))
    status, body = hub.proxy_request("POST", f"{PREFIX}/sessions/maria/nb/extend", other, b"{}")
    assert status == 403

    status, body = hub.proxy_request("GET", f"{PREFIX}/events", token)
    assert status == 200
    assert [(e["kind"], e["seconds"], e["reason"]) for e in body["events"]] == [
        ("extension", 7200.0, "run")
    ]
    ledger = Ledger(f"sqlite:///{ledger_path}")  # what the service wrote, read from its file
    try:
        assert ledger.extended(SessionKey("maria", "nb", started)) == timedelta(hours=2)
    finally:
        ledger.close()


def test_the_openapi_document_is_served(managed_hub: tuple[RealHub, Path]) -> None:
    hub, _ = managed_hub
    status, body = hub.proxy_request("GET", f"{PREFIX}/openapi.yaml", "no-token-needed")
    assert status == 200
    document = yaml.safe_load(body)
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/sessions",
        "/sessions/{user}/{name}",
        "/sessions/{user}/{name}/extend",
        "/events",
        "/status",
        "/openapi.yaml",
    }


def test_the_service_root_says_where_the_api_is(managed_hub: tuple[RealHub, Path]) -> None:
    """What JupyterHub's service health check (and a curious admin) finds at the service's URL."""
    hub, _ = managed_hub
    status, body = hub.proxy_request("GET", "/services/berth-culler/", "no-token-needed")
    assert status == 200
    assert body == {
        "service": "berth-culler",
        "api": "/services/berth-culler/api/",
        "openapi": "/services/berth-culler/api/openapi.yaml",
    }
    status, _ = hub.proxy_request("GET", str(body["openapi"]), "no-token-needed")
    assert status == 200
