"""berth-culler in a hub set up by ``berth.hub_config.configure`` with real Berth sessions.

The lead's harness (``tests/hubtest.py``) starts the hub with the example catalog; configure()
registers the culler, which the hub starts as a managed service. A real gated session (Python's
http.server behind berth-gate, on the local backend) gets its deadlines from the catalog.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from berth.services import clock

from ..hubtest import Hub, running_hub

FILES = {"service": "files", "profile": "cpu-small", "hours": 1}
API = "/services/berth-culler/api"


@pytest.fixture(scope="module")
def berth_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with running_hub(tmp_path_factory.mktemp("berth-hub")) as hub:
        yield hub


def culler_pid(hub: Hub) -> int:
    r = hub.api("GET", "/services/berth-culler")
    assert r.status_code == 200, r.text
    model = r.json()
    assert model["roles"] == ["berth-culler"]
    return int(model["pid"])


def test_configure_runs_the_culler_and_it_serves_berth_sessions(berth_hub: Hub) -> None:
    hub = berth_hub
    hub.create_user("olga")
    token = hub.token("olga")
    r = hub.start_session("olga", "files", FILES, token=token)
    assert r.status_code in (201, 202), r.text
    server = hub.wait_ready("olga", "files")
    started = clock.parse_time(server["started"])
    assert started is not None
    assert culler_pid(hub) > 0

    r = hub.get(f"{API}/sessions/olga/files", token=token)
    assert r.status_code == 200, r.text
    session = r.json()
    assert (session["service"], session["profile"], session["state"]) == (
        "files",
        "cpu-small",
        "running",
    )
    # the example catalog's defaults: 1h idle timeout, 4h extension cap
    assert session["idle_timeout_seconds"] == 3600
    assert session["hard_deadline"] == clock.isoformat(started + timedelta(hours=1))
    assert session["extension"]["cap_seconds"] == 4 * 3600

    r = hub.api("POST", "/users/olga/tokens", json={"note": "cli"})
    cli_token = r.json()["token"]
    r = hub.get(f"{API}/sessions", token=cli_token)
    assert [s["id"] for s in r.json()["sessions"]] == ["olga/files"]
    r = httpx_post(hub, f"{API}/sessions/olga/files/extend", cli_token, {"hours": 0.5})
    assert r.status_code == 200, r.text
    assert r.json()["hard_deadline"] == clock.isoformat(started + timedelta(hours=1.5))


def test_the_culler_ends_with_its_hub_even_when_the_hub_is_killed(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with running_hub(tmp_path_factory.mktemp("killed-hub")) as hub:
        pid = culler_pid(hub)
        assert alive(pid)
        hub.kill()  # SIGKILL: the hub cannot stop its services
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not alive(pid):
                return
            time.sleep(0.2)
        raise AssertionError("berth-culler outlived its hub")


def alive(pid: int) -> bool:
    """Running (an exited process nobody has reaped yet is a zombie: not running)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def httpx_post(hub: Hub, path: str, token: str, body: object) -> httpx.Response:
    return httpx.post(
        f"{hub.url}{path}", json=body, headers={"Authorization": f"token {token}"}, timeout=30
    )
