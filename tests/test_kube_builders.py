"""Pure builders of the Kubernetes backend, against literal expected output."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from berth.hub_config.catalog import Catalog
from berth.hub_config.loader import load_catalog
from berth.spawners.kubernetes.builders import (
    UserVolume,
    profile_override,
    readiness_probe,
    service_override,
    session_override,
)
from berth.spawners.kubernetes.events import describe_event
from berth.spawners.kubernetes.names import dns_label, kube_names, label_value
from berth.spawners.kubernetes.profile_list import catalog_profile_list
from berth.spawners.options import validate_user_options
from berth.spawners.spec import LaunchSpec, build_launch_spec

JUPYTER_IMAGE = "quay.io/jupyter/scipy-notebook:2024-10-07"
CODE_SERVER_IMAGE = "codercom/code-server:4.93.1"
EXAMPLE = Path(__file__).parents[1] / "hub_config" / "examples" / "berth.yaml"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(EXAMPLE)


def spec_for(
    catalog: Catalog, options: dict[str, object], user: str = "alice", session: str = "s1"
) -> LaunchSpec:
    selection = validate_user_options(catalog, options, ["gpu-large"])
    return build_launch_spec(selection, user, session)


# ---- names -------------------------------------------------------------------------------------


def test_names_are_readable_and_literal() -> None:
    names = kube_names("alice", "llm")
    assert names.pod == "berth-alice-llm-" + names.pod.rsplit("-", 1)[1]
    assert names.pvc.startswith("berth-home-alice-")
    assert names.user_label.startswith("alice-")
    # deterministic: a restarted hub computes the same names
    assert kube_names("alice", "llm") == names


@pytest.mark.parametrize(
    "a, b",
    [
        (("Alice", "x"), ("alice", "x")),
        (("a.b", "x"), ("a-b", "x")),
        (("a_b", "x"), ("a-b", "x")),
        (("bob@example.org", "x"), ("bob-example-org", "x")),
        (("a", "b-c"), ("a-b", "c")),
        (("x", "Lab"), ("x", "lab")),
        (("x", ""), ("x", "default")),
        (("名前", "s"), ("名字", "s")),
    ],
)
def test_names_that_read_alike_never_share_objects(a: tuple[str, str], b: tuple[str, str]) -> None:
    first, second = kube_names(*a), kube_names(*b)
    assert first.pod != second.pod
    if a[0] != b[0]:
        assert first.pvc != second.pvc
        assert first.user_label != second.user_label


@pytest.mark.parametrize(
    "user, session",
    [
        ("alice", ""),
        ("ALICE.Smith+test@Example.ORG", "My_Session.v2"),
        ("x" * 200, "y" * 63),
        ("-_-", "..."),
        ("名前", "セッション"),
        ("a" * 60 + ".", "0"),
    ],
)
def test_names_are_valid_kubernetes_names(user: str, session: str) -> None:
    names = kube_names(user, session)
    for name in (names.pod, names.pvc):
        assert DNS_1035.match(name) and len(name) <= 63, name
    for value in (names.user_label, names.session_label):
        assert LABEL_VALUE.match(value) and len(value) <= 63, value


def test_many_similar_names_stay_distinct() -> None:
    users = [
        f"{p}{s}" for p in ("user", "User", "USER", "us.er", "us_er", "us-er") for s in range(300)
    ]
    pods = {kube_names(u, "s").pod for u in users}
    assert len(pods) == len(users)
    assert len({dns_label("p", u) for u in users}) == len(users)
    assert label_value("Alice") != label_value("alice")


# ---- builders ----------------------------------------------------------------------------------


def test_profile_override_for_a_gpu_profile(catalog: Catalog) -> None:
    assert profile_override(catalog.profiles["gpu-1"]) == {
        "cpu_limit": 8.0,
        "cpu_guarantee": 8.0,
        "mem_limit": 64 * 2**30,
        "mem_guarantee": 64 * 2**30,
        "extra_resource_limits": {"nvidia.com/gpu": "1"},
        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }


def test_profile_override_for_a_cpu_profile_asks_for_no_gpu(catalog: Catalog) -> None:
    assert profile_override(catalog.profiles["cpu-small"]) == {
        "cpu_limit": 2.0,
        "cpu_guarantee": 2.0,
        "mem_limit": 4 * 2**30,
        "mem_guarantee": 4 * 2**30,
    }


def test_other_vendors_resource_names_and_affinity() -> None:
    text = EXAMPLE.read_text().replace(
        "      node_selector:\n        nvidia.com/gpu.product: NVIDIA-A100-SXM4-80GB\n",
        "      gpu_resource: amd.com/gpu\n      image: rocm/vllm:latest\n      affinity:\n"
        "        nodeAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n"
        "            nodeSelectorTerms:\n            - matchExpressions:\n"
        "              - {key: amd.com/gpu.family, operator: In, values: [MI300]}\n",
        1,
    )
    from berth.hub_config.loader import parse_catalog

    amd = parse_catalog(text).profiles["gpu-1"]
    override = profile_override(amd)
    assert override["extra_resource_limits"] == {"amd.com/gpu": "1"}
    assert "node_selector" not in override
    assert override["extra_pod_config"] == {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "amd.com/gpu.family", "operator": "In", "values": ["MI300"]}
                            ]
                        }
                    ]
                }
            }
        }
    }
    catalog = parse_catalog(text)
    # the profile's image overrides the service type's
    assert service_override(catalog.services["vllm"], amd, "default:1") == {
        "image": "rocm/vllm:latest"
    }
    assert service_override(catalog.services["vllm"], catalog.profiles["gpu-4"], "d:1") == {
        "image": "vllm/vllm-openai:v0.6.3"
    }


def test_session_override_for_a_gated_service(catalog: Catalog) -> None:
    spec = spec_for(
        catalog, {"service": "vllm", "profile": "gpu-1", "hours": 3, "inputs": {"model": "org/m"}}
    )
    names = kube_names("alice", "s1")
    override = session_override(spec, names, "/user/alice/s1/")
    assert override == {
        "cmd": [
            "berth-gate", "--ready-path", "/health", "--ready-timeout", "1200", "--prefix",
            "strip", "--transport", "tcp", "--", "vllm", "serve", "org/m", "--host=127.0.0.1",
            "--port={port}", "--root-path={base_url}", "--tensor-parallel-size=1",
            "--max-model-len=8192",
        ],
        "extra_labels": {
            "berth.jupyter.org/user": names.user_label,
            "berth.jupyter.org/session": names.session_label,
            "berth.jupyter.org/service": "vllm",
            "berth.jupyter.org/profile": "gpu-1",
        },
        "extra_annotations": {
            "berth.jupyter.org/user": "alice",
            "berth.jupyter.org/session": "s1",
            "berth.jupyter.org/service": "vllm",
            "berth.jupyter.org/profile": "gpu-1",
            "berth.jupyter.org/time-limit-seconds": "10800",
            "berth.jupyter.org/hard-limit-seconds": "25200",
        },
        "extra_container_config": {
            "readinessProbe": {
                "httpGet": {
                    "path": "/user/alice/s1/health",
                    "port": "notebook-port",
                    "httpHeaders": [{"name": "Accept", "value": "text/html"}],
                },
                "periodSeconds": 1,
                "timeoutSeconds": 5,
                "failureThreshold": 3,
            }
        },
    }  # fmt: skip


def test_session_override_for_jupyter_with_a_home_volume(catalog: Catalog) -> None:
    spec = spec_for(
        catalog, {"service": "jupyter", "profile": "cpu-small"}, user="Bob.S", session=""
    )
    names = kube_names("Bob.S", "")
    volume = UserVolume("10Gi", "/home/jovyan", "fast")
    override = session_override(spec, names, "/user/Bob.S/", volume, probe_period=2)
    assert override["cmd"] == ["jupyterhub-singleuser"]
    assert override["extra_container_config"]["readinessProbe"]["httpGet"] == {
        "path": "/user/Bob.S/api",
        "port": "notebook-port",
    }
    assert override["extra_container_config"]["readinessProbe"]["periodSeconds"] == 2
    assert {
        k: v
        for k, v in override.items()
        if k not in ("cmd", "extra_labels", "extra_annotations", "extra_container_config")
    } == {
        "storage_pvc_ensure": True,
        "pvc_name": names.pvc,
        "storage_capacity": "10Gi",
        "storage_access_modes": ["ReadWriteOnce"],
        "storage_class": "fast",
        "volumes": {
            "berth-home": {"name": "berth-home", "persistentVolumeClaim": {"claimName": names.pvc}}
        },
        "volume_mounts": {"berth-home": {"name": "berth-home", "mountPath": "/home/jovyan"}},
    }
    assert override["extra_annotations"]["berth.jupyter.org/user"] == "Bob.S"
    assert override["extra_labels"]["berth.jupyter.org/user"] == names.user_label


def test_readiness_probe_keeps_the_prefix_of_a_keep_service(catalog: Catalog) -> None:
    spec = spec_for(catalog, {"service": "terminal", "profile": "cpu-small"})
    assert readiness_probe(spec, "/user/alice/s1")["httpGet"]["path"] == "/user/alice/s1/"


# ---- profile_list ------------------------------------------------------------------------------


def test_profile_list_entries_a_z2jh_admin_recognises(catalog: Catalog) -> None:
    entries = catalog_profile_list(catalog, "default/image:1")
    assert [e["slug"] for e in entries] == ["cpu-small", "cpu-large", "gpu-1", "gpu-4"]
    assert entries[0]["default"] is True
    gpu1 = entries[2]
    assert gpu1 == {
        "display_name": "1 GPU",
        "description": "1 x A100, 8 CPUs, 64 GiB.",
        "slug": "gpu-1",
        "kubespawner_override": profile_override(catalog.profiles["gpu-1"]),
        "profile_options": {
            "service": {
                "display_name": "Service",
                "choices": {
                    "jupyter": {"display_name": "JupyterLab",
                                "kubespawner_override": {"image": JUPYTER_IMAGE}},
                    "code-server": {"display_name": "VS Code",
                                    "kubespawner_override": {"image": CODE_SERVER_IMAGE}},
                    "vllm": {"display_name": "vLLM inference server",
                             "kubespawner_override": {"image": "vllm/vllm-openai:v0.6.3"}},
                    "ollama": {"display_name": "Ollama",
                               "kubespawner_override": {"image": "ollama/ollama:0.3.14"}},
                    "terminal": {"display_name": "Terminal",
                                 "kubespawner_override": {"image": "tsl0922/ttyd:1.7.7"}},
                },
                "unlisted_choice": {"enabled": False},
            }
        },
    }  # fmt: skip


# ---- events ------------------------------------------------------------------------------------


def test_gpu_shortage_reads_as_a_sentence(catalog: Catalog) -> None:
    spec = spec_for(catalog, {"service": "vllm", "profile": "gpu-1", "inputs": {"model": "o/m"}})
    event = {
        "reason": "FailedScheduling",
        "type": "Warning",
        "message": "0/3 nodes are available: 1 node(s) had untolerated taint {node-role: x},"
        " 2 Insufficient nvidia.com/gpu. preemption: 0/3 nodes are available: 3 Preemption is"
        " not helpful for scheduling.",
    }
    sentence = describe_event(event, spec)
    assert sentence == (
        "Waiting for 1 free a100 GPU: every node that fits profile '1 GPU' has its GPUs in use."
        " The session is queued and starts when they are free; stop it to give up."
    )
    assert "Insufficient" not in sentence


def test_other_scheduling_and_start_events(catalog: Catalog) -> None:
    spec = spec_for(catalog, {"service": "jupyter", "profile": "cpu-large"})
    cpu = {
        "reason": "FailedScheduling",
        "message": "0/2 nodes are available: 2 Insufficient cpu, 2 Insufficient memory.",
    }
    assert describe_event(cpu, spec).startswith(
        "Waiting for 8 CPUs and 32 GiB of memory: no node has"
    )
    nomatch = {
        "reason": "FailedScheduling",
        "message": "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector.",
    }
    assert describe_event(nomatch, spec).startswith(
        "No node in the cluster matches profile 'Large CPU'"
    )
    scheduled = {"reason": "Scheduled", "message": "Successfully assigned default/p to node-7"}
    assert describe_event(scheduled, spec) == "Placed on node node-7."
    assert describe_event({"reason": "Started", "message": "Started container notebook"}, spec) == (
        "JupyterLab is starting; waiting for it to answer."
    )
