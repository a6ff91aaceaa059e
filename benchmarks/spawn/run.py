"""Spawn-to-ready of a local Jupyter session: Berth's local backend vs plain JupyterHub.

Both hubs run side by side on this machine (real JupyterHub 6, real configurable-http-proxy,
sqlite); spawns alternate between them so drift in machine load hits both alike. One sample is
the time from `POST /hub/api/users/<u>/servers/<s>` to the first 200 from the session through the
proxy (`GET /user/<u>/<s>/api/status` with the user's token), i.e. what a script waits for.

    .venv/bin/python -m benchmarks.spawn.run [--runs 15]

Needs root (it creates the system user `bench` that plain LocalProcessSpawner runs as; Berth's
sessions run as the `berth` account, so neither side runs Jupyter as root).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.hubtest import Hub, make_hub

HERE = Path(__file__).resolve().parent
USER = "bench"

PLAIN = """
c.JupyterHub.spawner_class = "jupyterhub.spawner.LocalProcessSpawner"
c.JupyterHub.allow_named_servers = True
c.Spawner.default_url = "/lab"
"""


def ensure_system_user() -> None:
    if subprocess.run(["id", USER], capture_output=True).returncode != 0:
        subprocess.run(
            ["useradd", "--create-home", "--home-dir", f"/var/lib/berth-bench/{USER}", USER],
            check=True,
        )


def spawn_once(hub: Hub, token: str, name: str, options: dict[str, Any] | None) -> float:
    started = time.perf_counter()
    r = hub.start_session(USER, name, options, token=token)
    assert r.status_code in (201, 202), r.text
    while True:
        try:
            status = httpx.get(
                f"{hub.url}/user/{USER}/{name}/api/status",
                headers={"Authorization": f"token {token}"},
                timeout=10,
            ).status_code
        except httpx.HTTPError:
            status = 0
        if status == 200:
            elapsed = time.perf_counter() - started
            break
        if time.perf_counter() - started > 120:
            raise TimeoutError(f"{name} not ready after 120s\n{hub.log_tail()}")
        time.sleep(0.02)
    hub.stop_session(USER, name, remove=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    ensure_system_user()
    with tempfile.TemporaryDirectory(prefix="berth-bench-") as tmp:
        hubs = {
            "Berth (berth-local)": (make_hub(Path(tmp) / "berth"), {"service": "jupyter"}),
            "JupyterHub LocalProcessSpawner": (
                make_hub(Path(tmp) / "plain", catalog=None, extra_config=PLAIN),
                None,
            ),
        }
        samples: dict[str, list[float]] = {name: [] for name in hubs}
        try:
            tokens = {}
            for name, (hub, _) in hubs.items():
                hub.start()
                hub.create_user(USER)
                tokens[name] = hub.token(USER)
                spawn_once(hub, tokens[name], "warmup", _)  # imports warm, files cached
            for run in range(args.runs):
                order = list(hubs) if run % 2 == 0 else list(reversed(hubs))
                for name in order:
                    hub, options = hubs[name]
                    samples[name].append(spawn_once(hub, tokens[name], f"s{run}", options))
        finally:
            for hub, _ in hubs.values():
                hub.stop()
    report(samples, args.runs)


def report(samples: dict[str, list[float]], runs: int) -> None:
    berth, plain = (statistics.median(v) for v in samples.values())
    lines = [
        "| spawner | median (s) | min (s) | max (s) | runs |",
        "|---|---|---|---|---|",
    ]
    for name, values in samples.items():
        lines.append(
            f"| {name} | {statistics.median(values):.3f} | {min(values):.3f}"
            f" | {max(values):.3f} | {len(values)} |"
        )
    lines.append("")
    lines.append(f"Ratio Berth / plain (medians): **{berth / plain:.3f}** (target <= 1.1)")
    table = "\n".join(lines)
    print(table)
    (HERE / "RESULTS.md").write_text(
        "# Spawn-to-ready: Berth local vs plain JupyterHub\n\n"
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.node()} ({platform.machine()},"
        f" Python {platform.python_version()}), {runs} alternating runs each, after one warm-up"
        " spawn per hub. Sample: POST the named server -> first 200 through the proxy.\n\n"
        + table
        + "\n"
    )
    (HERE / "results.json").write_text(json.dumps(samples, indent=1))


if __name__ == "__main__":
    main()
