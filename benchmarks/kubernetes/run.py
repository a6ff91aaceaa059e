"""Kubernetes backend benchmark, on the loopback API stand-in (tests/kubestandin).

    .venv/bin/python benchmarks/kubernetes/run.py [--spawns 100] [--rounds 2] \
        [--sessions 1000] [--window 120]

1. Spawn-to-ready: ``--spawns`` servers started at once through the hub's REST API, timed from the
   POST to the ``ready`` event of each server's progress stream; Berth (``berth-kubernetes``, its
   defaults) against stock KubeSpawner (installed from PyPI into ``.peer-venv`` here), each with its
   own hub on the same stand-in, rounds interleaved; and Berth with its per-session Service turned
   off (``berth-no-service``), the one step stock KubeSpawner does not take by default. All run
   jupyterhub-singleuser, which the stand-in kubelet serves with its built-in HTTP container
   (--builtin-http), answering at once: no image pull, no process start, no probe wait. What is
   left is the hub, the spawner and the API traffic (the kubelet's own delay is excluded).
   Timed twice: by the hub itself ("took X seconds to start" in its log) and by the client.
2. Traffic at scale: ``--sessions`` Berth sessions running, then the hub's requests to the API
   counted per minute by verb and resource while it polls every session (poll_interval 10 s).

Writes ``results.json`` (``--out``) beside this file; RESULTS.md is written from it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PEER_VENV = HERE / ".peer-venv"
CHP = ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
sys.path.insert(0, str(ROOT))

from tests.kubestandin import StandIn  # noqa: E402

CATALOG = """\
version: 1
backend: kubernetes
profiles:
  small:
    display_name: Small
    cpus: 1
    memory: 1G
services:
  bench:
    display_name: Bench
    kind: jupyter
    command: [jupyterhub-singleuser]
    profiles: [small]
"""

COMMON = """\
c = get_config()
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.pid_file = {pid!r}
c.JupyterHub.db_url = "sqlite:///{dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{dir}/cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.services = [{{"name": "bench", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": ["bench"]}}]
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 0
c.JupyterHub.concurrent_spawn_limit = 0
c.JupyterHub.active_server_limit = 0
c.JupyterHub.cleanup_servers = True
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
c.JupyterHub.log_level = "INFO"
c.Spawner.start_timeout = 600
c.Spawner.http_timeout = 120
c.Spawner.poll_interval = 10

c.KubeSpawner.namespace = {namespace!r}
"""

BERTH = """
import berth.hub_config
berth.hub_config.configure(c, {catalog!r})
"""

STOCK = """
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]  # as z2jh sets it
c.KubeSpawner.cpu_limit = c.KubeSpawner.cpu_guarantee = 1.0
c.KubeSpawner.mem_limit = c.KubeSpawner.mem_guarantee = "1G"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_peer_venv() -> Path:
    """Stock KubeSpawner and JupyterHub from PyPI, the versions this project runs."""
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        import jupyterhub
        import kubespawner

        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet",
             f"jupyterhub=={jupyterhub.__version__}",
             f"jupyterhub-kubespawner=={kubespawner.__version__}"],
            check=True,
        )  # fmt: skip
    return python


class BenchHub:
    def __init__(
        self, name: str, python: Path, kube: StandIn, namespace: str, workdir: Path
    ) -> None:
        self.name, self.python, self.namespace = name, python, namespace
        self.dir = workdir / name
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.token = secrets.token_hex(16)
        catalog = self.dir / "berth.yaml"
        catalog.write_text(CATALOG)
        config = COMMON.format(
            port=self.port, hub_port=free_port(), proxy_port=free_port(), chp=str(CHP),
            pid=str(self.dir / "proxy.pid"), dir=self.dir, token=self.token, namespace=namespace,
        )  # fmt: skip
        config += STOCK if name == "stock" else BERTH.format(catalog=str(catalog))
        if name == "berth-no-service":
            config += "c.BerthKubeSpawner.services_enabled = False\n"
        (self.dir / "jupyterhub_config.py").write_text(config)
        self.env = {**os.environ, "KUBECONFIG": str(kube.kubeconfig),
                    "PATH": f"{python.parent}:{CHP.parent}:{os.environ['PATH']}"}  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/hub/api"

    def start(self) -> None:
        log = (self.dir / "jupyterhub.log").open("ab")
        self.proc = subprocess.Popen(
            [str(self.python), "-m", "jupyterhub", "-f", str(self.dir / "jupyterhub_config.py")],
            cwd=self.dir, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.api + "/", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} hub did not start; see {self.dir}/jupyterhub.log")

    def spawn_durations(self, since: int) -> dict[str, float]:
        """The hub's own "User u:s took X seconds to start" lines after byte ``since``."""
        data = (self.dir / "jupyterhub.log").read_bytes()[since:]
        found = re.findall(rb"User ([^:\s]+):\S* took ([0-9.]+) seconds to start", data)
        return {user.decode(): float(seconds) for user, seconds in found}

    def kubelet_delays(self, kube: StandIn) -> dict[str, float]:
        """Per user: seconds the stand-in's scheduler and kubelet held the pod, created to Ready."""
        delays = {}
        for t in kube.stats()["timings"]:
            if t["namespace"] == self.namespace and "ready" in t and t.get("user"):
                delays[t["user"]] = t["ready"] - t["created"]
        return delays

    def log_size(self) -> int:
        return (self.dir / "jupyterhub.log").stat().st_size

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def spawn_all(hub: BenchHub, users: list[str], options: dict[str, Any] | None) -> list[float]:
    """Start one server per user at once; seconds from POST to the ready event, each."""
    headers = {"Authorization": f"token {hub.token}"}
    limits = httpx.Limits(max_connections=len(users) * 2 + 10)
    async with httpx.AsyncClient(headers=headers, timeout=600, limits=limits) as client:

        async def one(user: str) -> float:
            started = time.perf_counter()
            body = {"user_options": options} if options else {}
            r = await client.post(f"{hub.api}/users/{user}/servers/s", json=body)
            assert r.status_code in (201, 202), r.text
            async with client.stream("GET", f"{hub.api}/users/{user}/servers/s/progress") as stream:
                async for line in stream.aiter_lines():
                    if line.startswith("data:"):
                        event = json.loads(line[5:])
                        if event.get("ready"):
                            return time.perf_counter() - started
                        if event.get("failed"):
                            raise RuntimeError(f"{user}: {event}")
            raise RuntimeError(f"{user}: progress ended without ready")

        return list(await asyncio.gather(*(one(u) for u in users)))


async def spawn_together(
    hubs: dict[str, BenchHub], users: list[str], options: dict[str, Any]
) -> dict[str, list[float]]:
    names = list(hubs)
    runs = [spawn_all(hubs[name], users, options[name]) for name in names]
    return dict(zip(names, await asyncio.gather(*runs), strict=True))


async def spawn_in_turn(
    hubs: dict[str, BenchHub], users: list[str], options: dict[str, Any], first: int
) -> dict[str, list[float]]:
    """Each arm spawns, and stops again, with the machine to itself; who goes first rotates."""
    names = list(hubs)
    names = names[first % len(names) :] + names[: first % len(names)]
    took = {}
    for name in names:
        took[name] = await spawn_all(hubs[name], users, options[name])
        await stop_all(hubs[name], users)
    return took


async def stop_together(hubs: dict[str, BenchHub], users: list[str]) -> None:
    await asyncio.gather(*(stop_all(hub, users) for hub in hubs.values()))


async def stop_all(hub: BenchHub, users: list[str]) -> None:
    headers = {"Authorization": f"token {hub.token}"}
    async with httpx.AsyncClient(headers=headers, timeout=600) as client:
        await asyncio.gather(*(client.delete(f"{hub.api}/users/{u}/servers/s") for u in users))
        while True:
            r = await client.get(f"{hub.api}/users", params={"state": "active", "limit": 2000})
            if not r.json():
                return
            await asyncio.sleep(0.5)


def create_users(hub: BenchHub, users: list[str]) -> None:
    headers = {"Authorization": f"token {hub.token}"}
    for chunk in range(0, len(users), 200):
        r = httpx.post(f"{hub.api}/users", json={"usernames": users[chunk : chunk + 200]},
                       headers=headers, timeout=120)  # fmt: skip
        assert r.status_code in (201, 409), r.text


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": statistics.median(values),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def traffic(
    kube: StandIn, berth: BenchHub, users: list[str], options: Any, window_seconds: float
) -> dict[str, Any]:
    """Start one Berth session per user (100 at a time), then count the hub's API requests."""
    create_users(berth, users)
    before = len(kube.stats()["timeline"])
    spawn_started = time.time()
    for start in range(0, len(users), 100):
        asyncio.run(spawn_all(berth, users[start : start + 100], options))
        print(f"{min(start + 100, len(users))} sessions running", flush=True)
    spawn_seconds = time.time() - spawn_started
    timeline = kube.stats()["timeline"][before:]
    spawning = Counter(f"{verb} {res}" for _, client, verb, res in timeline if client == "token")
    window_start = time.time()
    time.sleep(window_seconds)
    window = [e for e in kube.stats()["timeline"] if e[0] >= window_start and e[1] == "token"]
    minutes = window_seconds / 60
    per_minute = Counter(f"{verb} {res}" for _, _, verb, res in window)
    return {
        "sessions": len(users),
        "spawn_seconds": spawn_seconds,
        "requests_while_spawning": dict(sorted(spawning.items())),
        "requests_per_session_while_spawning": {
            k: v / len(users) for k, v in sorted(spawning.items())
        },
        "window_seconds": window_seconds,
        "idle_requests_per_minute": {k: v / minutes for k, v in sorted(per_minute.items())},
        "objects": kube.stats()["objects"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spawns", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="rounds run first, not counted")
    parser.add_argument(
        "--arms",
        default="berth,stock",
        help="comma-separated: berth, stock, berth-no-service (Berth without the Service)",
    )
    parser.add_argument(
        "--order",
        choices=("alternate", "together"),
        default="alternate",
        help="alternate: in each round the arms spawn one after the other, the first one"
        " rotating, each with the machine to itself; together: all arms at the same moment",
    )
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--window", type=float, default=120, help="seconds of traffic counted")
    parser.add_argument("--out", default="results.json", help="file name, beside this script")
    args = parser.parse_args()
    peer_python = ensure_peer_venv()
    workdir = Path(tempfile.mkdtemp(prefix="berth-kube-bench-"))
    results: dict[str, Any] = {"spawns": args.spawns, "rounds": args.rounds}
    with StandIn(workdir, validate="", builtin_http=("jupyterhub-singleuser",)) as kube:
        for namespace in ("bench-berth", "bench-stock", "bench-berth-ns"):
            httpx.post(f"{kube.url}/api/v1/namespaces", json={"metadata": {"name": namespace}})
        every = {
            "berth": BenchHub("berth", Path(sys.executable), kube, "bench-berth", workdir),
            "stock": BenchHub("stock", peer_python, kube, "bench-stock", workdir),
            "berth-no-service": BenchHub(
                "berth-no-service", Path(sys.executable), kube, "bench-berth-ns", workdir
            ),
        }
        hubs = {name: every[name] for name in args.arms.split(",")}
        users = [f"u{i:04d}" for i in range(max(args.spawns, args.sessions))]
        chosen = {"service": "bench", "profile": "small", "hours": 1}
        options = {"berth": chosen, "stock": None, "berth-no-service": chosen}
        times: dict[str, list[float]] = {name: [] for name in hubs}
        hub_times: dict[str, list[float]] = {name: [] for name in hubs}
        own_times: dict[str, list[float]] = {name: [] for name in hubs}
        try:
            for hub in hubs.values():
                hub.start()
                create_users(hub, users[: args.spawns])
            batch = users[: args.spawns]
            per_round: list[dict[str, float]] = []
            for round_ in range(args.warmup + args.rounds):
                offsets = {name: hub.log_size() for name, hub in hubs.items()}
                if args.order == "together":
                    # every arm spawns at the same moment, sharing the machine's two cores
                    took_all = asyncio.run(spawn_together(hubs, batch, options))
                else:
                    took_all = asyncio.run(spawn_in_turn(hubs, batch, options, round_))
                label = "warm-up" if round_ < args.warmup else f"round {round_ + 1 - args.warmup}"
                medians = {}
                for name, hub in hubs.items():
                    by_user = hub.spawn_durations(offsets[name])
                    assert len(by_user) == len(batch), (name, len(by_user))
                    delays = hub.kubelet_delays(kube)
                    measured = list(by_user.values())
                    own = [seconds - delays[user] for user, seconds in by_user.items()]
                    print(f"{label} {name}: hub {summary(measured)}", flush=True)
                    print(f"{label} {name}: minus kubelet {summary(own)}", flush=True)
                    print(f"{label} {name}: client {summary(took_all[name])}", flush=True)
                    medians[name] = statistics.median(own)
                    if round_ >= args.warmup:
                        times[name] += took_all[name]
                        hub_times[name] += measured
                        own_times[name] += own
                if round_ >= args.warmup:
                    per_round.append(medians)
                if args.order == "together":
                    asyncio.run(stop_together(hubs, batch))
            results["per_round_p50_minus_kubelet"] = per_round
            results["spawn_to_ready_hub"] = {name: summary(t) for name, t in hub_times.items()}
            results["spawn_to_ready_minus_kubelet"] = {
                name: summary(t) for name, t in own_times.items()
            }
            results["post_to_ready_event"] = {name: summary(t) for name, t in times.items()}
            for key in (
                "spawn_to_ready_minus_kubelet",
                "spawn_to_ready_hub",
                "post_to_ready_event",
            ):
                for q in ("p50", "p99"):
                    ratio = results[key]["berth"][q] / results[key]["stock"][q]
                    results[f"ratio_{key}_{q}"] = ratio
            for name, hub in hubs.items():
                if name != "berth":
                    hub.stop()
            if args.sessions:
                while kube.objects("pods", namespace=hubs["berth"].namespace):
                    time.sleep(1)  # the last round's pods are gone before the count starts
                results["traffic"] = traffic(
                    kube, hubs["berth"], users[: args.sessions], options["berth"], args.window
                )
                print(json.dumps(results["traffic"], indent=1), flush=True)
        finally:
            for hub in hubs.values():
                hub.stop()
    (HERE / args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "traffic"}, indent=1))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
