"""Every pod, service and volume claim the example catalog can produce is valid Kubernetes.

The manifests come from a real BerthKubeSpawner (KubeSpawner's own renderer, fed by Berth's
builders) and are checked with kubernetes-validate in strict mode (unknown fields are errors)
against the published schemas of one Kubernetes version.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kubernetes_validate
import pytest
from jupyterhub import orm
from jupyterhub.objects import Server
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.config import kube_config
from kubespawner.objects import make_owner_reference
from traitlets.config import Config

from berth.hub_config.catalog import Catalog
from berth.hub_config.loader import load_catalog
from berth.spawners.kubernetes import BerthKubeSpawner
from berth.spawners.kubernetes.names import _digest
from berth.spawners.options import OptionsError

KUBERNETES_VERSION = "1.30"
EXAMPLE = Path(__file__).parents[1] / "hub_config" / "examples" / "berth.yaml"
INPUTS = {"vllm": {"model": "meta-llama/Llama-3.1-8B-Instruct"}}


@pytest.fixture(autouse=True)
def offline_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KubeSpawner loads a kubeconfig when it is created; this one points nowhere (never used)."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        "apiVersion: v1\nkind: Config\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: x, context: {cluster: c, user: u}}]\ncurrent-context: x\n"
    )
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(EXAMPLE)


def make_spawner(user: str, session: str, config: Config | None = None) -> BerthKubeSpawner:
    cfg = config or Config()
    cfg.BerthSpawner.catalog_path = str(EXAMPLE)
    hub = SimpleNamespace(
        public_host="", url="/hub/", base_url="/hub/", api_url="http://hub:8081/hub/api"
    )
    owner = SimpleNamespace(
        name=user, id=7, url=f"/user/{user}/", groups=[SimpleNamespace(name="gpu-large")]
    )
    record = orm.Spawner(name=session)
    spawner = BerthKubeSpawner(user=owner, hub=hub, orm_spawner=record, config=cfg)
    spawner.server = Server(
        orm_server=orm.Server(
            proto="http", ip="", port=8888, cookie_name="c", base_url=f"/user/{user}/{session}/"
        )
    )
    spawner.api_token = "session-token"
    return spawner


async def render(spawner: BerthKubeSpawner, options: dict[str, Any]) -> dict[str, Any]:
    spawner.user_options = options
    await spawner.load_user_options()
    pod = await spawner.get_pod_manifest()
    result: dict[str, Any] = serialize(pod)
    return result


def serialize(obj: Any) -> Any:
    """A kubernetes_asyncio model as the JSON the client sends (no connection is opened)."""
    return ApiClient.sanitize_for_serialization(_SERIALIZER, obj)


class _Serializer:
    sanitize_for_serialization = ApiClient.sanitize_for_serialization
    PRIMITIVE_TYPES = ApiClient.PRIMITIVE_TYPES


_SERIALIZER = _Serializer()


def validate(manifest: dict[str, Any]) -> None:
    # KubeSpawner leaves apiVersion out of services and claims; the API server takes it from the
    # URL (/api/v1/...), so add it as the server would before checking.
    kubernetes_validate.validate({"apiVersion": "v1", **manifest}, KUBERNETES_VERSION, strict=True)


def combinations(catalog: Catalog) -> list[tuple[str, str]]:
    return [(s.name, p) for s in catalog.services.values() for p in s.profiles]


@pytest.mark.parametrize("volume", [False, True], ids=["no-volume", "home-volume"])
async def test_every_manifest_of_the_example_catalog_is_valid(
    catalog: Catalog, volume: bool
) -> None:
    config = Config()
    if volume:
        config.BerthKubeSpawner.home_volume_size = "10Gi"
        config.BerthKubeSpawner.home_volume_class = "standard"
    checked = 0
    for user, session in [("alice", "s1"), ("Bob.Smith@Example.org", "my-session-2")]:
        for service, profile in combinations(catalog):
            spawner = make_spawner(
                user, session, config.copy() if hasattr(config, "copy") else config
            )
            options = {"service": service, "profile": profile, "inputs": INPUTS.get(service, {})}
            pod = await render(spawner, options)
            validate(pod)
            owner = make_owner_reference(spawner.pod_name, "0c4b5c1e-1111-4c1a-9a3f-5b1b2c3d4e5f")
            service_manifest = spawner.get_service_manifest(owner, 8888)
            validate(serialize(service_manifest))
            if volume:
                validate(serialize(spawner.get_pvc_manifest()))
            checked += 1
    assert checked == 2 * len(combinations(catalog))
    assert {s for s, _ in combinations(catalog)} == set(catalog.services)


async def test_the_validator_does_catch_a_broken_manifest() -> None:
    pod = await render(make_spawner("alice", "s1"), {"service": "jupyter"})
    pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] = {"many": True}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pod)
    pod = await render(make_spawner("alice", "s1"), {"service": "jupyter"})
    pod["spec"]["containers"][0]["gpus"] = 1  # strict: unknown fields are errors
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pod)


async def test_vllm_on_one_gpu_is_this_pod(catalog: Catalog) -> None:
    spawner = make_spawner("alice", "llm")
    pod = await render(
        spawner,
        {"service": "vllm", "profile": "gpu-1", "hours": 2, "inputs": {"model": "org/model"}},
    )
    container = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container.pop("env")}
    name = spawner.pod_name
    assert name == "berth-alice-llm-" + _digest("alice", "llm")
    assert pod["metadata"]["name"] == name
    assert pod["metadata"]["labels"] == {
        "app.kubernetes.io/component": "singleuser-server",
        "app.kubernetes.io/managed-by": "kubespawner",
        "app.kubernetes.io/name": "jupyterhub",
        "app": "jupyterhub",
        "berth.jupyter.org/profile": "gpu-1",
        "berth.jupyter.org/service": "vllm",
        "berth.jupyter.org/session": "llm-" + _digest("llm"),
        "berth.jupyter.org/user": "alice-" + _digest("alice"),
        "component": "singleuser-server",
        "heritage": "jupyterhub",
        "hub.jupyter.org/servername": "llm",
        "hub.jupyter.org/username": "alice",
    }
    annotations = pod["metadata"]["annotations"]
    assert {k: v for k, v in annotations.items() if k.startswith("berth.")} == {
        "berth.jupyter.org/user": "alice",
        "berth.jupyter.org/session": "llm",
        "berth.jupyter.org/service": "vllm",
        "berth.jupyter.org/profile": "gpu-1",
        "berth.jupyter.org/time-limit-seconds": "7200",
        "berth.jupyter.org/hard-limit-seconds": "21600",
    }
    assert container == {
        "name": "notebook",
        "image": "vllm/vllm-openai:v0.6.3",
        # KubeSpawner passes the command as args, keeping the image's entrypoint (tini)
        "args": [
            "berth-gate", "--ready-path", "/health", "--ready-timeout", "1200", "--prefix", "strip",
            "--transport", "tcp", "--", "vllm", "serve", "org/model", "--host=127.0.0.1",
            "--port={port}", "--root-path={base_url}", "--tensor-parallel-size=1",
            "--max-model-len=8192",
        ],
        "lifecycle": {},
        "ports": [{"containerPort": 8888, "name": "notebook-port"}],
        "resources": {
            "limits": {"cpu": 8.0, "memory": 64 * 2**30, "nvidia.com/gpu": "1"},
            "requests": {"cpu": 8.0, "memory": 64 * 2**30},
        },
        "readinessProbe": {
            "httpGet": {
                "path": "/user/alice/llm/health",
                "port": "notebook-port",
                "httpHeaders": [{"name": "Accept", "value": "text/html"}],
            },
            "periodSeconds": 1,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "securityContext": {"allowPrivilegeEscalation": False},
        "volumeMounts": [],
    }  # fmt: skip
    assert {k: v for k, v in pod["spec"].items() if k != "containers"} == {
        "automountServiceAccountToken": False,
        "imagePullSecrets": [],
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        "restartPolicy": "OnFailure",
        "tolerations": [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}],
        "volumes": [],
    }
    assert env["HF_HUB_DISABLE_TELEMETRY"] == "1"
    assert env["BERTH_SERVICE"] == "vllm" and env["BERTH_PROFILE"] == "gpu-1"
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/user/alice/llm/"
    assert env["JUPYTERHUB_API_TOKEN"] == "session-token"


@pytest.mark.parametrize(
    "options, refused",
    [
        ({"service": "jupyter", "image": "evil/miner:latest"}, "unknown option 'image'"),
        ({"service": "jupyter", "image--unlisted-choice": "evil/x"}, "unknown option"),
        ({"profile": "cpu-small", "profile-option-cpu-small--service": "x"}, "unknown option"),
        ({"service": "jupyter", "cpu_limit": 64}, "unknown option 'cpu_limit'"),
        ({"service": "jupyter", "kubespawner_override": {"image": "x"}}, "unknown option"),
        ({"service": "jupyter", "profile": "gpu-9"}, "is not a profile jupyter runs on"),
        ({"service": "files", "profile": "gpu-1"}, "is not a profile files runs on"),
        (
            {"service": "vllm", "profile": "gpu-1", "inputs": {"model": "x; rm -rf /"}},
            "input 'model'",
        ),
        ({"service": "jupyter", "inputs": {"image": "evil/x"}}, "has no input 'image'"),
    ],
)
async def test_users_cannot_choose_images_or_resources(
    options: dict[str, Any], refused: str
) -> None:
    spawner = make_spawner("mallory", "s")
    spawner.user_options = options
    with pytest.raises(OptionsError, match=refused) as error:
        await spawner.load_user_options()
    assert error.value.status_code == 400
    # nothing of it reached the pod settings
    assert spawner.image != "evil/miner:latest" and not spawner.extra_resource_limits


async def test_kubespawner_profile_logic_is_not_reachable(catalog: Catalog) -> None:
    """What a user picks changes nothing beyond what the catalog's profile says."""
    spawner = make_spawner("mallory", "s")
    spawner.user_options = {"service": "jupyter", "profile": "cpu-small"}
    await spawner.load_user_options()
    assert spawner.image == "quay.io/jupyter/scipy-notebook:2024-10-07"
    assert spawner.cpu_limit == 2.0 and spawner.mem_limit == 4 * 2**30
    # profile_list shows admins the catalog and offers no free-form choice
    for entry in spawner.profile_list:
        for option in entry.get("profile_options", {}).values():
            assert option["unlisted_choice"] == {"enabled": False}
