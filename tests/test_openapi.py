"""The OpenAPI documents against what a real hub answers: Berth's hub endpoints (every documented
answer produced and matched, every route documented), the user_options schema the catalog serves
against what the hub accepts, and berth-culler's API for what the CLI and the pages use."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from berth.hub_config.api import handlers

from .hubtest import ROOT, Hub
from .openapi_check import OpenAPI
from .stand_ins import stand_in_hub

HUB_DOC = ROOT / "hub_config" / "openapi.yaml"
CULLER_DOC = ROOT / "services" / "openapi.yaml"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with stand_in_hub(tmp_path_factory.mktemp("openapi-hub")) as hub:
        for name in ("gina", "hank"):
            hub.create_user(name)
        yield hub


@pytest.fixture(scope="module")
def tokens(hub: Hub) -> dict[str, str]:
    return {name: hub.token(name) for name in ("gina", "hank")}


@pytest.fixture(scope="module")
def notebook(hub: Hub, tokens: dict[str, str]) -> Iterator[str]:
    """gina's running JupyterLab session "nb"."""
    r = hub.start_session("gina", "nb", {"service": "jupyter"}, token=tokens["gina"])
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("gina", "nb")
    yield "nb"
    hub.stop_session("gina", "nb", remove=True)


def example(template: str) -> str:
    return re.sub(r"\{[^/]+\}", "x", template)


def test_every_route_is_documented_and_every_documented_path_is_served() -> None:
    api = OpenAPI(HUB_DOC)
    routes = [re.compile(pattern) for pattern, _ in handlers()]
    documented = [template for _, template in api.operations()]
    for template in documented:
        assert any(route.fullmatch("/api" + example(template)) for route in routes), template
    for route in routes:
        assert any(route.fullmatch("/api" + example(t)) for t in documented), route.pattern


def test_hub_endpoints_answer_as_documented(
    hub: Hub, tokens: dict[str, str], notebook: str
) -> None:
    api = OpenAPI(HUB_DOC)
    gina = {"Authorization": f"token {tokens['gina']}"}
    admin = {"Authorization": f"token {hub.admin_token}"}
    wrong = {"Authorization": "token not-a-token"}
    base = f"{hub.url}/hub/api/berth"

    def get(path: str, headers: dict[str, str], **params: str) -> Any:
        return api.check(httpx.get(base + path, headers=headers, params=params, timeout=30))

    catalog = get("/catalog", gina)
    assert catalog["user"] == "gina"
    assert get("/catalog", admin, user="gina") == catalog
    assert get("/catalog", admin)["message"] == "a service must name the user: ?user=<name>"
    assert get("/catalog", wrong)["status"] == 403
    assert get("/catalog", admin, user="nobody")["message"] == "no user named 'nobody'"
    # another user's catalog does not exist for hank
    hank = {"Authorization": f"token {tokens['hank']}"}
    assert get("/catalog", hank, user="gina")["status"] == 404

    logs = f"/users/gina/sessions/{notebook}/logs"
    assert any("Jupyter Server" in line for line in get(logs, gina, lines="100")["lines"])
    assert get(logs, gina, lines="0")["message"] == "lines must be a whole number from 1 to 10000"
    assert get(logs, wrong)["status"] == 403
    assert get("/users/gina/sessions/none/logs", gina)["status"] == 404

    text = get("/openapi.yaml", {})
    assert text == HUB_DOC.read_text()
    # every answer the document lists was produced and matched
    assert api.checked == api.documented()


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"service": "jupyter", "profile": "gpu-1", "hours": 8},
        {"service": "jupyter", "hours": 8.01},
        {"service": "jupyter", "hours": 0.01},
        {"service": "jupyter", "profile": "gpu-4"},  # gina is not in gpu-large
        {"service": "vllm"},
        {"service": "vllm", "inputs": {"model": "org/model", "max_model_len": 1024.0}},
        {"service": "vllm", "inputs": {"model": "org/model", "max_model_len": 1024.5}},
        {"service": "vllm", "inputs": {"model": "org/model\n#SBATCH --gres=gpu:8"}},
        {"service": "terminal", "profile": "cpu-large"},
        {"service": "files", "inputs": {"path": "/"}},
        {"service": "jupyter", "cmd": ["bash"]},
    ],
)
def test_the_served_schema_decides_as_the_hub_does(
    hub: Hub, tokens: dict[str, str], options: dict[str, Any]
) -> None:
    r = hub.api("GET", "/berth/catalog", token=tokens["gina"])
    schema = r.json()["user_options_schema"]
    expected = Draft202012Validator(schema).is_valid(options)
    # q-*: the stand-in queue holds an accepted session, so nothing runs
    r = hub.start_session("gina", "q-probe", options, token=tokens["gina"])
    assert r.status_code in (201, 202, 400), r.text
    if r.status_code != 400:
        hub.stop_session("gina", "q-probe", remove=True)
    assert (r.status_code != 400) == expected, r.text


def test_the_culler_answers_the_cli_and_pages_as_documented(
    hub: Hub, tokens: dict[str, str], notebook: str
) -> None:
    api = OpenAPI(CULLER_DOC)
    base = f"{hub.url}{api.prefix}"
    gina = {"Authorization": f"token {tokens['gina']}"}
    hank = {"Authorization": f"token {tokens['hank']}"}

    def call(method: str, path: str, headers: dict[str, str], **kwargs: Any) -> Any:
        return api.check(httpx.request(method, base + path, headers=headers, timeout=30, **kwargs))

    listed = call("GET", "/sessions", gina, params={"user": "gina"})
    assert [s["name"] for s in listed["sessions"]] == [notebook]
    one = call("GET", f"/sessions/gina/{notebook}", gina)
    assert one["extension"]["used_seconds"] == 0
    assert call("GET", "/sessions/gina/none", gina)["status"] == 404
    extended = call("POST", f"/sessions/gina/{notebook}/extend", gina, json={"hours": 1})
    assert extended["extended_by_seconds"] == 3600
    assert (
        call("POST", f"/sessions/gina/{notebook}/extend", gina, json={"hours": 0})["status"] == 400
    )
    assert (
        call("POST", f"/sessions/gina/{notebook}/extend", gina, json={"hours": 3.5})["status"]
        == 409
    )
    assert (
        call("POST", f"/sessions/gina/{notebook}/extend", hank, json={"hours": 1})["status"] == 403
    )
    wrong = {"Authorization": "token not-a-token"}
    assert call("GET", "/sessions", wrong)["status"] == 401
