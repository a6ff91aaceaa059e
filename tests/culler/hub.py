"""A real JupyterHub (with the real configurable-http-proxy) for the culler's tests.

Started on free loopback ports in a temporary directory, with a tiny spawner whose servers are
real processes (``python -m http.server``), and an admin service token for the test to drive the
hub's REST API. Stop it with :meth:`RealHub.stop`; it stops its proxy and servers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "culler-test-admin-token-0123456789abcdef"

SPAWNER = '''
import asyncio
import sys
from jupyterhub.spawner import SimpleLocalProcessSpawner


class TinySpawner(SimpleLocalProcessSpawner):
    """A real process per server: Python's http.server on the port the hub picks.

    user_options {"hang": true} makes a start that never finishes (a session stuck pending).
    """

    async def start(self):
        if self.user_options.get("hang"):
            await asyncio.sleep(3600)
        return await super().start()

    def get_args(self):
        return [str(self.port), "--bind", "127.0.0.1"]

    def _cmd_default(self):
        return [sys.executable, "-m", "http.server"]
'''


def _open(request: urllib.request.Request) -> tuple[int, Any]:
    """Send; return (status, parsed JSON, or the text when it is not JSON)."""
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RealHub:
    def __init__(self, workdir: Path, extra_config: str = "", db_url: str = "") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.hub_port = free_port()
        self.proxy_api_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"http://127.0.0.1:{self.port}/hub/api"
        self.db_url = db_url or f"sqlite:///{workdir / 'jupyterhub.sqlite'}"
        self.extra_config = extra_config
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "hub.log"

    def write_config(self) -> Path:
        (self.workdir / "tinyspawner.py").write_text(SPAWNER)
        config = self.workdir / "jupyterhub_config.py"
        config.write_text(
            textwrap.dedent(
                f"""
                import sys
                sys.path.insert(0, {str(self.workdir)!r})
                c = get_config()  # noqa
                c.JupyterHub.ip = "127.0.0.1"
                c.JupyterHub.port = {self.port}
                c.JupyterHub.hub_ip = "127.0.0.1"
                c.JupyterHub.hub_port = {self.hub_port}
                c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_api_port}"
                c.JupyterHub.db_url = {self.db_url!r}
                c.JupyterHub.cookie_secret_file = {str(self.workdir / "cookie_secret")!r}
                c.JupyterHub.pid_file = {str(self.workdir / "hub.pid")!r}
                c.JupyterHub.allow_named_servers = True
                c.JupyterHub.named_server_limit_per_user = 0
                c.JupyterHub.spawner_class = "tinyspawner.TinySpawner"
                c.JupyterHub.authenticator_class = "dummy"
                c.Authenticator.allow_all = True
                c.JupyterHub.cleanup_servers = False
                c.JupyterHub.last_activity_interval = 3600
                c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
                c.JupyterHub.services = [
                    {{"name": "test-admin", "api_token": {ADMIN_TOKEN!r}}},
                ]
                c.JupyterHub.load_roles = [
                    {{"name": "test-admin", "scopes": ["admin:users", "admin:servers",
                      "admin:groups", "tokens", "read:roles", "list:services",
                      "read:services", "access:services"],
                      "services": ["test-admin"]}},
                    {{"name": "admin", "services": ["test-admin"]}},
                ]
                """
            )
            + textwrap.dedent(self.extra_config)
        )
        return config

    def start(self, timeout: float = 60) -> None:
        config = self.write_config()
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join(
            [str(ROOT / "node_modules" / ".bin"), str(Path(sys.executable).parent), env["PATH"]]
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(config)],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the hub exited:\n{self.log()}")
            try:
                if self.request("GET", "/")[0] == 200:
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the hub did not start:\n{self.log()}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None
        # The hub stops the proxy it started; make sure, by the pid it wrote.
        pid_file = self.workdir / "jupyterhub-proxy.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                pass

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def request(
        self, method: str, path: str, body: object = None, token: str = ADMIN_TOKEN
    ) -> tuple[int, Any]:
        """A call to the hub's API; returns (status, parsed JSON or None)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.api + path,
            data=data,
            method=method,
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        )
        return _open(request)

    def proxy_request(
        self, method: str, path: str, token: str, body: bytes | None = None
    ) -> tuple[int, Any]:
        """A request through the hub's public proxy (``path`` starts with ``/services/...``)."""
        request = urllib.request.Request(
            self.url + path,
            data=body,
            method=method,
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        )
        return _open(request)

    # -- helpers ----------------------------------------------------------------------------------

    def create_user(self, name: str, groups: tuple[str, ...] = (), admin: bool = False) -> str:
        status, _ = self.request("POST", f"/users/{name}", {"admin": admin})
        assert status in (201, 409), status
        for group in groups:
            self.request("POST", f"/groups/{group}")
            status, _ = self.request("POST", f"/groups/{group}/users", {"users": [name]})
            assert status == 200, status
        status, model = self.request("POST", f"/users/{name}/tokens", {"note": "test"})
        assert status == 201, (status, model)
        return str(model["token"])

    def token_with_scopes(self, user: str, scopes: list[str]) -> str:
        status, model = self.request("POST", f"/users/{user}/tokens", {"scopes": scopes})
        assert status == 201, (status, model)
        return str(model["token"])

    def start_server(self, user: str, name: str, options: dict[str, Any]) -> dict[str, Any]:
        status, body = self.request("POST", f"/users/{user}/servers/{name}", options)
        assert status in (201, 202), (status, body, self.log())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            model = self.server(user, name)
            if model is not None and model["ready"]:
                return model
            time.sleep(0.2)
        raise AssertionError(f"{user}/{name} did not become ready:\n{self.log()}")

    def server(self, user: str, name: str) -> dict[str, Any] | None:
        status, model = self.request("GET", f"/users/{user}")
        assert status == 200, status
        return model["servers"].get(name)

    def stop_all(self) -> None:
        _status, users = self.request("GET", "/users?state=active")
        for user in users or []:
            for name in user.get("servers", {}):
                self.request("DELETE", f"/users/{user['name']}/servers/{name}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            _, users = self.request("GET", "/users?state=active")
            if not users:
                return
            time.sleep(0.2)
