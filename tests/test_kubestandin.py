"""The Kubernetes stand-in answers kubernetes_asyncio the way an API server does.

These pin the behaviour the spawner tests rely on, through the real client library.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.rest import ApiException

from .kubestandin import StandIn

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with StandIn(tmp_path_factory.mktemp("kube"), gpus=1) as kube:
        yield kube


@pytest.fixture
async def api(standin: StandIn) -> AsyncIterator[client.CoreV1Api]:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(standin.kubeconfig), client_configuration=configuration
    )
    async with client.ApiClient(configuration) as api_client:
        yield client.CoreV1Api(api_client)


def pod(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "t", "tier": name.split("-")[0]}},
        "spec": {"containers": [{"name": "main", "image": "x", "command": command}], **spec},
    }


async def wait_for(predicate: Any, seconds: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.1)


async def test_server_fills_metadata_and_refuses_duplicates(api: client.CoreV1Api) -> None:
    body = {"metadata": {"name": "cfg-a", "labels": {"a": "1"}}, "data": {"k": "v"}}
    created = await api.create_namespaced_config_map("default", body)
    assert created.metadata.uid and created.metadata.resource_version
    assert created.metadata.creation_timestamp is not None
    assert created.metadata.namespace == "default"
    with pytest.raises(ApiException) as e:
        await api.create_namespaced_config_map("default", body)
    assert e.value.status == 409
    assert '"reason":"AlreadyExists"' in e.value.body.replace(" ", "")
    with pytest.raises(ApiException) as e:
        await api.read_namespaced_config_map("missing", "default")
    assert e.value.status == 404
    with pytest.raises(ApiException) as e:
        await api.create_namespaced_config_map("no-such-namespace", body)
    assert e.value.status == 404
    with pytest.raises(ApiException) as e:
        await api.create_namespaced_config_map("default", {"metadata": {"name": "Bad_Name"}})
    assert e.value.status == 422


async def test_merge_and_json_patch(api: client.CoreV1Api) -> None:
    await api.create_namespaced_config_map(
        "default", {"metadata": {"name": "cfg-p"}, "data": {"a": "1", "b": "2"}}
    )
    merged = await api.patch_namespaced_config_map(
        "cfg-p", "default", {"data": {"a": None, "c": "3"}}
    )
    assert merged.data == {"b": "2", "c": "3"}
    patched = await api.patch_namespaced_config_map(
        "cfg-p", "default", [{"op": "replace", "path": "/data/b", "value": "two"},
                             {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}}],
    )  # fmt: skip
    assert patched.data == {"b": "two", "c": "3"} and patched.metadata.labels == {"x": "y"}
    assert int(patched.metadata.resource_version) > int(merged.metadata.resource_version)


async def test_list_selectors_and_namespaces(api: client.CoreV1Api) -> None:
    await api.create_namespace({"metadata": {"name": "sel"}})
    for name, labels in [
        ("s-1", {"app": "a", "n": "1"}),
        ("s-2", {"app": "a"}),
        ("s-3", {"app": "b"}),
    ]:
        await api.create_namespaced_config_map(
            "sel", {"metadata": {"name": name, "labels": labels}}
        )

    async def names(**kw: Any) -> list[str]:
        found = await api.list_namespaced_config_map("sel", **kw)
        return [item.metadata.name for item in found.items]

    assert await names(label_selector="app=a") == ["s-1", "s-2"]
    assert await names(label_selector="app=a,!n") == ["s-2"]
    assert await names(label_selector="app in (b, c)") == ["s-3"]
    assert await names(label_selector="app!=a") == ["s-3"]
    assert await names(field_selector="metadata.name=s-2") == ["s-2"]
    everywhere = await api.list_config_map_for_all_namespaces(label_selector="app")
    assert {item.metadata.namespace for item in everywhere.items} == {"sel"}
    await api.delete_namespace("sel")
    with pytest.raises(ApiException) as e:
        await api.list_namespaced_config_map("sel")
    assert e.value.status == 404


async def test_watch_streams_from_resource_version_with_timeout(api: client.CoreV1Api) -> None:
    listed = await api.list_namespaced_secret("default", label_selector="w=1")
    since = listed.metadata.resource_version
    await api.create_namespaced_secret(
        "default", {"metadata": {"name": "w-a", "labels": {"w": "1"}}}
    )
    await api.create_namespaced_secret(
        "default", {"metadata": {"name": "w-b", "labels": {"w": "2"}}}
    )
    await api.patch_namespaced_secret("w-a", "default", {"metadata": {"annotations": {"k": "v"}}})
    await api.delete_namespaced_secret("w-a", "default")
    seen = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with watch.Watch().stream(
        api.list_namespaced_secret, "default", label_selector="w=1",
        resource_version=since, timeout_seconds=1,
    ) as stream:  # fmt: skip
        async for event in stream:
            seen.append((event["type"], event["object"].metadata.name))
    assert seen == [("ADDED", "w-a"), ("MODIFIED", "w-a"), ("DELETED", "w-a")]
    assert loop.time() - started >= 0.9  # the stream stayed open until timeoutSeconds


async def test_deleting_an_owner_deletes_what_it_owns(api: client.CoreV1Api) -> None:
    owner = await api.create_namespaced_config_map("default", {"metadata": {"name": "owner"}})
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    await api.create_namespaced_service(
        "default",
        {"metadata": {"name": "owned", "ownerReferences": [ref]},
         "spec": {"ports": [{"port": 80}], "selector": {"a": "b"}}},
    )  # fmt: skip
    await api.delete_namespaced_config_map("owner", "default")
    with pytest.raises(ApiException) as e:
        await api.read_namespaced_service("owned", "default")
    assert e.value.status == 404


async def test_kubelet_runs_the_command_and_probes_readiness(api: client.CoreV1Api) -> None:
    command = [sys.executable, "-m", "http.server", "8000", "--bind", "0.0.0.0"]
    body = pod("web-1", command)
    container = body["spec"]["containers"][0]
    container["ports"] = [{"name": "http", "containerPort": 8000}]
    container["readinessProbe"] = {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}
    container["env"] = [{"name": "GREETING", "value": "hi"}]
    await api.create_namespaced_pod("default", body)

    async def ready() -> bool:
        p = await api.read_namespaced_pod("web-1", "default")
        return bool(p.status.container_statuses and p.status.container_statuses[0].ready)

    await wait_for(ready)
    running = await api.read_namespaced_pod("web-1", "default")
    assert running.status.phase == "Running"
    assert running.status.pod_ip.startswith("127.") and running.status.pod_ip != "127.0.0.1"
    events = await api.list_namespaced_event("default", field_selector="involvedObject.name=web-1")
    assert [e.reason for e in events.items] == ["Scheduled", "Pulled", "Created", "Started"]
    # the process answers on the pod's own address
    reader, writer = await asyncio.open_connection(running.status.pod_ip, 8000)
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.0 200")
    writer.close()
    await api.delete_namespaced_pod("web-1", "default", grace_period_seconds=1)

    async def gone() -> bool:
        names = [p.metadata.name for p in (await api.list_namespaced_pod("default")).items]
        return "web-1" not in names

    await wait_for(gone)
    with pytest.raises(OSError):
        await asyncio.open_connection(running.status.pod_ip, 8000)


async def test_gpu_shortage_is_a_failed_scheduling_event(api: client.CoreV1Api) -> None:
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    gpu = {"limits": {"nvidia.com/gpu": "1"}}
    tolerate = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    first, second = (
        pod("gpu-a", sleep, tolerations=tolerate),
        pod("gpu-b", sleep, tolerations=tolerate),
    )
    for body in (first, second):
        body["spec"]["containers"][0]["resources"] = gpu
    await api.create_namespaced_pod("default", first)
    await api.create_namespaced_pod("default", second)

    async def failed_scheduling() -> list[str]:
        found = await api.list_namespaced_event(
            "default", field_selector="involvedObject.name=gpu-b,reason=FailedScheduling"
        )
        return [e.message for e in found.items]

    await wait_for(failed_scheduling)
    message = (await failed_scheduling())[0]
    assert message.startswith("0/2 nodes are available:")
    assert "2 Insufficient nvidia.com/gpu" in message  # the CPU node has none at all
    assert "untolerated taint" not in message  # the toleration was honoured
    assert (await api.read_namespaced_pod("gpu-b", "default")).status.phase == "Pending"
    # freeing the GPU lets the waiting pod in
    await api.delete_namespaced_pod("gpu-a", "default", grace_period_seconds=0)

    async def scheduled() -> bool:
        return bool((await api.read_namespaced_pod("gpu-b", "default")).spec.node_name)

    await wait_for(scheduled)
    assert (await api.read_namespaced_pod("gpu-b", "default")).spec.node_name == "gpu-node-1"
    await api.delete_namespaced_pod("gpu-b", "default", grace_period_seconds=0)


async def test_counts_requests_by_verb(standin: StandIn, api: client.CoreV1Api) -> None:
    before = standin.requests()
    await api.list_namespaced_pod("default")
    await api.list_namespaced_pod("default")
    after = standin.requests()
    assert after[("list", "pods")] - before.get(("list", "pods"), 0) == 2


def test_kubeconfig_points_at_loopback(standin: StandIn) -> None:
    assert 'server: "http://127.0.0.1:' in Path(standin.kubeconfig).read_text()
