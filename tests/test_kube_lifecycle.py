"""A session's whole life on the Kubernetes backend, over HTTP, against the loopback stand-in.

Real JupyterHub, real configurable-http-proxy, real KubeSpawner and kubernetes_asyncio; the cluster
is :mod:`tests.kubestandin` (API server, scheduler and kubelet in one small process), whose GPU node
has one ``nvidia.com/gpu``. Pods run jupyterhub-singleuser as local processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .hubtest import EXAMPLE_CATALOG, Hub, make_hub
from .kubestandin import StandIn

pytestmark = pytest.mark.timeout(240)

EXTRA_CONFIG = """
c.BerthKubeSpawner.namespace = "default"
c.BerthKubeSpawner.start_timeout = 120
# answer POST .../servers/x at once (202), so tests can follow the spawn's progress
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}
"""


def kube_catalog() -> str:
    return EXAMPLE_CATALOG.read_text().replace("\nbackend: local\n", "\nbackend: kubernetes\n")


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandIn]:
    # Containers take a moment to start, as on a real node (an image to unpack): long enough for
    # a test to be reading the progress stream while the pod is still on its way.
    with StandIn(tmp_path_factory.mktemp("kube"), gpus=1, start_delay=2.0) as standin:
        yield standin


@pytest.fixture(scope="module")
def hub(kube: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    hub = make_hub(
        tmp_path_factory.mktemp("hub"),
        catalog=kube_catalog(),
        extra_config=EXTRA_CONFIG,
        env={"KUBECONFIG": str(kube.kubeconfig)},
    )
    try:
        hub.start()
        for user in ("alice", "bob", "ann.lee", "ann-lee"):
            hub.create_user(user)
        yield hub
    finally:
        hub.stop()


def pods(kube: StandIn, selector: str = "component=singleuser-server") -> list[dict[str, Any]]:
    return kube.objects("pods", selector=selector)


def pod_of(kube: StandIn, user: str, session: str) -> dict[str, Any] | None:
    for pod in pods(kube):
        notes = pod["metadata"]["annotations"]
        if (
            notes.get("berth.jupyter.org/user") == user
            and notes.get("berth.jupyter.org/session") == session
        ):
            return pod
    return None


def wait(predicate: Any, timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what} not reached in {timeout}s")


def test_spawn_ready_reachable_and_stopped(hub: Hub, kube: StandIn) -> None:
    r = hub.start_session("alice", "nb", {"service": "jupyter", "profile": "cpu-small", "hours": 1})
    assert r.status_code in (201, 202), r.text
    messages = hub.progress_messages("alice", "nb", until="ready")
    server = hub.wait_ready("alice", "nb")
    assert server["ready"]
    # the events reached the user as sentences
    assert any(m.startswith("Placed on node cpu-node-1") for m in messages), messages
    assert any("JupyterLab is starting" in m for m in messages), messages

    pod = pod_of(kube, "alice", "nb")
    assert pod is not None and pod["status"]["phase"] == "Running"
    assert pod["metadata"]["labels"]["berth.jupyter.org/service"] == "jupyter"
    assert pod["metadata"]["labels"]["berth.jupyter.org/profile"] == "cpu-small"
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert (float(limits["cpu"]), int(limits["memory"])) == (2, 4 * 2**30) and len(limits) == 2
    # The hub proceeds as soon as the service answers; the pod's readiness probe, which asks the
    # same question, marks it Ready within a probe period (readiness_period, 1 s).
    wait(
        lambda: pod_of(kube, "alice", "nb")["status"]["containerStatuses"][0]["ready"],
        timeout=10,
        what="the pod's readiness probe",
    )
    # the session's Service follows in the background, owned by the pod
    wait(lambda: bool(kube.objects("services")), what="the session's Service")
    services = kube.objects("services")
    assert [s["metadata"]["name"] for s in services] == [pod["metadata"]["name"]]
    assert services[0]["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]

    # reachable through the real proxy, with the user's token
    token = hub.token("alice")
    r = hub.get("/user/alice/nb/api/status", token=token)
    assert r.status_code == 200, r.text
    assert "kernels" in r.json()

    # the pod's own output, as `berth logs` reads it
    def logged() -> bool:
        r = hub.api("GET", "/berth/users/alice/sessions/nb/logs?lines=500", token=token)
        assert r.status_code == 200, r.text
        return any("JupyterHubSingleUser" in line for line in r.json()["lines"])

    wait(logged, timeout=20, what="the server's own log lines")

    hub.stop_session("alice", "nb")
    wait(lambda: pod_of(kube, "alice", "nb") is None, what="pod deleted")
    assert kube.objects("services") == []
    assert (
        hub.get("/user/alice/nb/api/status", token=token, follow_redirects=False).status_code != 200
    )


def test_gpu_shortage_is_queued_with_a_clear_sentence(hub: Hub, kube: StandIn) -> None:
    gpu = {"service": "jupyter", "profile": "gpu-1", "hours": 1}
    assert hub.start_session("bob", "first", gpu).status_code in (201, 202)
    hub.wait_ready("bob", "first")
    placed = pod_of(kube, "bob", "first")
    assert placed is not None and placed["spec"]["nodeName"] == "gpu-node-1"

    assert hub.start_session("bob", "second", gpu).status_code in (201, 202)
    messages = hub.progress_messages("bob", "second", until="Waiting for")
    sentence = messages[-1]
    assert sentence == (
        "Waiting for 1 free a100 GPU: every node that fits profile '1 GPU' has its GPUs in use."
        " The session is queued and starts when they are free; stop it to give up."
    )
    assert not any("Insufficient" in m for m in messages)
    assert hub.server("bob", "second")["pending"] == "spawn"

    # the first session ends, the queued one gets the GPU and starts
    hub.stop_session("bob", "first")
    hub.wait_ready("bob", "second", timeout=120)
    second = pod_of(kube, "bob", "second")
    assert second is not None and second["spec"]["nodeName"] == "gpu-node-1"
    hub.stop_session("bob", "second")
    wait(lambda: pod_of(kube, "bob", "second") is None, what="pod deleted")


def test_users_alike_in_name_get_their_own_pods(hub: Hub, kube: StandIn) -> None:
    """'ann.lee' and 'ann-lee' read alike as DNS labels; each gets their own pod and service."""
    for user in ("ann.lee", "ann-lee"):
        r = hub.start_session(user, "same", {"service": "jupyter", "profile": "cpu-small"})
        assert r.status_code in (201, 202), r.text
    for user in ("ann.lee", "ann-lee"):
        hub.wait_ready(user, "same")
    first, second = pod_of(kube, "ann.lee", "same"), pod_of(kube, "ann-lee", "same")
    assert first and second
    assert first["metadata"]["name"] != second["metadata"]["name"]
    assert first["metadata"]["name"].startswith("berth-ann-lee-same-")
    names = {first["metadata"]["name"], second["metadata"]["name"]}
    wait(
        lambda: names <= {s["metadata"]["name"] for s in kube.objects("services")},
        what="both sessions' Services",
    )
    for user in ("ann.lee", "ann-lee"):
        token = hub.token(user)
        assert hub.get(f"/user/{user}/same/api/status", token=token).status_code == 200
        hub.stop_session(user, "same")


def test_bad_options_are_refused_before_anything_reaches_the_cluster(
    hub: Hub, kube: StandIn
) -> None:
    before = kube.requests()
    for options, reason in [
        ({"service": "jupyter", "image": "evil/miner"}, "unknown option 'image'"),
        ({"service": "jupyter", "profile": "gpu-4"}, "limited to the groups gpu-large"),
        (
            {"service": "jupyter", "profile-option-gpu-1--image--unlisted-choice": "x"},
            "unknown option",
        ),
    ]:
        r = hub.start_session("bob", "bad", options)
        assert r.status_code == 400, r.text
        assert reason in r.json()["message"]
    after = kube.requests()
    assert after.get(("create", "pods"), 0) == before.get(("create", "pods"), 0)


def test_a_restarted_hub_adopts_its_running_pod(hub: Hub, kube: StandIn) -> None:
    assert hub.start_session("alice", "keep", {"service": "jupyter"}).status_code in (201, 202)
    hub.wait_ready("alice", "keep")
    before = pod_of(kube, "alice", "keep")
    assert before is not None
    hub.kill()  # as a crash would: the proxy and the pod live on
    hub.start()
    server = hub.server("alice", "keep")
    assert server is not None and server["ready"], server
    after = pod_of(kube, "alice", "keep")
    assert after is not None and after["metadata"]["uid"] == before["metadata"]["uid"]
    token = hub.token("alice")
    r = hub.get("/user/alice/keep/api/status", token=token)
    assert r.status_code == 200, r.text
    hub.stop_session("alice", "keep")
    wait(lambda: pod_of(kube, "alice", "keep") is None, what="pod deleted")


def test_hub_uses_only_the_verbs_its_role_grants(hub: Hub, kube: StandIn) -> None:
    """Everything the hub asked the API for is allowed by deploy/kubernetes's Role."""
    import yaml

    role_file = Path(__file__).parents[1] / "deploy" / "kubernetes" / "manifests" / "rbac.yaml"
    docs = [d for d in yaml.safe_load_all(role_file.read_text()) if d]
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "berth-hub")
    granted = {
        (verb, res) for rule in role["rules"] for res in rule["resources"] for verb in rule["verbs"]
    }
    used = set(kube.requests())
    assert used <= granted, used - granted
