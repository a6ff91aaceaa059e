"""A stand-in for RStudio Server's ``rserver`` (2024.x, https://github.com/rstudio/rstudio).

RStudio Server is not installable here (no Debian package; its .deb comes from Posit's site), so
the tests run this instead, with the catalog's own command line:

    python rserver.py --www-address=127.0.0.1 --www-port=PORT --www-root-path=/user/a/s \\
        --auth-none=1 --www-frame-origin=same --www-verify-user-agent=0 --server-user=ACCOUNT \\
        --server-daemonize=0 --server-data-dir=/tmp/rstudio-a-s

What it does as rserver does (read from RStudio's ServerOptions.cpp, core/http Request.cpp and
Response.cpp, the auth handlers, and the reports of people running it behind proxies):

- Options are ``--name=value`` or ``--name value`` (boost program_options); booleans take
  1/0/true/false/yes/no/on/off; an unknown option is an error (exit 1).
- ``--server-user``: run by root, the account must exist (rserver then runs as it); run by anyone
  else, it must be that very account: "Attempt to run server as user 'x' (uid n) from account
  'y' (uid m) without privilege, which is required to run as a different uid", exit 1. This is
  why the catalog passes ``{os_user}``, the account berth-gate runs as.
- ``--server-data-dir`` is created if missing and must be a writable directory; the pid file
  lives there while the server runs.
- URLs it generates are absolute and use the root path (``--www-root-path``, or a proxy's
  ``X-RStudio-Root-Path`` header): with a root path other than ``/`` the base URI is the proxied
  one, ``<X-Forwarded-Proto>://<X-Forwarded-Host, else Host><root path>/<path>``, and every
  redirect is completed against it. So: ``/`` without a sign-in cookie redirects to
  ``<base>/auth-sign-in?appUri=%2F``; with ``--auth-none=1``, ``/auth-sign-in`` sets the
  ``user-id`` and ``csrf-token`` cookies with ``Path=<root path>`` and redirects to ``./``
  completed against the base (``http://host/<root path>/``); ``/auth-sign-out`` clears them.
  With the cookie, ``/`` is the IDE's page.
- ``--www-frame-origin=same`` adds ``X-Frame-Options: SAMEORIGIN``; ``--www-verify-user-agent=1``
  refuses Internet Explorer.
- ``/rpc/<method>`` (POST) needs the sign-in cookie and an ``X-CSRF-Token`` header equal to the
  ``csrf-token`` cookie, as RStudio's RPCs do; ``/rpc/get_session_info`` answers the user and
  the root path. Everything else is 404.

Not implemented: PAM sign-in (``--auth-none=0`` is refused), daemonizing (``--server-daemonize=1``
is refused), R sessions themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import pwd
import secrets
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urljoin

from aiohttp import web

VERSION = "2024.09.0+375"
USER_COOKIE = "user-id"
CSRF_COOKIE = "csrf-token"

#: rserver's options this stand-in knows: name -> kind ("bool", "int" or "str")
OPTIONS = {
    "server-user": "str", "server-daemonize": "bool", "server-data-dir": "str",
    "server-working-dir": "str", "server-pid-file": "str", "server-app-armor-enabled": "bool",
    "server-set-umask": "bool", "server-health-check-enabled": "bool",
    "www-address": "str", "www-port": "str", "www-root-path": "str", "www-frame-origin": "str",
    "www-verify-user-agent": "bool", "www-thread-pool-size": "int", "www-same-site": "str",
    "www-enable-origin-check": "bool", "www-allow-origin": "str", "www-proxy-localhost": "bool",
    "www-local-path": "str", "auth-none": "bool", "auth-validate-users": "bool",
    "auth-minimum-user-id": "int", "auth-timeout-minutes": "int", "auth-stay-signed-in-days": "int",
    "auth-encrypt-password": "bool", "auth-cookies-force-secure": "bool",
    "auth-required-user-group": "str", "rsession-which-r": "str", "rsession-path": "str",
    "rsession-ld-library-path": "str", "rsession-config-file": "str",
    "database-config-file": "str", "secure-cookie-key-file": "str", "config-file": "str",
}  # fmt: skip
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off"}


class ConfigError(Exception):
    pass


def parse(argv: list[str], *, root: bool) -> dict[str, object]:
    defaults: dict[str, object] = {
        "server-user": "rstudio-server",
        "server-daemonize": root,
        "server-data-dir": "/var/run/rstudio-server",
        "www-address": "0.0.0.0",
        "www-port": "",
        "www-root-path": "/",
        "www-frame-origin": "none",
        "www-verify-user-agent": True,
        "auth-none": not root,
    }
    values = dict(defaults)
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith("--"):
            raise ConfigError(f"too many positional options have been specified: '{arg}'")
        name, sep, value = arg[2:].partition("=")
        if name not in OPTIONS:
            raise ConfigError(f"unrecognised option '--{name}'")
        if not sep:
            if i >= len(argv):
                raise ConfigError(f"the required argument for option '--{name}' is missing")
            value = argv[i]
            i += 1
        kind = OPTIONS[name]
        if kind == "bool":
            if value.lower() not in TRUE | FALSE:
                raise ConfigError(f"the argument ('{value}') for option '--{name}' is invalid")
            values[name] = value.lower() in TRUE
        elif kind == "int":
            try:
                values[name] = int(value)
            except ValueError:
                raise ConfigError(
                    f"the argument ('{value}') for option '--{name}' is invalid"
                ) from None
        else:
            values[name] = value
    return values


def check_server_user(name: str) -> pwd.struct_passwd:
    """The account rserver will run as, refused as rserver refuses it."""
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"Server user {name} does not exist") from None
    uid = os.geteuid()
    if uid != 0 and account.pw_uid != uid:
        me = pwd.getpwuid(uid).pw_name
        raise ConfigError(
            f"Attempt to run server as user '{name}' (uid {account.pw_uid}) from account"
            f" '{me}' (uid {uid}) without privilege, which is required to run as a different uid"
        )
    return account


def root_path(configured: str, header: str | None) -> str:
    """RStudio's Request::rootPath(): the proxy's header, else the option; '/x/' -> '/x'."""
    path = header or configured
    if not path.startswith("/"):
        path = "/" + path
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path


@dataclass
class Settings:
    root_path: str
    frame_origin: str
    verify_user_agent: bool
    user: str


class RServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.signed_in: set[str] = set()

    def root(self, request: web.Request) -> str:
        return root_path(self.settings.root_path, request.headers.get("X-RStudio-Root-Path"))

    def base_uri(self, request: web.Request) -> str:
        """Request::baseUri(): the URL the browser shows when a root path is set (proxied),
        the internal one otherwise."""
        proto = request.headers.get("X-Forwarded-Proto", "http").split(",")[0].strip() or "http"
        root = self.root(request)
        if root == "/":
            return f"{proto}://{request.headers.get('Host', '')}{request.path_qs}"
        host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
        if host:
            port = request.headers.get("X-Forwarded-Port", "")
            if port:
                host = host.rsplit(":", 1)[0] + ":" + port if ":" in host else f"{host}:{port}"
        else:
            host = request.headers.get("Host", "")
        return f"{proto}://{host}{root}{request.path_qs}"

    def moved(self, request: web.Request, location: str) -> web.Response:
        """Response::setMovedTemporarily: the location completed against the base URI."""
        uri = urljoin(self.base_uri(request), location.splitlines()[0] if location else "")
        return web.Response(
            status=302, headers={"Location": uri}, text=uri, content_type="text/html"
        )

    def user_of(self, request: web.Request) -> str | None:
        value = request.cookies.get(USER_COOKIE)
        return self.settings.user if value is not None and value in self.signed_in else None

    @web.middleware
    async def headers(self, request: web.Request, handler: object) -> web.StreamResponse:
        settings = self.settings
        if settings.verify_user_agent and "MSIE" in request.headers.get("User-Agent", ""):
            return web.Response(
                status=200, text="<h1>Unsupported browser</h1>", content_type="text/html"
            )
        response: web.StreamResponse = await handler(request)  # type: ignore[operator]
        if settings.frame_origin == "same":
            response.headers["X-Frame-Options"] = "SAMEORIGIN"
        elif settings.frame_origin not in ("none", "any"):
            response.headers["Content-Security-Policy"] = (
                f"frame-ancestors 'self' {settings.frame_origin}"
            )
        return response

    async def route(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path == "/auth-sign-in":
            return self.sign_in(request)
        if path == "/auth-sign-out":
            return self.sign_out(request)
        if path.startswith("/rpc/") and request.method == "POST":
            return await self.rpc(request)
        if path == "/" and request.method in ("GET", "HEAD"):
            if self.user_of(request) is None:
                return self.moved(request, "./auth-sign-in?appUri=" + quote(path, safe=""))
            return self.main_page(request)
        return web.Response(status=404, text=f"{path} not found", content_type="text/html")

    def sign_in(self, request: web.Request) -> web.Response:
        # --auth-none=1: sign the server's user in without asking
        token = secrets.token_hex(16)
        self.signed_in.add(token)
        response = self.moved(request, "./")
        path = self.root(request)
        response.set_cookie(USER_COOKIE, token, path=path, httponly=True, samesite="Lax")
        response.set_cookie(CSRF_COOKIE, secrets.token_hex(16), path=path, samesite="Lax")
        return response

    def sign_out(self, request: web.Request) -> web.Response:
        self.signed_in.discard(request.cookies.get(USER_COOKIE, ""))
        response = self.moved(request, "./auth-sign-in")
        response.del_cookie(USER_COOKIE, path=self.root(request))
        response.del_cookie(CSRF_COOKIE, path=self.root(request))
        return response

    def main_page(self, request: web.Request) -> web.Response:
        page = (
            "<!DOCTYPE html><html><head><title>RStudio Server</title>"
            '<script src="rstudio/rstudio.nocache.js"></script></head>'
            f'<body data-user="{self.settings.user}" data-root="{self.root(request)}">'
            "RStudio Server (berth stand-in)</body></html>"
        )
        response = web.Response(text=page, content_type="text/html")
        response.headers["Cache-Control"] = "no-cache, no-store, max-age=0, must-revalidate"
        return response

    async def rpc(self, request: web.Request) -> web.Response:
        if self.user_of(request) is None:
            return web.json_response({"error": {"code": 2, "message": "unauthorized"}}, status=401)
        csrf = request.cookies.get(CSRF_COOKIE)
        if not csrf or request.headers.get("X-CSRF-Token") != csrf:
            return web.Response(status=403, text="Missing or invalid CSRF token")
        if request.path != "/rpc/get_session_info":
            return web.json_response({"error": {"code": 3, "message": "unknown method"}})
        info = {"user": self.settings.user, "root_path": self.root(request)}
        return web.json_response({"result": info})


def listen_host(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise ConfigError(f"invalid www-address: {address}") from None


async def serve(host: str, port: int, server: RServer) -> None:
    app = web.Application(middlewares=[server.headers])
    app.router.add_route("*", "/{tail:.*}", server.route)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    print(f"[rserver stand-in] rserver {VERSION} listening on {host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> int:
    try:
        options = parse(sys.argv[1:], root=os.geteuid() == 0)
        account = check_server_user(str(options["server-user"]))
        if options["server-daemonize"]:
            raise ConfigError("this stand-in does not daemonize: pass --server-daemonize=0")
        if not options["auth-none"]:
            raise ConfigError("this stand-in has no PAM sign-in: pass --auth-none=1")
        host = listen_host(str(options["www-address"]))
        port_text = str(options["www-port"]) or "8787"
        if not port_text.isdigit():
            raise ConfigError(f"invalid www-port: {port_text}")
        port = int(port_text)
        data_dir = Path(str(options["server-data-dir"]))
        try:
            data_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
            if os.geteuid() == 0 and account.pw_uid != 0:
                os.chown(data_dir, account.pw_uid, account.pw_gid)
                os.setgid(account.pw_gid)
                os.setuid(account.pw_uid)
            pid_file = data_dir / "rserver.pid"
            pid_file.write_text(f"{os.getpid()}\n")
        except OSError as e:
            raise ConfigError(f"system error {e.errno} ({e.strerror}) [path: {data_dir}]") from e
        settings = Settings(
            root_path=str(options["www-root-path"]),
            frame_origin=str(options["www-frame-origin"]),
            verify_user_agent=bool(options["www-verify-user-agent"]),
            user=account.pw_name,
        )
        try:
            asyncio.run(serve(host, port, RServer(settings)))
        finally:
            with contextlib.suppress(FileNotFoundError):
                pid_file.unlink()
    except ConfigError as e:
        print(f"[rserver] ERROR {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
