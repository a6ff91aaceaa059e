"""A stand-in for code-server 4.93 (https://github.com/coder/code-server): VS Code in the browser.

code-server's npm package downloads VS Code from the internet when it installs, which these
machines cannot do, so the tests run this instead, with the catalog's own command line:

    python code_server.py --bind-addr=127.0.0.1:PORT --auth=none --disable-telemetry \\
        --disable-update-check --disable-workspace-trust [FOLDER]

What it does as code-server does (read from its src/node/cli.ts, http.ts, routes/ and the
base-path patch it applies to VS Code):

- The command line: every option code-server 4.93 knows (``--opt=value`` or ``--opt value``,
  booleans bare, lists repeatable); an unknown one is an error ("Unknown option --x", exit 1).
  ``--bind-addr`` host:port (a missing port is 80), then ``$PORT`` and ``--port`` override the
  port, as code-server does; ``--socket PATH`` listens on a unix socket instead.
- Everything is served with relative URLs so any path-stripping proxy works: the workbench page at
  ``/`` (also ``/vscode``) links ``./_static/...``, ``./manifest.json`` and
  ``./stable-<commit>/static/...``, each made relative to the depth of the request path; redirects
  are relative too (``/login`` with ``--auth=none`` goes to ``./``; ``/`` goes to
  ``./?folder=<last opened folder>``).
- ``GET /healthz`` is ``{"status": "alive"|"expired", "lastHeartbeat": <ms>}`` (alive within 60 s
  of the last request other than /healthz); a websocket at ``/healthz`` answers each message with
  the same JSON plus ``"event": "health"``.
- Any other websocket is the workbench's connection to its server. Before accepting it,
  code-server compares the ``Origin`` header's host with the request's host, taken from
  ``Forwarded: host=``, else the first ``X-Forwarded-Host``, else ``Host`` (``--trusted-origins``
  are let through); a mismatch is 403 and no socket. The workbench's own protocol is not
  reproduced: the stand-in's socket echoes what it gets.

Not implemented: ``--auth=password`` (refused at start: Berth's catalog uses ``--auth=none`` with
berth-gate doing the login), TLS, the port proxy, extensions. The last opened folder is kept in
memory, not in ``<user-data-dir>/coder.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import WSMsgType, web

VERSION = "4.93.1"
COMMIT = "4f2f4b7a9ccbbe9d5c0fa1ae2c7c3ba0e6f1b2d3"  # a build's commit names its static route
STATIC = f"stable-{COMMIT}/static"
HEARTBEAT_INTERVAL = 60.0

#: code-server 4.93's options: name -> type ("boolean", "string", "string[]", "number", or a
#: tuple of allowed values), and its short aliases
OPTIONS: dict[str, str | tuple[str, ...]] = {
    "auth": ("password", "none"), "password": "string", "hashed-password": "string",
    "cert": "string?", "cert-host": "string", "cert-key": "string", "disable-telemetry": "boolean",
    "disable-update-check": "boolean", "session-socket": "string", "cookie-suffix": "string",
    "disable-file-downloads": "boolean", "disable-file-uploads": "boolean",
    "disable-workspace-trust": "boolean", "disable-getting-started-override": "boolean",
    "disable-proxy": "boolean", "enable": "string[]", "help": "boolean", "json": "boolean",
    "link-protection-trusted-domains": "string[]", "locale": "string", "open": "boolean",
    "bind-addr": "string", "config": "string", "host": "string", "port": "number",
    "socket": "string", "socket-mode": "string", "trusted-origins": "string[]",
    "version": "boolean", "user-data-dir": "string", "extensions-dir": "string",
    "builtin-extensions-dir": "string", "list-extensions": "boolean", "force": "boolean",
    "locate-extension": "string[]", "category": "string", "install-extension": "string[]",
    "enable-proposed-api": "string[]", "uninstall-extension": "string[]",
    "show-versions": "boolean", "github-auth": "string", "proxy-domain": "string[]",
    "skip-auth-preflight": "boolean", "ignore-last-opened": "boolean", "new-window": "boolean",
    "reuse-window": "boolean", "log": ("trace", "debug", "info", "warn", "error"),
    "verbose": "boolean", "app-name": "string", "welcome-text": "string",
    "abs-proxy-base-path": "string", "i18n": "string", "idle-timeout-seconds": "number",
    "reconnection-grace-time": "string",
}  # fmt: skip
SHORT = {
    "h": "help", "v": "version", "e": "ignore-last-opened", "n": "new-window",
    "r": "reuse-window", "vvv": "verbose", "an": "app-name", "w": "welcome-text",
}  # fmt: skip
FROM_ENVIRONMENT_ONLY = {
    "password": "$PASSWORD", "hashed-password": "$HASHED_PASSWORD", "github-auth": "$GITHUB_TOKEN",
}  # fmt: skip


class UsageError(Exception):
    pass


@dataclass
class Args:
    values: dict[str, Any] = field(default_factory=dict)
    folders: list[str] = field(default_factory=list)

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)


def parse(argv: list[str]) -> Args:
    """code-server's own parsing rules (src/node/cli.ts ``parse``)."""
    args = Args()
    ended = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not ended and arg == "--":
            ended = True
            continue
        if ended or not arg.startswith("-"):
            args.folders.append(arg)
            continue
        value: str | None = None
        if arg.startswith("--"):
            key, sep, rest = arg[2:].partition("=")
            value = rest if sep else None
        else:
            key = SHORT.get(arg[1:], "")
        if key not in OPTIONS:
            raise UsageError(f"Unknown option {arg}")
        if key in FROM_ENVIRONMENT_ONLY:
            raise UsageError(
                f"--{key} can only be set in the config file or passed in via"
                f" {FROM_ENVIRONMENT_ONLY[key]}"
            )
        kind = OPTIONS[key]
        if kind == "boolean":
            args.values[key] = True
            continue
        if value is None and i < len(argv) and not argv[i].startswith("-"):
            value = argv[i]
            i += 1
        if not value:
            if kind == "string?":
                args.values[key] = ""
                continue
            raise UsageError(f"--{key} requires a value")
        if kind == "string[]":
            args.values.setdefault(key, []).append(value)
        elif kind == "number":
            try:
                args.values[key] = int(value)
            except ValueError:
                raise UsageError(f"--{key} must be a number") from None
        elif isinstance(kind, tuple):
            if value not in kind:
                raise UsageError(f"{arg} valid values: [{', '.join(kind)}]")
            args.values[key] = value
        else:
            args.values[key] = value
    return args


def bind_address(args: Args, environ: dict[str, str]) -> tuple[str, int]:
    host, port = "localhost", 8080
    if args.get("bind-addr"):
        parts = urlsplit("http://" + args.get("bind-addr"))
        host, port = parts.hostname or "", parts.port or 80
    host = environ.get("CODE_SERVER_HOST") or host
    host = args.get("host") or host
    if environ.get("PORT"):
        port = int(environ["PORT"])
    if args.get("port") is not None:
        port = args.get("port")
    return host, port


# -- relative URLs (code-server's relativeRoot / relativePath / constructRedirectPath) ------------


def _normalize(url: str, keep_trailing: bool = False) -> str:
    url = re.sub(r"//+", "/", url)
    return re.sub(r"/+$", "/" if keep_trailing else "", url)


def relative_root(original_url: str) -> str:
    """'/' -> '.', '/foo/' -> './..': the way back to the root from the request's path."""
    depth = original_url.split("?", 1)[0].count("/")
    return _normalize("./" + ("../" * (depth - 1) if depth > 1 else ""))


def relative_path(original_url: str) -> str:
    """'/' -> '.', '/vscode' -> './vscode': the request's own path, relatively."""
    return _normalize("./" + original_url.split("?", 1)[0].split("/")[-1])


def redirect_path(original_url: str, query: dict[str, str], to: str) -> str:
    path = _normalize(f"{relative_root(original_url)}/{to}", keep_trailing=True)
    encoded = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in query.items())
    encoded = re.sub("%2[fF]", "/", encoded)
    return path + (f"?{encoded}" if encoded else "")


# -- the origin check (code-server's authenticateOrigin) ------------------------------------------


def origin_host(origin: str) -> str:
    """The host of an Origin header as a URL parser gives it (default ports dropped)."""
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise ValueError(f'unable to parse malformed origin "{origin}"')
    host = parts.netloc.rsplit("@", 1)[-1].lower()
    default = {"http": "80", "ws": "80", "https": "443", "wss": "443"}[parts.scheme]
    if host.endswith(":" + default):
        host = host[: -len(default) - 1]
    return host.strip()


def request_host(headers: Any) -> str | None:
    forwarded = headers.get("Forwarded")
    if forwarded:
        for part in re.split(r"[;,]", forwarded):
            key, sep, value = part.partition("=")
            if sep and key.strip().lower() == "host" and value:
                return value.strip().lower()
    x_host = headers.get("X-Forwarded-Host")
    if x_host and x_host.split(",")[0]:
        return x_host.split(",")[0].strip().lower()
    host = headers.get("Host")
    return host.strip().lower() if host else None


def origin_refusal(headers: Any, trusted: list[str]) -> str | None:
    """Why code-server would block this upgrade, or None to let it through."""
    raw = headers.get("Origin")
    if not raw:
        return None  # not a browser
    try:
        origin = origin_host(raw)
    except ValueError as e:
        return str(e)
    if origin in trusted or "*" in trusted:
        return None
    host = request_host(headers)
    if host is None:
        return "no host headers found"
    if host != origin:
        return f'host "{host}" does not match origin "{origin}"'
    return None


# -- pages ----------------------------------------------------------------------------------------

WORKBENCH = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8" />
<title>code-server</title>
<link rel="icon" href="{base}/_static/src/browser/media/favicon-dark-support.svg" />
<link rel="manifest" href="{vs_base}/manifest.json" crossorigin="use-credentials" />
<link rel="stylesheet" href="{static}/out/vs/code/browser/workbench/workbench.css">
<meta id="vscode-workbench-web-configuration" data-settings="{settings}">
</head>
<body aria-label="">
<div id="status">loading</div>
<script src="{static}/out/vs/code/browser/workbench/workbench.js"></script>
</body>
</html>
"""

WORKBENCH_JS = """\
// Stands in for VS Code's workbench: connects to the server the way code-server's patched
// BrowserSocketFactory does (the page's own path, made absolute by the browser).
(function () {
  const status = document.getElementById('status');
  const path = (window.location.pathname + '/' + '/').replace(/\\/\\/+/g, '/');
  const scheme = /^https:/.test(window.location.href) ? 'wss' : 'ws';
  const token = Math.random().toString(36).slice(2);
  const url = `${scheme}://${window.location.host}${path}?reconnectionToken=${token}` +
    '&reconnection=false&skipWebSocketFrames=false';
  const socket = new WebSocket(url);
  socket.onopen = () => socket.send('workbench ' + token);
  socket.onmessage = (event) => {
    status.textContent = 'connected: ' + event.data;
    document.body.dataset.remote = event.data;
  };
  socket.onclose = (event) => { document.body.dataset.closed = String(event.code); };
  fetch('./manifest.json').then((r) => r.json()).then((m) => {
    document.body.dataset.manifest = m.name;
  });
})();
"""

STATIC_FILES = {
    "out/vs/code/browser/workbench/workbench.css": ("text/css", "body { margin: 0; }\n"),
    "out/vs/code/browser/workbench/workbench.js": ("application/javascript", WORKBENCH_JS),
}
MEDIA = {
    "favicon-dark-support.svg": (
        "image/svg+xml",
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" '
        'height="16" fill="#007acc"/></svg>\n',
    ),
    "favicon.ico": ("image/x-icon", ""),
}


class CodeServer:
    def __init__(self, args: Args) -> None:
        self.args = args
        self.trusted: list[str] = args.get("trusted-origins", [])
        self.last_heartbeat = 0.0
        self.last_opened: dict[str, str] = {}
        self.app_name: str = args.get("app-name", "code-server")

    def alive(self) -> bool:
        return time.time() * 1000 - self.last_heartbeat < HEARTBEAT_INTERVAL * 1000

    def beat(self) -> None:
        if not self.alive():
            self.last_heartbeat = time.time() * 1000

    def health(self) -> dict[str, object]:
        return {
            "status": "alive" if self.alive() else "expired",
            "lastHeartbeat": int(self.last_heartbeat),
        }

    @web.middleware
    async def common(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not re.fullmatch(r"/healthz/?", request.path_qs):
            self.beat()
        response: web.StreamResponse = await handler(request)
        return response

    async def route(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
        if path in ("/healthz", "/healthz/"):
            return await (self.health_socket(request) if upgrade else self.healthz(request))
        if upgrade:
            return await self.workbench_socket(request)
        if path in ("/login", "/logout"):  # --auth=none: nothing to log in or out of
            query = dict(request.query)
            return _found(redirect_path(request.path_qs, query, "/"))
        if path.startswith("/_static/src/browser/media/"):
            return _asset(MEDIA.get(path.rsplit("/", 1)[1]))
        if path in ("/", "/vscode", "/vscode/"):
            return self.workbench(request)
        for prefix in ("/vscode", ""):  # VS Code is also served under /vscode
            if path == prefix + "/manifest.json":
                return self.manifest(request)
            if path.startswith(f"{prefix}/{STATIC}/"):
                return _asset(STATIC_FILES.get(path[len(prefix) + len(STATIC) + 2 :]))
        return web.Response(status=404, text="Not Found")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response(self.health())

    async def health_socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await ws.send_str(json.dumps({"event": "health", **self.health()}))
        return ws

    def workbench(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        if "folder" not in query and "workspace" not in query and "ew" not in query:
            last = {} if self.args.get("ignore-last-opened") else self.last_opened
            target: dict[str, str] = {}
            if "folder" in last or "workspace" in last:
                target = {k: last[k] for k in ("folder", "workspace") if k in last}
            elif self.args.folders:
                target = {"folder": os.path.abspath(self.args.folders[-1])}
            if target:
                return _found(redirect_path(request.path_qs, {**query, **target}, request.path))
        self.last_opened = query  # code-server stores the query for the next visit
        original = request.path_qs
        settings = json.dumps({"folderUri": query.get("folder"), "productName": self.app_name})
        page = WORKBENCH.format(
            base=relative_root(original),
            vs_base=relative_path(original),
            static=_normalize(f"{relative_path(original)}/{STATIC}"),
            settings=settings.replace("&", "&amp;").replace('"', "&quot;"),
        )
        return web.Response(text=page, content_type="text/html")

    def manifest(self, request: web.Request) -> web.Response:
        base = relative_root(request.path_qs)
        icons = [
            {"src": f"{base}/_static/src/browser/media/pwa-icon-{n}.png", "sizes": f"{n}x{n}"}
            for n in (192, 512)
        ]
        name = self.app_name
        body = {"name": name, "short_name": name, "start_url": ".", "icons": icons}
        return web.Response(text=json.dumps(body), content_type="application/manifest+json")

    async def workbench_socket(self, request: web.Request) -> web.StreamResponse:
        why = origin_refusal(request.headers, self.trusted)
        if why is not None:
            print(f"[code-server stand-in] {why}; blocking {request.path_qs}", flush=True)
            return web.Response(status=403, text="Forbidden")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data)
        return ws


def _found(location: str) -> web.Response:
    text = f"Found. Redirecting to {location}"
    return web.Response(status=302, headers={"Location": location}, text=text)


def _asset(found: tuple[str, str] | None) -> web.Response:
    if found is None:
        return web.Response(status=404, text="Not Found")
    content_type, body = found
    return web.Response(body=body.encode(), headers={"Content-Type": content_type})


async def serve(args: Args) -> None:
    server = CodeServer(args)
    app = web.Application(middlewares=[server.common])
    app.router.add_route("*", "/{tail:.*}", server.route)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site: web.BaseSite
    if args.get("socket"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.get("socket"))
        site = web.UnixSite(runner, args.get("socket"))
        where = args.get("socket")
    else:
        host, port = bind_address(args, dict(os.environ))
        site = web.TCPSite(runner, host, port)
        where = f"http://{host}:{port}/"
    await site.start()
    print(f"[code-server stand-in] code-server {VERSION} {COMMIT}", flush=True)
    print(f"[code-server stand-in] HTTP server listening on {where}", flush=True)
    print("[code-server stand-in]     - Authentication is disabled", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> int:
    try:
        args = parse(sys.argv[1:])
        if args.get("help") or args.get("version"):
            print(f"{VERSION} {COMMIT} with Code (berth stand-in)")
            return 0
        if args.get("auth", "password") != "none":
            raise UsageError(
                "this stand-in implements --auth=none only (berth-gate does the login in front)"
            )
        if args.get("cert") is not None:
            raise UsageError("this stand-in does not serve TLS (--cert)")
        asyncio.run(serve(args))
    except UsageError as e:
        print(f"[code-server stand-in] error {e}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
