"""A real JupyterHub, with the real configurable-http-proxy, for tests.

:func:`start_hub` writes a jupyterhub_config.py into a temporary directory (free loopback ports,
sqlite, a shared-password login, an admin API token for the test), starts ``jupyterhub`` as a
subprocess and waits until it answers. :class:`Hub` talks to it over HTTP like a user or a
script would. Every process the hub starts (proxy, sessions) is found again and ended at the end,
even after the hub itself was killed: each carries ``BERTH_TEST_HUB=<marker>`` in its environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CATALOG = ROOT / "hub_config" / "examples" / "berth.yaml"
CHP = ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
USER_PASSWORD = "berth-user-pw"
ADMIN_PASSWORD = "berth-admin-password-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


CONFIG_TEMPLATE = """\
import berth.hub_config
c = get_config()
{catalog_line}
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.ConfigurableHTTPProxy.auth_token = {proxy_token!r}
c.ConfigurableHTTPProxy.pid_file = {proxy_pid!r}
c.JupyterHub.db_url = {db_url!r}
c.JupyterHub.cookie_secret_file = {cookie_secret!r}
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = {user_password!r}
c.SharedPasswordAuthenticator.admin_password = {admin_password!r}
c.Authenticator.admin_users = {{"admin"}}
c.Authenticator.allow_all = True
# append: configure() above registered berth-culler's service and role
c.JupyterHub.services.append({{"name": "berth-test", "api_token": {admin_token!r}}})
c.JupyterHub.load_roles.append({{"name": "admin", "services": ["berth-test"]}})
c.JupyterHub.cleanup_servers = True
c.Spawner.env_keep = [
    "PATH", "PYTHONPATH", "VIRTUAL_ENV", "LANG", "LC_ALL", "JUPYTERHUB_SINGLEUSER_APP",
    "BERTH_TEST_HUB",
]
c.Spawner.start_timeout = 120
c.BerthLocalSpawner.work_dir_template = {work_dir!r}
c.BerthLocalSpawner.run_as = {run_as!r}
{extra}
"""


@dataclass
class Hub:
    """A running hub and how to reach it."""

    dir: Path
    config_file: Path
    port: int
    admin_token: str
    marker: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.dir / "jupyterhub.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/hub/api"

    # -- life -----------------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(self.config_file)],
                cwd=self.dir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"jupyterhub exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.api_url}/", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"jupyterhub did not answer in {timeout}s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the hub alone (its proxy and sessions live on), as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 30) -> None:
        """Stop the hub as an admin would (SIGTERM), then make sure nothing it started lives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.kill_leftovers()
        shutil.rmtree(Path(tempfile.gettempdir()) / f"berth-test-{self.marker}", ignore_errors=True)

    def kill_leftovers(self) -> list[int]:
        """End every process carrying this hub's marker; return their pids."""
        killed = []
        for pid in marked_processes(self.marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        return killed

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace")

    # -- API ------------------------------------------------------------------------------------

    def api(
        self, method: str, path: str, *, token: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        headers["Authorization"] = f"token {token or self.admin_token}"
        return httpx.request(method, f"{self.api_url}{path}", headers=headers, timeout=30, **kwargs)

    def create_user(self, name: str, *, admin: bool = False, groups: tuple[str, ...] = ()) -> None:
        r = self.api("POST", f"/users/{quote(name)}", json={"admin": admin})
        assert r.status_code in (201, 409), r.text
        for group in groups:
            r = self.api("POST", f"/groups/{quote(group)}")
            assert r.status_code in (201, 409), r.text
            r = self.api("POST", f"/groups/{quote(group)}/users", json={"users": [name]})
            assert r.status_code == 200, r.text

    def token(self, name: str, scopes: list[str] | None = None) -> str:
        body: dict[str, Any] = {"note": "test"}
        if scopes is not None:
            body["scopes"] = scopes
        r = self.api("POST", f"/users/{quote(name)}/tokens", json=body)
        assert r.status_code == 201, r.text
        token: str = r.json()["token"]
        return token

    def start_session(
        self,
        user: str,
        session: str,
        user_options: dict[str, Any] | None = None,
        *,
        token: str | None = None,
    ) -> httpx.Response:
        body = {"user_options": user_options} if user_options is not None else {}
        return self.api(
            "POST", f"/users/{quote(user)}/servers/{quote(session)}", token=token, json=body
        )

    def server(self, user: str, session: str) -> dict[str, Any] | None:
        r = self.api("GET", f"/users/{quote(user)}", params={"include_stopped_servers": "1"})
        assert r.status_code == 200, r.text
        servers: dict[str, Any] = r.json().get("servers", {})
        return servers.get(session)

    def wait_ready(self, user: str, session: str, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            server = self.server(user, session)
            if server and server.get("ready"):
                return server
            if server is None or not server.get("pending"):
                raise AssertionError(
                    f"session {user}/{session} is not starting: {server}\n{self.log_tail()}"
                )
            time.sleep(0.25)
        raise TimeoutError(f"{user}/{session} not ready in {timeout}s\n{self.log_tail()}")

    def stop_session(self, user: str, session: str, *, remove: bool = False) -> None:
        r = self.api(
            "DELETE",
            f"/users/{quote(user)}/servers/{quote(session)}",
            json={"remove": remove},
        )
        assert r.status_code in (202, 204), r.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            server = self.server(user, session)
            if server is None or server.get("stopped"):
                return
            time.sleep(0.2)
        raise TimeoutError(f"{user}/{session} did not stop")

    def progress_messages(
        self, user: str, session: str, until: str, timeout: float = 120
    ) -> list[str]:
        """Read the hub's progress event stream (as the pending page and ``berth launch --wait``
        do) until a message contains ``until``, the session is ready or failed, or it ends."""
        messages: list[str] = []
        url = f"{self.api_url}/users/{quote(user)}/servers/{quote(session)}/progress"
        headers = {"Authorization": f"token {self.admin_token}"}
        with httpx.stream("GET", url, headers=headers, timeout=timeout) as response:
            assert response.status_code == 200, response.read()
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                messages.append(event.get("message", ""))
                if until in messages[-1] or event.get("ready") or event.get("failed"):
                    break
        return messages

    def session_processes(self, session: str | None = None) -> set[int]:
        """This hub's processes serving a session (``session``, or any): local processes, and
        Slurm jobs' or the Kubernetes stand-in's on this machine. The proxy is not one.

        One per session: its top process. What a session's process starts (a kernel, a helper
        it runs for a moment) inherits its environment but is counted with it, not beside it;
        a child left behind by a session that ended has a new parent and is counted again."""
        pids = set()
        for pid in marked_processes(self.marker):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            names = [e[len(b"JUPYTERHUB_SERVER_NAME=") :] for e in environ
                     if e.startswith(b"JUPYTERHUB_SERVER_NAME=")]  # fmt: skip
            if names and (session is None or names[0] == session.encode()):
                pids.add(pid)
        return {pid for pid in pids if parent_pid(pid) not in pids}

    # -- as a browser or a program through the proxy --------------------------------------------

    def get(self, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"token {token}"
        return httpx.get(f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    @contextlib.contextmanager
    def login(self, user: str, password: str | None = None) -> Iterator[httpx.Client]:
        """An HTTP client logged in through the hub's login form, as a browser would be."""
        with httpx.Client(base_url=self.url, timeout=30, follow_redirects=True) as client:
            self._log_in(client, user, password)
            yield client

    def _log_in(self, client: httpx.Client, user: str, password: str | None) -> None:
        page = client.get("/hub/login")
        match = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        xsrf = match.group(1) if match else client.cookies.get("_xsrf", "")
        password = password or (ADMIN_PASSWORD if user == "admin" else USER_PASSWORD)
        r = client.post(
            "/hub/login",
            data={"username": user, "password": password, "_xsrf": xsrf},
            follow_redirects=False,
        )
        assert r.status_code == 302, f"login as {user} failed: {r.status_code}"


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` (None once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
    return int(stat.rsplit(")", 1)[1].split()[1])


def marked_processes(marker: str) -> list[int]:
    """Pids of processes whose environment holds ``BERTH_TEST_HUB=<marker>``."""
    needle = f"BERTH_TEST_HUB={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def make_hub(
    directory: Path,
    *,
    catalog: Path | str | None = EXAMPLE_CATALOG,
    extra_config: str = "",
    env: dict[str, str] | None = None,
) -> Hub:
    """Write the hub's config into ``directory``; ``catalog=None`` leaves Berth to extra_config."""
    directory.mkdir(parents=True, exist_ok=True)
    marker = secrets.token_hex(8)
    admin_token = secrets.token_hex(16)
    port = free_port()
    if catalog is None:
        catalog_line = ""
    else:
        if isinstance(catalog, str):
            path = directory / "berth.yaml"
            path.write_text(catalog)
            catalog = path
        catalog_line = f"berth.hub_config.configure(c, {str(catalog)!r})"
    config = CONFIG_TEMPLATE.format(
        catalog_line=catalog_line,
        port=port,
        hub_port=free_port(),
        proxy_api_port=free_port(),
        chp=str(CHP),
        proxy_token=secrets.token_hex(16),
        proxy_pid=str(directory / "proxy.pid"),
        db_url=f"sqlite:///{directory / 'jupyterhub.sqlite'}",
        cookie_secret=str(directory / "cookie_secret"),
        user_password=USER_PASSWORD,
        admin_password=ADMIN_PASSWORD,
        admin_token=admin_token,
        # outside pytest's private (0700) temporary tree, so the session account can enter it
        work_dir=str(Path(tempfile.gettempdir()) / f"berth-test-{marker}" / "{username}"),
        run_as="berth" if os.geteuid() == 0 else "",
        extra=extra_config,
    )
    config_file = directory / "jupyterhub_config.py"
    config_file.write_text(config)
    bin_dir = str(Path(sys.executable).parent)
    hub_env = {
        **os.environ,
        "PATH": f"{bin_dir}:{CHP.parent}:{os.environ.get('PATH', '')}",
        "BERTH_TEST_HUB": marker,
        **(env or {}),
    }
    return Hub(directory, config_file, port, admin_token, marker, hub_env)


@contextlib.contextmanager
def running_hub(directory: Path, **kwargs: Any) -> Iterator[Hub]:
    hub = make_hub(directory, **kwargs)
    try:
        hub.start()
        yield hub
    finally:
        hub.stop()
