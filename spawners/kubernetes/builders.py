"""Pure builders: a launch spec in, the KubeSpawner settings (``kubespawner_override``) out.

KubeSpawner renders the pod from its traits, and z2jh admins set pods up through those traits
(``kubespawner_override`` in ``profile_list``). So Berth speaks the same language: each builder
returns a plain dict of KubeSpawner trait names to values, which the spawner applies in order —
profile, then service type, then session — and which ``profile_list`` shows to admins. No I/O,
no spawner: tests compare them to literal dicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from berth.hub_config.catalog import Profile, ServiceType

from ..spec import LABEL_PREFIX, LaunchSpec
from .names import KubeNames

__all__ = [
    "CONTAINER_PORT_NAME",
    "UserVolume",
    "image_for",
    "profile_override",
    "readiness_probe",
    "service_override",
    "session_override",
]

#: KubeSpawner names the single-user container's port so; probes refer to it by name.
CONTAINER_PORT_NAME = "notebook-port"


@dataclass(frozen=True)
class UserVolume:
    """A per-user PersistentVolumeClaim mounted into every session of that user."""

    size: str
    mount_path: str
    storage_class: str = ""
    access_modes: tuple[str, ...] = ("ReadWriteOnce",)


def profile_override(profile: Profile) -> dict[str, Any]:
    """Resources and placement of a profile: requests equal limits (a reservation)."""
    kube = profile.kubernetes
    override: dict[str, Any] = {
        "cpu_limit": float(profile.cpus),
        "cpu_guarantee": float(profile.cpus),
        "mem_limit": profile.memory,
        "mem_guarantee": profile.memory,
    }
    if profile.gpus:
        # Extended resources are requested through limits; Kubernetes sets requests equal.
        override["extra_resource_limits"] = {kube.gpu_resource: str(profile.gpus)}
    if kube.node_selector:
        override["node_selector"] = dict(kube.node_selector)
    if kube.tolerations:
        override["tolerations"] = [dict(t) for t in kube.tolerations]
    if kube.affinity:
        override["extra_pod_config"] = {"affinity": dict(kube.affinity)}
    return override


def image_for(service: ServiceType, profile: Profile, default_image: str) -> str:
    """The profile's image wins (e.g. a CUDA build), then the service type's, then the default."""
    return profile.kubernetes.image or service.image or default_image


def service_override(service: ServiceType, profile: Profile, default_image: str) -> dict[str, Any]:
    return {"image": image_for(service, profile, default_image)}


def readiness_probe(spec: LaunchSpec, base_url: str, period_seconds: int = 1) -> dict[str, Any]:
    """Ready when the service answers on its own path at the session's URL.

    jupyterhub-singleuser answers ``{base_url}api`` without a login. berth-gate answers 503 until
    the service behind it answers its readiness path, then sends a browser (``Accept: text/html``)
    without a login to the hub's login: a redirect, which a kubelet counts as success.
    """
    base = base_url if base_url.endswith("/") else base_url + "/"
    if spec.kind == "jupyter":
        path, headers = base + "api", []
    else:
        path = base + spec.readiness_path.lstrip("/")
        headers = [{"name": "Accept", "value": "text/html"}]
    http_get: dict[str, Any] = {"path": path, "port": CONTAINER_PORT_NAME}
    if headers:
        http_get["httpHeaders"] = headers
    return {
        "httpGet": http_get,
        "periodSeconds": period_seconds,
        "timeoutSeconds": 5,
        "failureThreshold": 3,
    }


def session_override(
    spec: LaunchSpec,
    names: KubeNames,
    base_url: str,
    volume: UserVolume | None = None,
    probe_period: int = 1,
) -> dict[str, Any]:
    """The command, labels, annotations, probe and volume of one session."""
    labels = {
        LABEL_PREFIX + "user": names.user_label,
        LABEL_PREFIX + "session": names.session_label,
        LABEL_PREFIX + "service": spec.service.name,
        LABEL_PREFIX + "profile": spec.profile.name,
    }
    annotations = {
        LABEL_PREFIX + "user": spec.user,
        LABEL_PREFIX + "session": spec.session,
        LABEL_PREFIX + "service": spec.service.name,
        LABEL_PREFIX + "profile": spec.profile.name,
        LABEL_PREFIX + "time-limit-seconds": str(int(spec.time_limit.total_seconds())),
        LABEL_PREFIX + "hard-limit-seconds": str(int(spec.hard_limit.total_seconds())),
    }
    override: dict[str, Any] = {
        "cmd": list(spec.argv),
        "extra_labels": labels,
        "extra_annotations": annotations,
        "extra_container_config": {"readinessProbe": readiness_probe(spec, base_url, probe_period)},
    }
    if volume is not None:
        override.update(
            storage_pvc_ensure=True,
            pvc_name=names.pvc,
            storage_capacity=volume.size,
            storage_access_modes=list(volume.access_modes),
            volumes={"berth-home": {"name": "berth-home",
                                    "persistentVolumeClaim": {"claimName": names.pvc}}},
            volume_mounts={"berth-home": {"name": "berth-home", "mountPath": volume.mount_path}},
        )  # fmt: skip
        if volume.storage_class:
            override["storage_class"] = volume.storage_class
    return override
