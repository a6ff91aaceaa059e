"""Start and stop the stand-in as a child process from a test or a benchmark."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

__all__ = ["StandIn"]

_HERE = Path(__file__).resolve().parent


class StandIn:
    """``with StandIn(tmp_path) as kube: ...`` — ``kube.kubeconfig`` and ``kube.url`` inside."""

    def __init__(
        self,
        workdir: Path,
        gpus: int = 1,
        start_delay: float = 0.0,
        validate: str = "1.30",
        builtin_http: tuple[str, ...] = (),
    ) -> None:
        self.kubeconfig = workdir / "kubeconfig"
        self.args = [
            "--kubeconfig", str(self.kubeconfig), "--gpus", str(gpus),
            "--start-delay", str(start_delay), "--validate", validate,
        ]  # fmt: skip
        for command in builtin_http:
            self.args += ["--builtin-http", command]
        self.url = ""
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> StandIn:
        # pods run their command from the test's own environment (there are no images here)
        path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        env = dict(os.environ, PYTHONPATH=str(_HERE.parent), PATH=path)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kubestandin", *self.args],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"the Kubernetes stand-in did not start: {line!r}")
        self.url = line.split()[1]
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            return json.load(response)

    def stats(self) -> dict[str, Any]:
        return self.get("/_standin/requests")  # type: ignore[no-any-return]

    def requests(self, client: str = "token") -> dict[tuple[str, str], int]:
        """(verb, resource) -> how many requests ``client`` made ("token": the hub)."""
        return {(v, r): n for c, v, r, n in self.stats()["requests"] if c == client}

    def objects(self, kind: str, namespace: str = "default", selector: str = "") -> list[Any]:
        query = f"?labelSelector={urllib.request.quote(selector)}" if selector else ""
        return self.get(f"/api/v1/namespaces/{namespace}/{kind}{query}")["items"]  # type: ignore[no-any-return]
