"""``berth-kubernetes``: catalog sessions as pods, through KubeSpawner.

Everything an admin knows from KubeSpawner and z2jh (``c.KubeSpawner.*``, ``singleuser.*`` values)
still applies; Berth sets, per session, what the catalog decides — resources, GPUs, placement,
image, command, labels, readiness probe, the per-user volume — from the launch spec, through the
pure builders in :mod:`.builders`. Users never reach KubeSpawner's own option handling: the only
``user_options`` are Berth's (``service``, ``profile``, ``hours``, ``inputs``), checked by the
shared allow-list before anything is sent to the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from jupyterhub.utils import exponential_backoff
from kubernetes_asyncio.client.rest import ApiException
from kubespawner import KubeSpawner
from kubespawner.objects import make_owner_reference
from traitlets import Bool, Int, Unicode, default

from ..base import BerthSpawner
from ..spec import LaunchSpec
from .builders import UserVolume, profile_override, service_override, session_override
from .events import describe_event
from .names import kube_names
from .profile_list import catalog_profile_list

__all__ = ["BerthKubeSpawner"]


class BerthKubeSpawner(BerthSpawner, KubeSpawner):
    """Run catalog sessions as Kubernetes pods (configure as ``c.BerthKubeSpawner``)."""

    default_image = Unicode(
        "quay.io/jupyter/base-notebook:2024-10-07",
        help="""
        Image for service types that name none in the catalog (a profile's `kubernetes.image`
        or the service type's `image` win). It must contain the service's command, and
        berth-gate (pip install jupyterhub-berth) for gated services.
        """,
    ).tag(config=True)

    home_volume_size = Unicode(
        "",
        help="""
        Size of a per-user PersistentVolumeClaim (e.g. "10Gi") mounted into every session of
        that user at `home_volume_path`. Empty (the default) means no per-user volume.
        The claim is named from the user (see berth.spawners.kubernetes.names) and outlives
        sessions; it is deleted with the user only if `delete_pvc` is True.
        """,
    ).tag(config=True)

    home_volume_path = Unicode(
        "/home/jovyan",
        help="Where the per-user volume is mounted in the container (see `home_volume_size`).",
    ).tag(config=True)

    home_volume_class = Unicode(
        "",
        help="StorageClass of the per-user volume; empty means the cluster's default class.",
    ).tag(config=True)

    readiness_period = Int(
        1,
        min=1,
        help="""
        Seconds between readiness probes of a starting session (the pod's readinessProbe
        periodSeconds). A pod is ready, and the hub proceeds, only once the service answers.
        """,
    ).tag(config=True)

    session_service = Bool(
        True,
        help="""
        Give each session pod a Service of the same name, owned by the pod (Kubernetes deletes
        it with the pod): a stable in-cluster name (<pod>.<namespace>.svc) for the session,
        e.g. for another pod to call a vLLM endpoint. It is made in the background once the
        pod is ready, so it adds no wait to the spawn; the hub itself still connects to the
        pod's IP, as z2jh does (KubeSpawner's `services_enabled`, which routes the hub through
        the Service, stays off).
        """,
    ).tag(config=True)

    @default("start_timeout")
    def _default_start_timeout(self) -> int:
        # A session is a reservation: a GPU pod may queue a while before a GPU frees up.
        return 60 * 30

    @default("profile_list")
    def _default_profile_list(self) -> list[dict[str, Any]]:
        return catalog_profile_list(self.berth_catalog, self.default_image)

    _service_task: asyncio.Task[None] | None = None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._set_names()

    def _set_names(self) -> None:
        names = kube_names(self.user.name, self.name)
        self.pod_name = names.pod
        self.dns_name = self.dns_name_template.format(namespace=self.namespace, name=names.pod)
        self.secret_name = names.pod
        if not self.remember_pvc_name or not self._pvc_exists:
            self.pvc_name = names.pvc

    def clear_state(self) -> None:
        super().clear_state()
        self._set_names()

    def is_pod_running(self, pod: dict[str, Any] | None) -> bool:
        """Started: scheduled, given an IP, every container running, not being deleted.

        KubeSpawner also waits for the containers' readiness, polling with a backoff that
        doubles up to 5 s, so a pod that turns Ready a probe period later is noticed seconds
        later. Whether the service answers is what the hub checks next anyway — over HTTP,
        for as long as the service type's ready_timeout — the same thing the readiness probe
        checks, so the probe stays (for the session's Service and for kubectl) and the spawn
        does not wait for it twice.
        """
        if pod is None or "deletionTimestamp" in pod["metadata"]:
            return False
        status = pod.get("status") or {}
        containers = status.get("containerStatuses") or []
        return (
            status.get("phase") == "Running"
            and status.get("podIP") is not None
            and bool(containers)
            and all("running" in (c.get("state") or {}) for c in containers)
        )

    def get_args(self) -> list[str]:
        # berth-gate takes the service's command after "--"; nothing may be appended to it.
        if self.launch_spec is not None and self.launch_spec.kind == "gated":
            return []
        args: list[str] = super().get_args()
        return args

    @property
    def _home_volume(self) -> UserVolume | None:
        if not self.home_volume_size:
            return None
        return UserVolume(self.home_volume_size, self.home_volume_path, self.home_volume_class)

    async def load_user_options(self) -> None:
        """Apply the catalog's choice. Replaces KubeSpawner's profile_list/profile_options
        handling entirely, so no user option can set an image, resources or any trait."""
        spec = self.launch_spec or self.prepare_launch()
        base_url = self.server.base_url if self.server is not None else "/"
        names = kube_names(self.user.name, self.name)
        for override in (
            profile_override(spec.profile),
            service_override(spec.service, spec.profile, self.default_image),
            session_override(spec, names, base_url, self._home_volume, self.readiness_period),
        ):
            self._apply(override)

    def _apply(self, override: dict[str, Any]) -> None:
        """KubeSpawner's override semantics (dicts merge), except that volumes and mounts are
        added to an admin's list of them rather than replacing it."""
        rest = dict(override)
        for name in ("volumes", "volume_mounts"):
            ours = rest.pop(name, None)
            if ours is None:
                continue
            current = getattr(self, name)
            if isinstance(current, dict):
                setattr(self, name, {**current, **ours})
            else:
                setattr(self, name, [*current, *ours.values()])
        self._apply_overrides(rest)

    async def _start(self) -> str:
        url: str = await super()._start()
        if self.session_service and not self.services_enabled:
            # Off the spawn path: the hub reaches the pod by IP; the Service is for others.
            self._service_task = asyncio.create_task(self._make_session_service_logged())
        return url

    async def _make_session_service_logged(self) -> None:
        try:
            await self._make_session_service()
        except Exception:
            self.log.exception("Could not make the Service of %s", self._log_name)

    async def stop(self, now: bool = False) -> None:
        task, self._service_task = self._service_task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await super().stop(now=now)

    async def _make_session_service(self) -> None:
        """The pod's Service, owned by the pod. Usually one request; a stale one of the same
        name (left by an earlier pod of this session) is replaced."""
        owner = make_owner_reference(self.pod_name, self.pod_id)
        manifest = self.get_service_manifest(owner, self.port)
        name = manifest.metadata.name

        async def create() -> str | None:
            try:
                await asyncio.wait_for(
                    self.api.create_namespaced_service(self.namespace, manifest),
                    self.k8s_api_request_timeout,
                )
            except TimeoutError:
                return None  # try again
            except ApiException as e:
                if e.status == 409:
                    return "exists"
                raise
            return "created"

        outcome = await exponential_backoff(
            create, f"Could not create service {name}", timeout=self.k8s_api_request_retry_timeout
        )
        if outcome == "created":
            return
        await exponential_backoff(
            partial(self._ensure_not_exists, "service", name),
            f"Could not remove the stale service {name}",
            timeout=self.k8s_api_request_retry_timeout,
        )
        await exponential_backoff(
            partial(self._make_create_resource_request, "service", manifest),
            f"Could not create service {name}",
            timeout=self.k8s_api_request_retry_timeout,
        )

    async def session_logs(self, lines: int) -> list[str] | None:
        """The pod's own output (its container's log), last ``lines`` lines; None if no pod."""
        try:
            text = await self.api.read_namespaced_pod_log(
                self.pod_name,
                self.namespace,
                container="notebook",
                tail_lines=lines,
                _request_timeout=self.k8s_api_request_timeout,
            )
        except ApiException as e:
            if e.status in (400, 404):  # no such pod, or its container has not started
                return None
            raise
        return str(text).splitlines()[-lines:]

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        """KubeSpawner's progress, with each Kubernetes event put in words (raw event kept)."""
        spec: LaunchSpec | None = self.launch_spec
        async for item in super().progress():
            event = item.get("raw_event")
            if event is not None and spec is not None:
                item = {**item, "message": describe_event(event, spec)}
            yield item
