"""A test scheduler and kubelet: what turns a created pod into a running, ready process.

The scheduler places pods on fake nodes the way kube-scheduler filters them: node selector and
required node affinity, taints and tolerations, and requested cpu, memory and extended resources
(``nvidia.com/gpu``) against what the node has left. A pod that fits nowhere gets the scheduler's
own ``FailedScheduling`` event ("0/2 nodes are available: 1 Insufficient nvidia.com/gpu, ...") and
is retried whenever a pod goes away.

The kubelet pulls nothing (the image is assumed present), runs the container's command and args as
a local process with the pod's environment, and reports the pod Running with its own loopback
address (127.X.Y.Z) as podIP: every pod gets a distinct address, as a pod network namespace would,
and the wildcard ``0.0.0.0`` in its environment and arguments is read as that address. It probes
the readiness probe's httpGet until it answers (200-399), then marks the container and pod Ready;
on deletion it sends SIGTERM, waits the grace period, kills the process group and removes the pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from .store import ApiError, Change, Obj, Store, now

__all__ = ["Kubelet", "Node", "default_nodes", "parse_quantity"]

_UNITS = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
    "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "m": 0.001,
}  # fmt: skip


def parse_quantity(text: str | int | float) -> float:
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(text))
    if not match:
        raise ValueError(f"bad quantity {text!r}")
    return float(match[1]) * _UNITS.get(match[2], 1)


@dataclass
class Node:
    name: str
    capacity: dict[str, float]
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)


def default_nodes(gpus: int = 1) -> list[Node]:
    """One CPU node and one tainted GPU node with ``gpus`` A100s."""
    return [
        Node(
            "cpu-node-1",
            {"cpu": 4096, "memory": 16 * 2**40, "pods": 5000},
            {"kubernetes.io/hostname": "cpu-node-1"},
        ),
        Node(
            "gpu-node-1",
            {"cpu": 64, "memory": 1 * 2**40, "pods": 110, "nvidia.com/gpu": gpus},
            {
                "kubernetes.io/hostname": "gpu-node-1",
                "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
            },
            [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
        ),
    ]


def _requests(pod: Obj) -> dict[str, float]:
    total: dict[str, float] = {"pods": 1}
    for container in pod["spec"].get("containers", []):
        resources = container.get("resources") or {}
        wanted = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        for name, quantity in wanted.items():
            total[name] = total.get(name, 0) + parse_quantity(quantity)
    return total


def _tolerates(tolerations: list[Obj], taint: dict[str, str]) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint["effect"]:
            continue
        if t.get("operator") == "Exists" and (not t.get("key") or t["key"] == taint["key"]):
            return True
        if t.get("key") == taint["key"] and t.get("value", "") == taint.get("value", ""):
            return True
    return False


def _term_matches(term: Obj, labels: dict[str, str]) -> bool:
    for expr in term.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }.get(op, False)
        if not ok:
            return False
    return True


async def _answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")  # fmt: skip
        await writer.drain()
    writer.close()


@dataclass
class _Running:
    server: asyncio.Server | None = None
    process: asyncio.subprocess.Process | None = None
    workdir: Path | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class Kubelet:
    def __init__(
        self,
        store: Store,
        nodes: list[Node],
        start_delay: float = 0.0,
        builtin_http: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        #: Containers whose command is one of these are served by the kubelet itself: an HTTP
        #: server on the pod's address that answers 200 to everything. For benchmarks with
        #: hundreds of pods, where a process per pod would measure the machine, not the hub.
        self.builtin_http = builtin_http
        self.nodes = nodes
        self.start_delay = start_delay
        self.running: dict[tuple[str, str], _Running] = {}
        #: per pod (namespace, name): wall-clock times it was created, reported Running and
        #: reported Ready, and its user annotation — what benchmarks subtract as the kubelet's delay
        self.timings: dict[tuple[str, str], dict[str, Any]] = {}
        self.announced: dict[tuple[str, str], str] = {}
        self.root = Path(tempfile.mkdtemp(prefix="kubestandin-"))
        self.root.chmod(0o755)
        self._octet = random.randint(100, 250)
        self._next_ip = 1
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._scheduler: asyncio.Task[None] | None = None
        store.listeners.append(self._on_change)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        self._scheduler = asyncio.create_task(self._schedule_forever())

    async def shutdown(self) -> None:
        if self._scheduler:
            self._scheduler.cancel()
        for key in list(self.running):
            await self._kill(key, grace=0)
        if self._session:
            await self._session.close()

    def _on_change(self, change: Change) -> None:
        if change.kind != "pods":
            return
        meta = change.obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if change.type == "DELETED":
            self.announced.pop(key, None)
            if key in self.running:
                asyncio.get_running_loop().create_task(self._kill(key, grace=0))
            self._wake.set()
        elif change.type == "ADDED":
            self.timings[key] = {
                "user": (meta.get("annotations") or {}).get("hub.jupyter.org/username"),
                "created": time.time(),
            }
            self._wake.set()

    # ---- events ----------------------------------------------------------------------------

    def event(self, pod: Obj, kind: str, reason: str, message: str, source: str) -> None:
        meta = pod["metadata"]
        stamp = now()
        with contextlib.suppress(ApiError):
            self.store.create(
                "events",
                meta["namespace"],
                {
                    "metadata": {"name": f"{meta['name']}.{time.time_ns():x}"},
                    "involvedObject": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": meta["name"],
                        "namespace": meta["namespace"],
                        "uid": meta["uid"],
                    },
                    "reason": reason,
                    "message": message,
                    "type": kind,
                    "count": 1,
                    "firstTimestamp": stamp,
                    "lastTimestamp": stamp,
                    "source": {"component": source},
                    "reportingComponent": source,
                    "reportingInstance": "",
                },
            )

    def _patch_status(self, pod: Obj, status: Obj) -> Obj | None:
        meta = pod["metadata"]
        timing = self.timings.get((meta["namespace"], meta["name"]))
        if timing is not None and status.get("phase") == "Running":
            timing.setdefault("running", time.time())
            ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]
            if ready and ready[0]["status"] == "True":
                timing.setdefault("ready", time.time())
        try:
            current = self.store.get("pods", meta["namespace"], meta["name"])
            if current["metadata"]["uid"] != meta["uid"]:
                return None
            return self.store.patch("pods", meta["namespace"], meta["name"], "", {"status": status})
        except ApiError:
            return None

    # ---- scheduling ------------------------------------------------------------------------

    def _used(self, node: Node) -> dict[str, float]:
        used: dict[str, float] = {}
        for pod in self.store.list("pods", None, lambda p: True):
            if pod["spec"].get("nodeName") == node.name and pod["status"].get("phase") in (
                "Pending", "Running",
            ):  # fmt: skip
                for name, amount in _requests(pod).items():
                    used[name] = used.get(name, 0) + amount
        return used

    def _why_not(self, pod: Obj, node: Node) -> list[str]:
        spec = pod["spec"]
        selector = spec.get("nodeSelector") or {}
        terms = (
            ((spec.get("affinity") or {}).get("nodeAffinity") or {})
            .get("requiredDuringSchedulingIgnoredDuringExecution", {})
            .get("nodeSelectorTerms", [])
        )
        if any(node.labels.get(k) != v for k, v in selector.items()) or (
            terms and not any(_term_matches(t, node.labels) for t in terms)
        ):
            return ["node(s) didn't match Pod's node affinity/selector"]
        for taint in node.taints:
            if taint["effect"] in ("NoSchedule", "NoExecute") and not _tolerates(
                spec.get("tolerations") or [], taint
            ):
                return [
                    f"node(s) had untolerated taint {{{taint['key']}: {taint.get('value', '')}}}"
                ]
        used = self._used(node)
        return [
            f"Insufficient {name}" if name != "pods" else "Too many pods"
            for name, amount in sorted(_requests(pod).items())
            if used.get(name, 0) + amount > node.capacity.get(name, 0)
        ]

    async def _schedule_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending = [
                pod
                for pod in self.store.list("pods", None, lambda p: True)
                if not pod["spec"].get("nodeName") and "deletionTimestamp" not in pod["metadata"]
            ]
            pending.sort(key=lambda p: int(p["metadata"]["resourceVersion"]))
            for pod in pending:
                self._try_schedule(pod)

    def _try_schedule(self, pod: Obj) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        reasons: dict[str, int] = {}
        for node in self.nodes:
            why = self._why_not(pod, node)
            if not why:
                bound = self.store.patch(
                    "pods", meta["namespace"], meta["name"], "", {"spec": {"nodeName": node.name}}
                )
                self._patch_status(
                    bound,
                    {"conditions": [{"type": "PodScheduled", "status": "True"}]},
                )
                self.event(
                    pod, "Normal", "Scheduled",
                    f"Successfully assigned {meta['namespace']}/{meta['name']} to {node.name}",
                    "default-scheduler",
                )  # fmt: skip
                self.running[key] = _Running()
                self.running[key].tasks.append(asyncio.create_task(self._run(bound, node)))
                return
            for reason in why:
                reasons[reason] = reasons.get(reason, 0) + 1
        total = len(self.nodes)
        summary = ", ".join(f"{n} {r}" for r, n in sorted(reasons.items()))
        message = (
            f"0/{total} nodes are available: {summary}. preemption: 0/{total} nodes are"
            f" available: {total} Preemption is not helpful for scheduling."
        )
        if self.announced.get(key) != message:
            self.announced[key] = message
            self._patch_status(
                pod,
                {
                    "conditions": [
                        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                         "message": message, "lastTransitionTime": now()}
                    ]
                },
            )  # fmt: skip
            self.event(pod, "Warning", "FailedScheduling", message, "default-scheduler")

    # ---- running ---------------------------------------------------------------------------

    def _pod_ip(self) -> str:
        n = self._next_ip
        self._next_ip += 1
        return f"127.{self._octet}.{n // 250 % 250}.{n % 250 + 1}"

    async def _run(self, pod: Obj, node: Node) -> None:
        meta = pod["metadata"]
        key = (meta["namespace"], meta["name"])
        container = pod["spec"]["containers"][0]
        name = container["name"]
        if self.start_delay:
            await asyncio.sleep(self.start_delay)
        ip = self._pod_ip()
        self.event(
            pod, "Normal", "Pulled",
            f'Container image "{container.get("image")}" already present on machine', "kubelet",
        )  # fmt: skip
        argv = [*container.get("command", []), *container.get("args", [])]
        if not argv:
            self.event(
                pod, "Warning", "Failed", "the stand-in cannot run an image's entrypoint", "kubelet"
            )
            return
        workdir = self.root / f"{meta['namespace']}-{meta['name']}-{meta['uid'][:8]}"
        workdir.mkdir(parents=True)
        # Containers run as their image's user, not root: runAsUser/runAsGroup, else 1000:100
        # (the jupyter images' jovyan). Only a root kubelet can switch users.
        context = {
            **(pod["spec"].get("securityContext") or {}),
            **(container.get("securityContext") or {}),
        }
        identity: dict[str, Any] = {}
        if os.geteuid() == 0:
            uid, gid = context.get("runAsUser", 1000), context.get("runAsGroup", 100)
            os.chown(workdir, uid, gid)
            identity = {"user": uid, "group": gid, "extra_groups": []}
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),
            "LANG": "C.UTF-8",
            "HOSTNAME": meta["name"],
        }
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = item["value"]
            elif field_path := (item.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath"):
                env[item["name"]] = {"status.podIP": ip, "metadata.name": meta["name"]}.get(
                    field_path, meta.get(field_path.split(".")[-1], "")
                )
        env = {k: v.replace("0.0.0.0", ip) for k, v in env.items()}
        argv = [arg.replace("0.0.0.0", ip) for arg in argv]
        self.event(pod, "Normal", "Created", f"Created container {name}", "kubelet")
        if argv[0] in self.builtin_http:
            port = next((p["containerPort"] for p in container.get("ports", [])), 8888)
            server = await asyncio.start_server(_answer_ok, ip, port)
            self.running.setdefault(key, _Running()).server = server
            self.event(pod, "Normal", "Started", f"Started container {name}", "kubelet")
            await self._report_running(pod, container, ip)
            return
        log = (workdir / "container.log").open("wb")
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, env=env, cwd=workdir, stdout=log, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True, **identity,
            )  # fmt: skip
        except OSError as e:
            log.close()
            self.event(
                pod, "Warning", "Failed", f"Error: failed to start container: {e}", "kubelet"
            )
            self._patch_status(pod, {"phase": "Failed"})
            return
        finally:
            log.close()
        running = self.running.setdefault(key, _Running())
        running.process, running.workdir = process, workdir
        self.event(pod, "Normal", "Started", f"Started container {name}", "kubelet")
        status = await self._report_running(pod, container, ip)
        started = status["startTime"]
        code = await process.wait()
        running.process = None
        if "deletionTimestamp" in self.store.objects.get(("pods", *key), {}).get("metadata", {}):
            return
        status["phase"] = "Succeeded" if code == 0 else "Failed"
        status["containerStatuses"][0].update(
            ready=False,
            state={"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                  "startedAt": started, "finishedAt": now()}},
        )  # fmt: skip
        self._patch_status(pod, status)
        self._wake.set()

    async def _report_running(self, pod: Obj, container: Obj, ip: str) -> Obj:
        meta = pod["metadata"]
        running = self.running.setdefault((meta["namespace"], meta["name"]), _Running())
        name = container["name"]
        probe = container.get("readinessProbe")
        started = now()
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": started,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": "False" if probe else "True"},
                {"type": "Ready", "status": "False" if probe else "True"},
            ],
            "containerStatuses": [
                {
                    "name": name,
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": not probe,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": started}},
                }
            ],
        }
        self._patch_status(pod, status)
        if probe:
            running.tasks.append(asyncio.create_task(self._probe(pod, container, ip, status)))
        return status

    async def _probe(self, pod: Obj, container: Obj, ip: str, status: Obj) -> None:
        probe = container["readinessProbe"]
        http = probe.get("httpGet")
        port = http["port"] if http else probe["tcpSocket"]["port"]
        if isinstance(port, str):
            port = next(
                p["containerPort"] for p in container.get("ports", []) if p.get("name") == port
            )
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        period = probe.get("periodSeconds", 10)
        assert self._session is not None
        while True:
            try:
                if http:
                    headers = {h["name"]: h["value"] for h in http.get("httpHeaders", [])}
                    headers.setdefault("User-Agent", "kube-probe/1.30")
                    url = (
                        f"{http.get('scheme', 'HTTP').lower()}://{ip}:{port}{http.get('path', '/')}"
                    )
                    async with self._session.get(url, headers=headers, allow_redirects=False) as r:
                        ok = 200 <= r.status < 400
                else:
                    _, writer = await asyncio.open_connection(ip, port)
                    writer.close()
                    ok = True
            except (aiohttp.ClientError, OSError, TimeoutError):
                ok = False
            if ok:
                break
            await asyncio.sleep(period)
        for condition in status["conditions"]:
            if condition["type"] in ("ContainersReady", "Ready"):
                condition["status"] = "True"
        status["containerStatuses"][0]["ready"] = True
        self._patch_status(pod, status)

    # ---- stopping --------------------------------------------------------------------------

    def terminate(self, namespace: str, name: str, grace: int) -> None:
        pod = self.store.get("pods", namespace, name)
        self.event(pod, "Normal", "Killing", "Stopping container", "kubelet")
        asyncio.get_running_loop().create_task(self._stop_then_remove(pod, grace))

    async def _stop_then_remove(self, pod: Obj, grace: int) -> None:
        meta = pod["metadata"]
        await self._kill((meta["namespace"], meta["name"]), grace)
        with contextlib.suppress(ApiError):
            current = self.store.get("pods", meta["namespace"], meta["name"])
            if current["metadata"]["uid"] == meta["uid"]:
                self.store.delete("pods", meta["namespace"], meta["name"])

    async def _kill(self, key: tuple[str, str], grace: float) -> None:
        running = self.running.pop(key, None)
        if running is None:
            return
        if running.server is not None:
            running.server.close()
        process = running.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        for task in running.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._wake.set()

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def logs(self, namespace: str, name: str) -> str:
        for path in self.root.glob(f"{namespace}-{name}-*/container.log"):
            return path.read_text(errors="replace")[-100_000:]
        return ""
