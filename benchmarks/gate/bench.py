"""berth-gate against direct access and two peers, side by side in one run on loopback.

Targets (all in front of the same small aiohttp service, tests/standins/webapp.py, each proxy
starting its own copy the way it would in a session):
  direct      the service itself, no proxy
  berth-gate  this project
  jsp         jupyter-server-proxy's ``jupyter-standaloneproxy``
  jhsingle    jhsingle-native-proxy

Every proxy checks the hub token on every request (against a loopback stand-in of the hub's
``/hub/api/user``; each caches the answer as it normally does). Every copy of the service runs
with glibc's mmap and trim thresholds pinned (``--service-allocator pinned``, the default):
CPython's asyncio reads into a new 256 KiB buffer each time, and whether glibc maps fresh memory
for it on every read (and unmaps it after) depends on its dynamic thresholds, which rise only
after such a buffer is freed whole (a read that found no data, or the end of a connection). The
direct copy meets such reads early from its clients; a copy behind a proxy that keeps its
connections open may never, and then spends some 15-20 µs more per request for reasons that have
nothing to do with the proxy. Pinned to the values glibc itself moves to (mmap 1 MiB, trim twice
that), every copy behaves as the direct one does; ``--service-allocator default`` leaves them.
Measurements, repeated in
interleaved rounds so a slow moment of this shared machine hits every target alike; the median
round is reported:
  small requests   wrk -c1 and -c32: requests/s, p50, p99 (GET /health, 2-byte body)
  1 MB download    wrk -c4 on /download?size=1048576: MB/s
  first chunk      time from sending a request to the first body chunk of an NDJSON and an
                   SSE stream (new connection each time; median and p99 of N)
  websocket echo   round trip of a 64-byte text message (median and p99 of N)

Usage: run.sh (see README.md). Writes results.json and RESULTS.md beside this file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from tests.gatekit import (  # noqa: E402
    OWNER_TOKEN,
    PREFIX,
    fake_hub,
    free_port,
    gate_environment,
    webapp,
)

#: each peer in its own virtualenv: installed together, pip picks an old jhsingle-native-proxy
PEERS = HERE / ".peers"
GATE = Path(sys.executable).with_name("berth-gate")
AUTH = {"Authorization": f"token {OWNER_TOKEN}"}
#: targets that never served, and why
FAILED: dict[str, str] = {}
LOG = open(HERE / "targets.log", "ab")


@dataclass
class Target:
    name: str
    base: str  # URL prefix the service's paths are appended to
    process: asyncio.subprocess.Process | None = None
    results: dict[str, list[float]] = field(default_factory=dict)

    def add(self, key: str, value: float) -> None:
        self.results.setdefault(key, []).append(value)


async def wait_http(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    # each try gives up after 5 s: a target that accepts connections and never answers is left
    # out when the deadline passes, not waited for
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url, headers=AUTH) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} never answered 200 within {seconds:g} s")


async def spawn(*argv: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdout=LOG,
        stderr=LOG,
        start_new_session=True,
    )


#: glibc's thresholds for every copy of the service (see the module's docstring): pinning the
#: mmap threshold alone would leave the trim threshold at 128 KiB, and the heap would be given back
#: and faulted in again on every read
SERVICE_ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": 1 << 20, "MALLOC_TRIM_THRESHOLD_": 2 << 20}


@contextlib.asynccontextmanager
async def targets(hub_url: str, which: list[str], allocator: str) -> AsyncIterator[list[Target]]:
    started: list[Target] = []
    # jhsingle-native-proxy reaches its service at "localhost", which may be ::1 first
    service = [sys.executable, *webapp("--port", "{port}", "--host", "localhost")[1:]]
    if allocator == "pinned":
        service = ["env", *(f"{k}={v}" for k, v in SERVICE_ALLOCATOR.items()), *service]
    try:
        if "direct" in which:
            port = free_port()
            argv = [a.replace("{port}", str(port)) for a in service]
            started.append(Target("direct", f"http://127.0.0.1:{port}/",
                                  await spawn(*argv, env=dict(os.environ))))  # fmt: skip
        if "berth-gate" in which:
            port = free_port()
            env = gate_environment(hub_url, port, PREFIX, JUPYTERHUB_ACTIVITY_URL="")
            process = await spawn(str(GATE), "--ready-path", "/health", "--", *service, env=env)
            started.append(Target("berth-gate", f"http://127.0.0.1:{port}{PREFIX}", process))
        if "jsp" in which:
            port = free_port()
            env = gate_environment(hub_url, port, PREFIX, JUPYTERHUB_ACTIVITY_URL="")
            argv = [str(PEERS / "jsp" / "bin" / "jupyter-standaloneproxy"), f"--port={port}",
                    "--address=127.0.0.1", "--", *service]  # fmt: skip
            started.append(Target("jsp", f"http://127.0.0.1:{port}{PREFIX}",
                                  await spawn(*argv, env=env)))  # fmt: skip
        if "jhsingle" in which:
            port = free_port()
            env = gate_environment(hub_url, port, PREFIX, JUPYTERHUB_ACTIVITY_URL="")
            jhsingle = PEERS / "jhsingle" / "bin" / "jhsingle-native-proxy"
            argv = [str(jhsingle), f"--port={port}", "--ip=127.0.0.1",
                    "--authtype=oauth", "--ready-check-path=/health", "--last-activity-interval=0",
                    "--no-logs", "--", *service]  # fmt: skip
            started.append(Target("jhsingle", f"http://127.0.0.1:{port}{PREFIX}",
                                  await spawn(*argv, env=env)))  # fmt: skip
        serving = []
        for target in started:
            try:
                await wait_http(target.base + "health")
            except RuntimeError as e:
                print(f"{target.name} left out: {e} (its output is in targets.log)", flush=True)
                FAILED[target.name] = str(e)
            else:
                serving.append(target)
        yield serving
    finally:
        for target in started:
            if target.process is not None and target.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(target.process.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(target.process.wait(), 15)
                except TimeoutError:
                    os.killpg(target.process.pid, signal.SIGKILL)
                    await target.process.wait()


def _micros(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]


async def wrk(url: str, connections: int, seconds: int) -> dict[str, float]:
    process = await asyncio.create_subprocess_exec(
        "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
        "-H", f"Authorization: token {OWNER_TOKEN}", url,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out = (await process.communicate())[0].decode()
    result = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_us": _micros(re.search(r"\s50%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "p99_us": _micros(re.search(r"\s99%\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
    }
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    if transfer:
        scale = {"B": 1 / 2**20, "KB": 1 / 1024, "MB": 1, "GB": 1024}[transfer.group(2)]
        result["mb_per_s"] = float(transfer.group(1)) * scale
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors on {url}:\n{out}")
    return result


async def first_chunk(url: str, repeat: int) -> list[float]:
    """Seconds from sending the request to the first body byte, on a new connection each time."""
    parts = aiohttp.client.URL(url)
    times = []
    for _ in range(repeat):
        reader, writer = await asyncio.open_connection(parts.host, parts.port)
        request = (f"GET {parts.path_qs} HTTP/1.1\r\nHost: {parts.host}:{parts.port}\r\n"
                   f"Authorization: token {OWNER_TOKEN}\r\nConnection: close\r\n\r\n")  # fmt: skip
        start = time.perf_counter()
        writer.write(request.encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"{url}: {head[:100]!r}")
        first = await reader.read(1)
        times.append(time.perf_counter() - start)
        assert first
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return times


async def websocket_round_trips(url: str, repeat: int) -> list[float]:
    times = []
    message = "x" * 64
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, headers=AUTH) as ws:
            for _ in range(repeat):
                start = time.perf_counter()
                await ws.send_str(message)
                reply = await ws.receive_str()
                times.append(time.perf_counter() - start)
                assert reply == message
    return times


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


async def measure(targets_: list[Target], rounds: int, seconds: int, repeat: int) -> None:
    for round_ in range(rounds):
        for target in targets_:
            print(f"round {round_ + 1}/{rounds}: {target.name}", flush=True)
            for c in (1, 32):
                result = await wrk(target.base + "health", c, seconds)
                target.add(f"c{c}_rps", result["rps"])
                target.add(f"c{c}_p50_us", result["p50_us"])
                target.add(f"c{c}_p99_us", result["p99_us"])
            download = await wrk(target.base + "download?size=1048576", 4, seconds)
            target.add("download_mb_s", download["mb_per_s"])
            for kind in ("ndjson", "sse"):
                times = await first_chunk(target.base + f"{kind}?n=3&gap=0.01", repeat)
                target.add(f"{kind}_first_ms", statistics.median(times) * 1e3)
                target.add(f"{kind}_first_p99_ms", p99(times) * 1e3)
            ws_url = target.base.replace("http://", "ws://") + "ws"
            times = await websocket_round_trips(ws_url, repeat * 4)
            target.add("ws_rtt_us", statistics.median(times) * 1e6)
            target.add("ws_rtt_p99_us", p99(times) * 1e6)


ROWS = [
    ("c1_rps", "small requests, c=1 (req/s)", "{:.0f}"),
    ("c1_p50_us", "  p50 latency, c=1 (µs)", "{:.0f}"),
    ("c1_p99_us", "  p99 latency, c=1 (µs)", "{:.0f}"),
    ("c32_rps", "small requests, c=32 (req/s)", "{:.0f}"),
    ("c32_p50_us", "  p50 latency, c=32 (µs)", "{:.0f}"),
    ("c32_p99_us", "  p99 latency, c=32 (µs)", "{:.0f}"),
    ("download_mb_s", "1 MB downloads, c=4 (MB/s)", "{:.0f}"),
    ("ndjson_first_ms", "NDJSON first chunk, median (ms)", "{:.2f}"),
    ("sse_first_ms", "SSE first chunk, median (ms)", "{:.2f}"),
    ("ws_rtt_us", "websocket echo round trip, median (µs)", "{:.0f}"),
    ("ws_rtt_p99_us", "  websocket p99 (µs)", "{:.0f}"),
]


def summarize(targets_: list[Target]) -> dict[str, dict[str, float]]:
    return {t.name: {k: statistics.median(v) for k, v in t.results.items()} for t in targets_}


def verdicts(m: dict[str, dict[str, float]]) -> list[tuple[str, str, bool]]:
    gate, direct = m["berth-gate"], m["direct"]
    peers = [m[p] for p in ("jsp", "jhsingle") if p in m]
    best_peer = max((p["c32_rps"] for p in peers), default=0.0)
    checks = []
    if best_peer:
        ratio = gate["c32_rps"] / best_peer
        checks.append(("c=32 throughput >= 2x the faster peer", f"{ratio:.2f}x", ratio >= 2))
    ratio = gate["c32_rps"] / direct["c32_rps"]
    checks.append(("c=32 throughput >= 60% of direct", f"{ratio:.1%}", ratio >= 0.6))
    added = gate["c1_p99_us"] - direct["c1_p99_us"]
    checks.append(
        ("p99 added over direct at c=1 <= 2 ms", f"{added / 1000:+.2f} ms", added <= 2000)
    )
    for kind in ("ndjson", "sse"):
        added = gate[f"{kind}_first_ms"] - direct[f"{kind}_first_ms"]
        checks.append((f"{kind.upper()} first chunk within 10 ms of direct", f"{added:+.2f} ms",
                       added <= 10))  # fmt: skip
    ratio = gate["download_mb_s"] / direct["download_mb_s"]
    checks.append(("1 MB download throughput >= 50% of direct", f"{ratio:.1%}", ratio >= 0.5))
    return checks


def report(m: dict[str, dict[str, float]], setup: dict[str, object]) -> str:
    names = [n for n in ("direct", "berth-gate", "jsp", "jhsingle") if n in m]
    lines = ["| measure | " + " | ".join(names) + " | berth-gate / direct |",
             "|---|" + "---:|" * (len(names) + 1)]  # fmt: skip
    for key, label, fmt in ROWS:
        cells = [fmt.format(m[n][key]) for n in names]
        ratio = m["berth-gate"][key] / m["direct"][key] if m["direct"][key] else float("nan")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {ratio:.2f} |")
    lines += ["", "| target | measured | met |", "|---|---:|:---:|"]
    for what, value, ok in verdicts(m):
        lines.append(f"| {what} | {value} | {'yes' if ok else 'NO'} |")
    for name, why in FAILED.items():
        lines += ["", f"{name}: not measured: {why} (see targets.log)."]
    lines += ["", "Setup: " + ", ".join(f"{k} {v}" for k, v in setup.items())]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--repeat", type=int, default=50, help="samples per stream/websocket run")
    parser.add_argument("--targets", default="direct,berth-gate,jsp,jhsingle")
    parser.add_argument(
        "--service-allocator",
        choices=("pinned", "default"),
        default="pinned",
        help="pin glibc's mmap and trim thresholds in every copy of the service (see above)",
    )
    args = parser.parse_args()
    which = args.targets.split(",")
    async with fake_hub() as hub, targets(hub.url, which, args.service_allocator) as started:
        await measure(started, args.rounds, args.seconds, args.repeat)
    medians = summarize(started)
    setup = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "rounds": args.rounds,
        "wrk seconds": args.seconds,
        "samples": args.repeat,
        "service allocator": args.service_allocator,
        "load average at end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    (HERE / "results.json").write_text(json.dumps(
        {"setup": setup, "medians": medians, "raw": {t.name: t.results for t in started}},
        indent=2))  # fmt: skip
    table = report(medians, setup)
    print(table)
    (HERE / "last-run.md").write_text(table + "\n")


if __name__ == "__main__":
    asyncio.run(main())
