"""berth-culler against jupyterhub-idle-culler 2.x: one full pass on a real hub, side by side.

    .venv/bin/python benchmarks/culler/run.py --sizes 2000,10000 --repeats 3 --tmp /dev/shm

For each hub database (sqlite, PostgreSQL started from Debian's package) and size, and for each
contender, the hub's database is written afresh with N users, each with one running named server
(10% idle for 2 hours, the rest active 2 minutes ago, all started 3 hours ago), the real hub and
configurable-http-proxy start on it, and the contender makes one full pass: read every ready
server, decide, stop the idle ones. Measured: the pass's wall time, and the hub API requests it
made, counted by the hub itself (its Prometheus request counter). Both contenders use the same
token, the same concurrency (10), and stop the same servers. Results go to results.json and are
summarised in RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from jupyterhub import orm, roles  # noqa: E402

from berth.hub_config import load_catalog  # noqa: E402
from berth.services import CULLER_SCOPES  # noqa: E402
from berth.services.culler import Culler  # noqa: E402
from berth.services.hubclient import HubClient  # noqa: E402
from berth.services.ledger import Ledger  # noqa: E402
from tests.culler.hub import free_port  # noqa: E402
from tests.culler.postgres import PostgresServer  # noqa: E402

TOKEN = "benchmark-culler-token-0123456789abcdef0123"
PEER_VENV = HERE / ".peer-venv"
PEER_PYTHON = PEER_VENV / "bin" / "python"
PEER_REQUIREMENT = "jupyterhub-idle-culler>=2,<3"
CONCURRENCY = 10
IDLE_LIMIT = 3600  # idle-culler's --timeout; the catalog's idle timeouts are 45m to 1h30m
ANSWER_PORT = 0
OPTIONS = [
    {"service": "jupyter", "profile": "cpu", "hours": 8},
    {"service": "jupyter", "profile": "gpu", "hours": 8},
    {"service": "code-server", "profile": "cpu", "hours": 8},
]


class _Answer(http.server.BaseHTTPRequestHandler):
    """The one HTTP server every benchmark server points at: the hub checks that it answers."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def start_answering_server() -> tuple[http.server.ThreadingHTTPServer, int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, int(server.server_address[1])


def populate(db_url: str, users: int, now: datetime, port: int) -> int:
    """Write the hub's database afresh; return how many servers are idle (to be stopped)."""
    factory = orm.new_session_factory(db_url, reset=True)
    db = factory()
    groups = {name: orm.Group(name=name) for name in ("long-runs", "night-owls", "staff")}
    db.add_all(groups.values())
    # The default roles, as a hub that has run before has them (otherwise the hub's start
    # "upgrades" every user, one commit each).
    default_roles = {r["name"]: orm.Role(**r) for r in roles.get_default_roles()}
    db.add_all(default_roles.values())
    naive = now.astimezone(UTC).replace(tzinfo=None)
    idle = 0
    for i in range(users):
        name = f"user{i:05d}"
        is_idle = i % 10 == 0
        idle += is_idle
        user = orm.User(name=name, created=naive - timedelta(days=1))
        user.roles.append(default_roles["user"])
        user.groups.append(groups["staff"])
        if not is_idle and i % 3 == 1:
            user.groups.append(groups["long-runs"])
        if not is_idle and i % 7 == 2:
            user.groups.append(groups["night-owls"])
        activity = naive - (timedelta(hours=2) if is_idle else timedelta(minutes=2))
        user.last_activity = activity
        server = orm.Server(ip="127.0.0.1", port=port, base_url=f"/user/{name}/s/")
        orm.Spawner(
            user=user,
            name="s",
            server=server,
            started=naive - timedelta(hours=3),
            last_activity=activity,
            user_options=OPTIONS[i % len(OPTIONS)],
            state={},
        )
        db.add(user)
    db.commit()
    db.close()
    factory.kw["bind"].dispose()
    return idle


class Hub:
    def __init__(self, workdir: Path, db_url: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/hub/api"
        config = workdir / "jupyterhub_config.py"
        scopes = [*CULLER_SCOPES, "read:users:activity", "read:metrics"]
        config.write_text(
            textwrap.dedent(
                f"""
                import sys
                sys.path.insert(0, {str(HERE)!r})
                c = get_config()  # noqa
                c.JupyterHub.ip = "127.0.0.1"
                c.JupyterHub.port = {self.port}
                c.JupyterHub.hub_ip = "127.0.0.1"
                c.JupyterHub.hub_port = {free_port()}
                c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{free_port()}"
                c.JupyterHub.db_url = {db_url!r}
                c.JupyterHub.cookie_secret_file = {str(workdir / "cookie_secret")!r}
                c.JupyterHub.allow_named_servers = True
                c.JupyterHub.named_server_limit_per_user = 0
                c.JupyterHub.spawner_class = "bench_spawner.NoProcessSpawner"
                c.JupyterHub.authenticator_class = "dummy"
                c.Authenticator.allow_all = True
                c.JupyterHub.cleanup_servers = False
                c.JupyterHub.last_activity_interval = 3600
                c.JupyterHub.log_level = {os.environ.get("BENCH_HUB_LOG", "WARN")!r}
                c.JupyterHub.services = [{{"name": "bench-culler", "api_token": {TOKEN!r}}}]
                c.JupyterHub.load_roles = [
                    {{"name": "bench-culler", "scopes": {scopes!r}, "services": ["bench-culler"]}}
                ]
                """
            )
        )
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join(
            [str(ROOT / "node_modules" / ".bin"), str(Path(sys.executable).parent), env["PATH"]]
        )
        self.log = (workdir / "hub.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)],
            cwd=workdir,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_started(self) -> None:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError((self.workdir / "hub.log").read_text()[-4000:])
            try:
                if self.get("/")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError("the hub did not start")

    def get(self, path: str, accept: str = "application/json") -> tuple[int, bytes]:
        request = urllib.request.Request(
            self.api + path, headers={"Authorization": f"token {TOKEN}", "Accept": accept}
        )
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def api_requests(self) -> int:
        """Requests the hub's REST API has answered, by its own counter (metrics excluded)."""
        request = urllib.request.Request(
            self.url + "/hub/metrics", headers={"Authorization": f"token {TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith("jupyterhub_request_duration_seconds_count{"):
                continue
            labels = line[line.index("{") + 1 : line.index("}")]
            handler = re.search(r'handler="([^"]*)"', labels)
            if handler and "apihandlers" in handler.group(1):
                total += float(line.rsplit(" ", 1)[1])
        return int(total)

    def ready_servers(self) -> int:
        """Servers that are ready with nothing pending, counted page by page."""
        count, offset = 0, 0
        while True:
            status, body = self.get(
                f"/users?state=ready&limit=200&offset={offset}",
                accept="application/jupyterhub-pagination+json",
            )
            assert status == 200, body
            page = json.loads(body)
            for user in page["items"]:
                for server in user["servers"].values():
                    count += bool(server["ready"] and not server["pending"])
            if not page["_pagination"]["next"]:
                return count
            offset += 200

    def wait_all_ready(self, users: int) -> None:
        """The hub checks each server after it starts; wait until every one is ready."""
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if self.ready_servers() == users:
                return
            time.sleep(2)
        raise RuntimeError("the hub did not find every server running")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)
        self.log.close()
        pid_file = self.workdir / "jupyterhub-proxy.pid"
        if pid_file.exists():  # the hub stops its proxy; make sure
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                pass


def run_peer(hub: Hub, page_size: int) -> float:
    out = subprocess.run(
        [
            str(PEER_PYTHON),
            str(HERE / "peer_pass.py"),
            hub.api,
            TOKEN,
            str(IDLE_LIMIT),
            str(CONCURRENCY),
            str(page_size),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


async def run_berth(hub: Hub, ledger_url: str) -> tuple[float, int]:
    catalog = load_catalog(HERE / "berth-bench.yaml")
    client = HubClient(hub.api, TOKEN, concurrency=CONCURRENCY, request_timeout=300)
    ledger = Ledger(ledger_url)
    culler = Culler(catalog, client, ledger, page_size=200, max_data_age=timedelta(minutes=10))
    began = time.perf_counter()
    report = await culler.run_pass()
    seconds = time.perf_counter() - began
    client.close()
    ledger.close()
    assert report.complete, report.error
    return seconds, len(report.ended)


def measure(
    db: str, users: int, contender: str, pg: PostgresServer | None, n: int, tmp: str | None
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="berth-bench-", dir=tmp))
    if db == "sqlite":
        db_url = f"sqlite:///{workdir / 'jupyterhub.sqlite'}"
        ledger_url = f"sqlite:///{workdir / 'ledger.sqlite'}"
    else:
        assert pg is not None
        db_url = pg.create_database(f"hub_{users}_{n}")
        ledger_url = pg.create_database(f"ledger_{users}_{n}")
    idle = populate(db_url, users, datetime.now(UTC), ANSWER_PORT)
    started = time.perf_counter()
    hub = Hub(workdir, db_url)
    try:
        hub.wait_started()
        hub.wait_all_ready(users)
        startup = time.perf_counter() - started
        before_ready = hub.ready_servers()
        before = hub.api_requests()
        if contender == "berth-culler":
            seconds, _ = asyncio.run(run_berth(hub, ledger_url))
        else:
            page = int(contender.rsplit("=", 1)[1])
            seconds = run_peer(hub, page)
        calls = hub.api_requests() - before
        after_ready = hub.ready_servers()
    finally:
        hub.stop()
    result = {
        "db": db,
        "users": users,
        "contender": contender,
        "seconds": round(seconds, 3),
        "api_calls": calls,
        "stopped": before_ready - after_ready,
        "idle": idle,
        "hub_startup_seconds": round(startup, 1),
    }
    print(json.dumps(result), flush=True)
    return result


def table(results: list[dict[str, Any]]) -> str:
    """Medians per (database, size, contender) as a Markdown table, with ratios to the peer."""
    groups: dict[tuple[str, int], dict[str, list[dict[str, Any]]]] = {}
    for r in results:
        groups.setdefault((r["db"], r["users"]), {}).setdefault(r["contender"], []).append(r)
    lines = [
        "| hub database | users | contender | runs | pass (s, median) | hub API calls"
        " | servers stopped | time vs idle-culler (page 50 / 200) | calls vs idle-culler"
        " (page 50 / 200) |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (db, users), by in sorted(groups.items()):
        med = {
            name: (
                statistics.median(r["seconds"] for r in runs),
                statistics.median(r["api_calls"] for r in runs),
                statistics.median(r["stopped"] for r in runs),
                len(runs),
            )
            for name, runs in by.items()
        }
        peers = [med.get("idle-culler page=50"), med.get("idle-culler page=200")]
        for name in ("idle-culler page=50", "idle-culler page=200", "berth-culler"):
            if name not in med:
                continue
            seconds, calls, stopped, n = med[name]
            time_ratio = " / ".join(f"{seconds / p[0]:.2f}" for p in peers if p)
            call_ratio = " / ".join(f"{calls / p[1]:.2f}" for p in peers if p)
            lines.append(
                f"| {db} | {users:,} | {name} | {n} | {seconds:.2f} | {calls:.0f} | {stopped:.0f}"
                f" | {time_ratio} | {call_ratio} |"
            )
    return "\n".join(lines)


def ensure_peer_venv() -> None:
    """jupyterhub-idle-culler 2.x from PyPI, in its own virtualenv (made on first use)."""
    if PEER_PYTHON.exists():
        return
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    subprocess.run(
        [str(PEER_PYTHON), "-m", "pip", "install", "--quiet", PEER_REQUIREMENT], check=True
    )


def main() -> None:
    # Stopped with SIGTERM: still run the finally blocks (stop PostgreSQL, the hub).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="2000,10000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dbs", default="sqlite,postgres")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    parser.add_argument(
        "--repeats-large", type=int, default=1, help="repeats for sizes above 5,000 users"
    )
    parser.add_argument("--tmp", default=None, help="where the hub's files (and sqlite) live")
    parser.add_argument(
        "--contenders", default="idle-culler page=50,idle-culler page=200,berth-culler"
    )
    parser.add_argument("--table", help="print the Markdown table of a results.json, and exit")
    args = parser.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    contenders = args.contenders.split(",")
    if any(c.startswith("idle-culler") for c in contenders):
        ensure_peer_venv()
    pg = None
    results = []
    global ANSWER_PORT
    answering, ANSWER_PORT = start_answering_server()
    try:
        if "postgres" in args.dbs:
            pg = PostgresServer()
            pg.start()
        counter = 0
        for users in (int(s) for s in args.sizes.split(",")):
            repeats = args.repeats if users <= 5000 else args.repeats_large
            for db in args.dbs.split(","):
                for _ in range(repeats):
                    for contender in contenders:  # interleaved, so drift hits all alike
                        counter += 1
                        results.append(measure(db, users, contender, pg, counter, args.tmp))
                        Path(args.out).write_text(json.dumps(results, indent=1))
    finally:
        answering.shutdown()
        if pg is not None:
            pg.stop()
    Path(args.out).write_text(json.dumps(results, indent=1))
    print()
    print(table(results))


if __name__ == "__main__":
    main()
