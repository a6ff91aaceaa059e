"""The gate's life: listen, start the service, wait until it answers, serve, stop cleanly.

The gate listens before the service starts, so the hub's spawn check gets a 503 ("not up yet")
until the service answers its readiness path. If the service exits, the gate exits with its code
(after showing why for ``linger`` seconds when it never got ready); on SIGTERM it stops the
service (SIGTERM, then SIGKILL after ``grace``) and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import tempfile
from collections.abc import Mapping

from berth.hub_config.placeholders import PlaceholderError, render

from . import pages
from .activity import ActivityReporter
from .auth import GateAuth
from .config import ConfigError, GateOptions, HubEnvironment
from .headers import Header, PathMap
from .server import ClientConnection
from .service import ServiceProcess
from .upstream import UpstreamPool

__all__ = ["EXIT_NOT_READY", "Gate", "free_port", "service_environment"]

log = logging.getLogger("berth.gate")

#: the gate's exit status when the service never answered within --ready-timeout
EXIT_NOT_READY = 124
#: variables the service does not get: the server's own hub token stays with the gate
_WITHHELD = frozenset({"JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN"})


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the service binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def service_environment(
    environ: Mapping[str, str], names: tuple[str, ...], values: Mapping[str, str]
) -> dict[str, str]:
    """The service's environment: the gate's, without the hub token, with each ``--env``
    variable's runtime placeholders filled. Raises ConfigError naming a bad variable."""
    env = {k: v for k, v in environ.items() if k not in _WITHHELD}
    for name in names:
        if name not in environ:
            raise ConfigError(f"--env {name}: the variable is not set")
        try:
            env[name] = render(environ[name], values)
        except PlaceholderError as e:
            raise ConfigError(f"--env {name}: {e}") from None
    return env


class _Probe:
    """Receives the readiness probe's response head."""

    def __init__(self) -> None:
        self.status: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def response_head(
        self, status: int, reason: bytes, headers: list[Header], upgrade: bool
    ) -> None:
        if not self.status.done():
            self.status.set_result(status)

    def response_body(self, chunk: bytes) -> None:
        pass

    def response_done(self) -> None:
        pass

    def upstream_lost(self, exc: Exception | None) -> None:
        if not self.status.done():
            self.status.set_exception(ConnectionError("closed without answering"))

    def upstream_tunnel(self, leftover: bytes) -> None:
        pass

    def flush(self) -> None:
        pass


class Gate:
    """Everything one gate shares across its connections."""

    def __init__(
        self, options: GateOptions, hub: HubEnvironment, environ: Mapping[str, str]
    ) -> None:
        self.options = options
        self.hub = hub
        self.environ = environ
        self.paths = PathMap(hub.prefix, strip=options.prefix == "strip")
        self.callback_path = hub.callback_path.encode()
        self.auth = GateAuth(hub)
        self.activity = ActivityReporter(
            hub.activity_url,
            hub.api_token,
            hub.server_name,
            interval=options.activity_interval or hub.activity_interval,
        )
        self.max_header_size = options.max_header_size
        self.upstream_timeout = options.upstream_timeout
        self.connections: set[ClientConnection] = set()
        self.ready = False
        self.failure = ""
        self.exit_code: int | None = None
        self.name = hub.server_name or options.command[0]
        self._socket_dir: str | None = None
        self.service: ServiceProcess | None = None
        self.pool = self._make_pool()
        self._stop = asyncio.Event()

    def _make_pool(self) -> UpstreamPool:
        if self.options.transport == "unix":
            self._socket_dir = tempfile.mkdtemp(prefix="berth-gate-")
            return UpstreamPool(unix_socket=os.path.join(self._socket_dir, "service.sock"))
        return UpstreamPool(port=free_port())

    def runtime_values(self) -> dict[str, str]:
        values = {"base_url": self.paths.base, "os_user": pwd.getpwuid(os.getuid()).pw_name}
        if self.pool.unix_socket is not None:
            values["unix_socket"] = self.pool.unix_socket
        else:
            values["port"] = str(self.pool.port)
        return values

    def service_command(self) -> tuple[list[str], dict[str, str]]:
        """The command and environment with runtime placeholders filled (ConfigError if not)."""
        values = self.runtime_values()
        try:
            argv = [render(arg, values) for arg in self.options.command]
        except PlaceholderError as e:
            raise ConfigError(f"the service command: {e}") from None
        return argv, service_environment(self.environ, self.options.env, values)

    def starting_reply(self, *, html: bool, detail: bool) -> pages.Reply:
        service = self.service
        output = list(service.output) if detail and service is not None else []
        return pages.starting(
            self.name,
            html=html,
            retry_after=2,
            output=output,
            exit_code=self.exit_code if self.failure else None,
            failure=self.failure,
        )

    # -- readiness -----------------------------------------------------------------------

    async def probe(self) -> int | None:
        """One GET of the readiness path; the status, or None if the service did not answer."""
        path = self.options.ready_path
        if not self.paths.strip:
            path = self.paths.base + path
        try:
            conn = await self.pool.connect()
        except (TimeoutError, OSError):
            return None
        sink = _Probe()
        conn.begin(sink)
        conn.write(
            f"GET {path} HTTP/1.1\r\nHost: {self.pool.authority}\r\nUser-Agent: berth-gate\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        try:
            return await asyncio.wait_for(sink.status, 10)
        except (TimeoutError, ConnectionError):
            return None
        finally:
            conn.sink = None
            conn.close()

    async def wait_ready(self) -> bool:
        """Probe until the service answers below 500, or --ready-timeout passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.ready_timeout
        delay = 0.05
        while loop.time() < deadline:
            status = await self.probe()
            if status is not None and status < 500:
                return True
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)
        return False

    # -- life ----------------------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        """Serve until the service exits or the gate is told to stop; return the exit status."""
        argv, env = self.service_command()
        loop = asyncio.get_running_loop()
        ip = self.options.ip or self.hub.ip
        port = self.options.port if self.options.port is not None else self.hub.port
        server = await loop.create_server(
            lambda: ClientConnection(self), ip, port, reuse_address=True, backlog=1024
        )
        log.info("Serving %s on http://%s:%d%s", self.name, ip, port, self.paths.prefix)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.request_stop)
        reporter = asyncio.create_task(self.activity.run())
        try:
            return await self._supervise(argv, env)
        finally:
            server.close()
            for conn in list(self.connections):
                conn.close()
            self.pool.close()
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            await self._final_report()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            if self._socket_dir is not None:
                shutil.rmtree(self._socket_dir, ignore_errors=True)

    async def _final_report(self) -> None:
        if self.activity.pending is None or not self.activity.url:
            return
        import aiohttp

        async with aiohttp.ClientSession() as session:
            await self.activity.report(session)

    async def _supervise(self, argv: list[str], env: dict[str, str]) -> int:
        service = self.service = ServiceProcess(argv, env)
        log.info("Starting the service: %s", " ".join(argv))
        try:
            await service.start()
        except OSError as e:
            self.exit_code = 127 if isinstance(e, FileNotFoundError) else 126
            self.failure = f"The service could not start: {e.strerror or e}: {argv[0]}"
            log.error("%s", self.failure)
            await self._linger()
            return self.exit_code
        exited = asyncio.create_task(service.wait())
        stopped = asyncio.create_task(self._stop.wait())
        ready = asyncio.create_task(self.wait_ready())
        try:
            await asyncio.wait({exited, stopped, ready}, return_when=asyncio.FIRST_COMPLETED)
            if ready.done() and not exited.done() and not stopped.done():
                if ready.result():
                    self.ready = True
                    log.info("The service is ready")
                    await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
                else:
                    self.failure = (
                        f"The service did not answer {self.options.ready_path} within "
                        f"{self.options.ready_timeout:g} seconds"
                    )
                    log.error("%s", self.failure)
                    await service.stop(self.options.grace)
                    self.exit_code = EXIT_NOT_READY
                    await self._linger()
                    return EXIT_NOT_READY
            if exited.done():
                code = exited.result()
                self.exit_code = code
                if not self.ready:
                    self.failure = "The service exited before it was ready"
                    log.error("%s (exit code %d)", self.failure, code)
                    await self._linger()
                else:
                    log.info("The service exited with code %d", code)
                return code
            log.info("Stopping on request")
            self.ready = False
            return await service.stop(self.options.grace)
        finally:
            for task in (exited, stopped, ready):
                task.cancel()
            if service.returncode is None:
                await service.stop(self.options.grace)

    async def _linger(self) -> None:
        """Keep answering with the failure page for a while (or until told to stop)."""
        if self.options.linger <= 0:
            return
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.options.linger)
