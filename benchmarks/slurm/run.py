"""Scheduler load and spawn-to-ready: Berth's Slurm spawner vs stock batchspawner, same cluster.

    sudo benchmarks/slurm/setup
    sudo .venv/bin/python benchmarks/slurm/run.py [--sizes 10,25,50] [--window 90] [--repeats 5]

For each spawner a real JupyterHub (+ configurable-http-proxy) runs with the same settings (poll
every 30 s, startup poll every 0.5 s, 1 CPU / 256 MB / partition cpu / same wall time) and its
Slurm commands go through wrappers that log each call, then exec the real command. Sessions are
"light": a 20-line HTTP server stands in for jupyterhub-singleuser (same for both), so 50 of them
fit on two cores. Results go to RESULTS.md and results.json next to this file.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CHP = ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
BERTH_VENV = Path(os.environ.get("BERTH_SLURM_JOB_VENV", "/opt/berth-slurm-jobs/venv"))
PEER_VENV = HERE / ".venv-batchspawner"
USER = "berth-bench"
COMMANDS = ("sbatch", "squeue", "scancel", "sacct", "scontrol")
POLL, STARTUP_POLL, HOURS = 30, 0.5, 1

LIGHT_SERVER = '''\
#!/usr/bin/python3
"""Stands in for jupyterhub-singleuser: answers every GET on the session's URL."""
import http.server, os, urllib.parse
url = urllib.parse.urlsplit(os.environ["JUPYTERHUB_SERVICE_URL"])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", url.port), Handler).serve_forever()
'''

CATALOG = """\
version: 1
backend: slurm
policy: {max_duration: 8h, default_duration: 1h, extension_cap: 4h, idle_timeout: never}
profiles:
  light: {display_name: Light, cpus: 1, memory: 256M, slurm: {partition: cpu}}
services:
  jupyter:
    display_name: Light stand-in for JupyterLab
    kind: jupyter
    command: [jupyterhub-singleuser]
    profiles: [light]
"""

COMMON = """\
c = get_config()
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.JupyterHub.db_url = "sqlite:///{dir}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{dir}/cookie_secret"
c.ConfigurableHTTPProxy.pid_file = "{dir}/proxy.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 0
c.JupyterHub.services = [{{"name": "bench", "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": "admin", "services": ["bench"]}}]
c.JupyterHub.last_activity_interval = 3600
c.Spawner.poll_interval = {poll}
c.Spawner.start_timeout = 600
c.Spawner.http_timeout = 120
c.Spawner.env_keep = ["LANG"]
"""

BERTH = """\
import berth.hub_config
berth.hub_config.configure(c, "{dir}/berth.yaml")
c.BerthSlurmSpawner.slurm_bin_dir = "{wrappers}"
c.BerthSlurmSpawner.job_name_prefix = "{prefix}"
c.BerthSlurmSpawner.job_setup = ["export PATH={light}:{venv}/bin:$PATH"]
c.BerthSlurmSpawner.node_addresses = {{"berth-node": "127.0.0.1"}}
c.BerthSlurmSpawner.job_bind_ip = "127.0.0.1"
c.BerthSlurmSpawner.queue_interval = {poll}
c.BerthSlurmSpawner.queue_fast_interval = {startup}
"""

BATCHSPAWNER = """\
c.JupyterHub.spawner_class = "batchspawner.MultiSlurmSpawner"
c.MultiSlurmSpawner.daemon_resolver = {{"berth-node": "127.0.0.1"}}
c.MultiSlurmSpawner.req_partition = "cpu"
c.MultiSlurmSpawner.req_nprocs = "1"
c.MultiSlurmSpawner.req_memory = "256M"
c.MultiSlurmSpawner.req_runtime = "{runtime}"
c.MultiSlurmSpawner.req_prologue = "export PATH={light}:{venv}/bin:$PATH"
# sbatch --export=<keepvars> also limits srun's step to those names: let PATH through
c.MultiSlurmSpawner.req_keepvars_extra = "PATH"
c.MultiSlurmSpawner.batch_submit_cmd = "{wrappers}/sbatch --parsable"
c.MultiSlurmSpawner.batch_query_cmd = "{wrappers}/squeue -h -j {{job_id}} -o '%T %B'"
c.MultiSlurmSpawner.batch_cancel_cmd = "{wrappers}/scancel {{job_id}}"
c.MultiSlurmSpawner.startup_poll_interval = {startup}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Hub:
    name: str
    dir: Path
    port: int
    token: str
    calls: Path
    prefix: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/hub/api"

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"token {self.token}"}
        return httpx.request(method, self.api + path, headers=headers, timeout=120, **kwargs)

    def servers(self) -> dict[str, Any]:
        r = self.request("GET", f"/users/{USER}")
        return dict(r.json().get("servers", {})) if r.status_code == 200 else {}

    def count(self) -> dict[str, int]:
        counts = dict.fromkeys(COMMANDS, 0)
        for line in self.calls.read_text().splitlines():
            counts[line.split(" ", 1)[0]] += 1
        return counts


def make_hub(kind: str, scratch: Path) -> Hub:
    prefix = "b" + secrets.token_hex(3)
    directory = scratch / kind
    wrappers, light = directory / "bin", directory / "light"
    for path in (directory, wrappers, light):
        path.mkdir(parents=True)
        path.chmod(0o755)
    calls = wrappers / "calls"
    calls.touch()
    calls.chmod(0o666)  # sbatch/scancel run as the benchmark user
    for command in COMMANDS:
        real = shutil.which(command)
        assert real, command
        wrapper = wrappers / command
        wrapper.write_text(f'#!/bin/sh\necho "{command} $*" >> "{calls}"\nexec "{real}" "$@"\n')
        wrapper.chmod(0o755)
    server = light / "jupyterhub-singleuser"
    server.write_text(LIGHT_SERVER)
    server.chmod(0o755)
    token = secrets.token_hex(16)
    port = free_port()
    config = COMMON.format(
        port=port, hub_port=free_port(), proxy_port=free_port(), chp=str(CHP), dir=directory,
        token=token, poll=POLL,
    )  # fmt: skip
    values = {"dir": directory, "wrappers": wrappers, "light": light, "prefix": prefix,
              "poll": POLL, "startup": STARTUP_POLL, "runtime": f"{HOURS + 4}:00:00"}  # fmt: skip
    if kind == "berth":
        (directory / "berth.yaml").write_text(CATALOG)
        config += BERTH.format(venv=BERTH_VENV, **values)
    else:
        config += BATCHSPAWNER.format(venv=PEER_VENV, **values)
    (directory / "jupyterhub_config.py").write_text(config)
    return Hub(kind, directory, port, token, calls, prefix)


def start_hub(hub: Hub) -> None:
    venv = BERTH_VENV if hub.name == "berth" else PEER_VENV
    env = {**os.environ, "PATH": f"{venv}/bin:{CHP.parent}:{os.environ['PATH']}"}
    log = open(hub.dir / "jupyterhub.log", "ab")
    hub.proc = subprocess.Popen(
        [str(venv / "bin" / "jupyterhub"), "-f", str(hub.dir / "jupyterhub_config.py")],
        cwd=hub.dir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    for _ in range(300):
        try:
            if httpx.get(hub.api + "/", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    else:
        raise RuntimeError(f"{hub.name} hub did not start; see {hub.dir}/jupyterhub.log")
    assert hub.request("POST", f"/users/{USER}").status_code in (201, 409)


def stop_hub(hub: Hub) -> None:
    if hub.proc is not None and hub.proc.poll() is None:
        os.killpg(hub.proc.pid, signal.SIGTERM)
        try:
            hub.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(hub.proc.pid, signal.SIGKILL)
    out = subprocess.run(["squeue", "-h", "-a", "-u", USER, "-o", "%i %j"], capture_output=True,
                         text=True).stdout  # fmt: skip
    ids = [line.split()[0] for line in out.splitlines() if hub.prefix in line or "spawner" in line]
    if ids:
        subprocess.run(["scancel", *ids], check=False)


def options(hub: Hub) -> dict[str, Any]:
    if hub.name == "berth":
        return {"user_options": {"service": "jupyter", "profile": "light", "hours": HOURS}}
    return {}


def spawn(hub: Hub, names: list[str]) -> None:
    def one(name: str) -> None:
        r = hub.request("POST", f"/users/{USER}/servers/{name}", json=options(hub))
        assert r.status_code in (201, 202), (hub.name, name, r.status_code, r.text)

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        list(pool.map(one, names))
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        servers = hub.servers()
        if all(servers.get(n, {}).get("ready") for n in names):
            return
        failed = [n for n in names if n not in servers]
        assert not failed, f"{hub.name}: sessions failed: {failed}; see {hub.dir}"
        time.sleep(1)
    raise TimeoutError(f"{hub.name}: sessions not ready")


def stop_sessions(hub: Hub, names: list[str]) -> None:
    def one(name: str) -> None:
        hub.request("DELETE", f"/users/{USER}/servers/{name}", json={"remove": True})

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        list(pool.map(one, names))
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and any(n in hub.servers() for n in names):
        time.sleep(1)


def spawn_to_ready(hub: Hub, repeats: int) -> list[float]:
    times = []
    for i in range(repeats):
        name = f"ready{i}"
        start = time.monotonic()
        r = hub.request("POST", f"/users/{USER}/servers/{name}", json=options(hub))
        assert r.status_code in (201, 202), r.text
        while not hub.servers().get(name, {}).get("ready"):
            assert name in hub.servers(), f"{hub.name}: {name} failed; see {hub.dir}"
            time.sleep(0.05)
        times.append(time.monotonic() - start)
        stop_sessions(hub, [name])
    return times


def load(hub: Hub, sizes: list[int], window: float) -> dict[int, dict[str, float]]:
    results: dict[int, dict[str, float]] = {}
    running: list[str] = []
    for size in sizes:
        new = [f"s{i}" for i in range(len(running), size)]
        spawn(hub, new)
        running += new
        time.sleep(5)  # let start-up polling end
        before = hub.count()
        time.sleep(window)
        after = hub.count()
        per_minute = {c: (after[c] - before[c]) * 60 / window for c in COMMANDS}
        per_minute["total"] = sum(per_minute[c] for c in COMMANDS)
        results[size] = per_minute
        print(f"{hub.name} {size} sessions: {per_minute}", flush=True)
    stop_sessions(hub, running)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,25,50")
    parser.add_argument("--window", type=float, default=90.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", default="berth,batchspawner", help="comma-separated spawners")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    scratch = Path(tempfile.mkdtemp(prefix="berth-slurm-bench-"))
    scratch.chmod(0o755)
    results: dict[str, Any] = {"sizes": sizes, "window_s": args.window, "poll_s": POLL,
                               "startup_poll_s": STARTUP_POLL}  # fmt: skip
    kinds = [k for k in ("berth", "batchspawner") if k in args.only.split(",")]
    try:
        for kind in kinds:
            hub = make_hub(kind, scratch)
            start_hub(hub)
            try:
                times = spawn_to_ready(hub, args.repeats)
                print(f"{kind} spawn-to-ready: {times}", flush=True)
                results[kind] = {"spawn_to_ready_s": times, "load": load(hub, sizes, args.window)}
            finally:
                stop_hub(hub)
    except BaseException:
        print(f"kept {scratch} for its logs")
        raise
    finally:
        (HERE / "results.json").write_text(json.dumps(results, indent=2))
    shutil.rmtree(scratch, ignore_errors=True)
    if len(kinds) == 2:
        write_table(results)


def write_table(results: dict[str, Any]) -> None:
    berth, peer = results["berth"], results["batchspawner"]
    lines = [
        "| sessions | Berth: scheduler commands/min | batchspawner: scheduler commands/min"
        " | batchspawner / Berth |",
        "|---:|---:|---:|---:|",
    ]
    for size in results["sizes"]:
        b, p = berth["load"][size]["total"], peer["load"][size]["total"]
        ratio = f"{p / b:.0f}x" if b else "n/a (Berth made none)"
        lines.append(f"| {size} | {b:.1f} | {p:.1f} | {ratio} |")
    bm, pm = (
        statistics.median(berth["spawn_to_ready_s"]),
        statistics.median(peer["spawn_to_ready_s"]),
    )
    lines += [
        "",
        "| spawn-to-ready, one session (median of "
        f"{len(berth['spawn_to_ready_s'])}) | Berth | batchspawner | Berth / batchspawner |",
        "|---|---:|---:|---:|",
        f"| seconds | {bm:.2f} | {pm:.2f} | {bm / pm:.2f} |",
    ]
    (HERE / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
