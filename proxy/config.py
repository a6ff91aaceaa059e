"""What berth-gate is told: its command line, and JupyterHub's single-user environment.

The gate reads the same ``JUPYTERHUB_*`` variables jupyterhub-singleuser reads, so any spawner
that can start a Jupyter server (a local process, a Slurm job, a pod) can start the gate.
Both parsers are pure: they take an argument list or a mapping and raise :class:`ConfigError`
with a sentence naming the setting.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from berth.hub_config.catalog import PrefixMode, Transport

__all__ = ["ConfigError", "GateOptions", "HubEnvironment", "parse_args", "read_environment"]


class ConfigError(ValueError):
    """A setting the gate cannot run with; the message says which and why."""


@dataclass(frozen=True)
class GateOptions:
    command: tuple[str, ...]
    ready_path: str = "/"
    ready_timeout: float = 300.0
    prefix: PrefixMode = "strip"
    transport: Transport = "tcp"
    env: tuple[str, ...] = ()
    #: seconds between SIGTERM and SIGKILL when the service is stopped
    grace: float = 10.0
    #: seconds to keep showing the "failed to start" page before exiting
    linger: float = 10.0
    #: seconds the service has to send its response head once it has the whole request (a body
    #: still arriving sets its own pace), before the gate answers 504
    upstream_timeout: float = 300.0
    #: the longest request line plus headers a client may send, in bytes
    max_header_size: int = 65536
    #: seconds between activity reports to the hub (only sent when there was traffic)
    activity_interval: float | None = None
    #: where the gate listens; by default the host and port of JUPYTERHUB_SERVICE_URL
    ip: str | None = None
    port: int | None = None
    log_level: str = "INFO"


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def _ready_path(text: str) -> str:
    if not text.startswith("/"):
        raise argparse.ArgumentTypeError(f"{text!r} must start with '/'")
    return text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="berth-gate",
        description=(
            "Run a web service behind JupyterHub's login at the session's URL prefix. "
            "Reads JupyterHub's single-user environment (JUPYTERHUB_SERVICE_URL, "
            "JUPYTERHUB_SERVICE_PREFIX, JUPYTERHUB_API_TOKEN, ...)."
        ),
        usage="berth-gate [options] -- command [args...]",
    )
    add = parser.add_argument
    add(
        "--ready-path",
        type=_ready_path,
        default="/",
        help="path the service answers once it is up (default: /)",
    )
    add(
        "--ready-timeout",
        type=_positive,
        default=300.0,
        help="seconds to wait for the service to answer (default: 300)",
    )
    add(
        "--prefix",
        choices=("strip", "keep"),
        default="strip",
        help="strip the session prefix from paths, or keep it (default: strip)",
    )
    add(
        "--transport",
        choices=("tcp", "unix"),
        default="tcp",
        help="the service listens on a loopback TCP port or a unix socket (default: tcp)",
    )
    add(
        "--env",
        action="append",
        default=[],
        metavar="NAME",
        help="an environment variable whose {port}/{unix_socket}/{base_url} to fill; repeatable",
    )
    add(
        "--grace",
        type=_positive,
        default=10.0,
        help="seconds between SIGTERM and SIGKILL when stopping the service (default: 10)",
    )
    add(
        "--linger",
        type=float,
        default=10.0,
        help="seconds to keep showing why the service failed to start before exiting (default: 10)",
    )
    add(
        "--upstream-timeout",
        type=_positive,
        default=300.0,
        help="seconds the service has to start its answer once it has the whole request, before"
        " the gate answers 504 (default: 300)",
    )
    add(
        "--max-header-size",
        type=int,
        default=65536,
        help="largest request line plus headers accepted, in bytes; more gets 431 (default: 65536)",
    )
    add(
        "--activity-interval",
        type=_positive,
        default=None,
        help="seconds between activity reports to the hub, sent only after traffic "
        "(default: $JUPYTERHUB_ACTIVITY_INTERVAL or 60)",
    )
    add("--ip", default=None, help="address to listen on (default: from JUPYTERHUB_SERVICE_URL)")
    add(
        "--port",
        type=int,
        default=None,
        help="port to listen on (default: from JUPYTERHUB_SERVICE_URL)",
    )
    add("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def parse_args(argv: Sequence[str]) -> GateOptions:
    """Parse ``berth-gate [options] -- command...``; the command is everything after ``--``."""
    argv = list(argv)
    if "--" not in argv:
        raise ConfigError("no service command: put it after '--' (berth-gate [options] -- command)")
    split = argv.index("--")
    command = tuple(argv[split + 1 :])
    if not command:
        raise ConfigError("the service command after '--' is empty")
    ns = _parser().parse_args(argv[:split])
    for name in ns.env:
        if not name or "=" in name:
            raise ConfigError(f"--env takes a variable name, not {name!r}")
    if ns.max_header_size < 1024:
        raise ConfigError("--max-header-size must be at least 1024 bytes")
    if ns.linger < 0:
        raise ConfigError("--linger cannot be negative")
    return GateOptions(
        command=command,
        ready_path=ns.ready_path,
        ready_timeout=ns.ready_timeout,
        prefix=ns.prefix,
        transport=ns.transport,
        env=tuple(ns.env),
        grace=ns.grace,
        linger=ns.linger,
        upstream_timeout=ns.upstream_timeout,
        max_header_size=ns.max_header_size,
        activity_interval=ns.activity_interval,
        ip=ns.ip,
        port=ns.port,
        log_level=ns.log_level,
    )


@dataclass(frozen=True)
class HubEnvironment:
    """JupyterHub's single-user environment, checked."""

    service_url: str
    ip: str
    port: int
    prefix: str
    api_token: str
    api_url: str
    client_id: str
    oauth_callback_url: str
    access_scopes: frozenset[str]
    activity_url: str
    user: str
    server_name: str
    hub_prefix: str
    activity_interval: float
    cookie_options: Mapping[str, object]

    @property
    def callback_path(self) -> str:
        """The OAuth callback's path (the gate answers it itself)."""
        return urlsplit(self.oauth_callback_url).path

    @property
    def display_name(self) -> str:
        return self.server_name or "the server"


def _require(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not value:
        raise ConfigError(
            f"${name} is not set: berth-gate is started by a JupyterHub spawner, which sets it"
        )
    return value


def read_environment(env: Mapping[str, str]) -> HubEnvironment:
    """Read the ``JUPYTERHUB_*`` variables a spawner sets for a single-user server."""
    service_url = _require(env, "JUPYTERHUB_SERVICE_URL")
    parts = urlsplit(service_url)
    if parts.scheme != "http" or not parts.hostname:
        raise ConfigError(
            f"$JUPYTERHUB_SERVICE_URL must be an http:// URL with a host, not {service_url!r}"
        )
    try:
        port = parts.port or 80
    except ValueError:
        raise ConfigError(f"$JUPYTERHUB_SERVICE_URL has a bad port: {service_url!r}") from None
    prefix = env.get("JUPYTERHUB_SERVICE_PREFIX") or parts.path or "/"
    if not prefix.startswith("/"):
        raise ConfigError(f"$JUPYTERHUB_SERVICE_PREFIX must start with '/', not {prefix!r}")
    if not prefix.endswith("/"):
        prefix += "/"
    scopes_text = env.get("JUPYTERHUB_OAUTH_ACCESS_SCOPES") or env.get("JUPYTERHUB_OAUTH_SCOPES")
    if not scopes_text:
        raise ConfigError(
            "$JUPYTERHUB_OAUTH_ACCESS_SCOPES is not set: without it the gate cannot tell who may"
            " use this server"
        )
    try:
        scopes = json.loads(scopes_text)
    except json.JSONDecodeError:
        raise ConfigError("$JUPYTERHUB_OAUTH_ACCESS_SCOPES is not a JSON list") from None
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        raise ConfigError("$JUPYTERHUB_OAUTH_ACCESS_SCOPES must be a non-empty JSON list of scopes")
    interval_text = env.get("JUPYTERHUB_ACTIVITY_INTERVAL", "60")
    try:
        interval = float(interval_text)
    except ValueError:
        raise ConfigError(
            f"$JUPYTERHUB_ACTIVITY_INTERVAL must be seconds, not {interval_text!r}"
        ) from None
    cookie_text = env.get("JUPYTERHUB_COOKIE_OPTIONS", "")
    try:
        cookie_options = json.loads(cookie_text) if cookie_text else {}
    except json.JSONDecodeError:
        raise ConfigError("$JUPYTERHUB_COOKIE_OPTIONS is not JSON") from None
    base_url = env.get("JUPYTERHUB_BASE_URL", "/")
    return HubEnvironment(
        service_url=service_url,
        ip=parts.hostname,
        port=port,
        prefix=prefix,
        api_token=_require(env, "JUPYTERHUB_API_TOKEN"),
        api_url=_require(env, "JUPYTERHUB_API_URL"),
        client_id=_require(env, "JUPYTERHUB_CLIENT_ID"),
        oauth_callback_url=env.get("JUPYTERHUB_OAUTH_CALLBACK_URL") or prefix + "oauth_callback",
        access_scopes=frozenset(scopes),
        activity_url=env.get("JUPYTERHUB_ACTIVITY_URL", ""),
        user=env.get("JUPYTERHUB_USER", ""),
        server_name=env.get("JUPYTERHUB_SERVER_NAME", ""),
        hub_prefix=env.get("JUPYTERHUB_HUB_PREFIX") or base_url.rstrip("/") + "/hub/",
        activity_interval=interval,
        cookie_options=cookie_options if isinstance(cookie_options, dict) else {},
    )
