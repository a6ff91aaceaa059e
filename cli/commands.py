"""What each ``berth`` command does. Results go to ``out`` (stdout), progress and notes to
``err`` (stderr), so that ``URL=$(berth launch lab --wait)`` and ``berth list --json | jq`` work."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
import time
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from .client import HubClient
from .config import Login, find_login, normalize_url, remove_login, save_login
from .display import describe_text, duration, list_table, services_text, when
from .errors import CliError, ExitCode
from .progress import Display
from .sessions import (
    SESSION_NAME,
    choose_profile,
    default_name,
    find_service,
    parse_inputs,
    session_view,
)

__all__ = ["COMMANDS", "Context"]


@dataclass
class Context:
    """What a command works with; ``main`` builds it from the command line and environment."""

    args: argparse.Namespace
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    _client: HubClient | None = None
    _user: str | None = None

    def login(self) -> Login:
        login = find_login(self.env)
        if login is None:
            raise CliError(
                "not logged in: run `berth login --url https://your-hub` (or set"
                " JUPYTERHUB_API_URL and JUPYTERHUB_API_TOKEN)",
                ExitCode.AUTH,
            )
        return login

    def client(self) -> HubClient:
        if self._client is None:
            self._client = HubClient(self.login())
        return self._client

    def user(self) -> str:
        """Whose sessions: ``--user``, else the token's owner."""
        if self._user is None:
            chosen = getattr(self.args, "user", None)
            if chosen:
                self._user = str(chosen)
            else:
                model = self.client().whoami()
                if model.get("kind", "user") != "user":
                    raise CliError(
                        f"this token belongs to the service {model['name']!r}, not a person;"
                        " name whose sessions with --user NAME",
                        ExitCode.USAGE,
                    )
                self._user = str(model["name"])
        return self._user

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def json(self, value: object) -> None:
        json.dump(value, self.out, indent=2, sort_keys=False)
        self.out.write("\n")

    def say(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    @property
    def now(self) -> datetime:
        return datetime.now().astimezone()


# -- login -------------------------------------------------------------------------------------


def _interactive() -> bool:
    return sys.stdin.isatty()


def cmd_login(ctx: Context) -> int:
    args = ctx.args
    env = ctx.env
    previous = find_login(env)
    url_text = (
        args.url
        or env.get("BERTH_URL")
        or env.get("JUPYTERHUB_PUBLIC_HUB_URL")
        or env.get("JUPYTERHUB_API_URL")
        or (previous.url if previous else None)
    )
    if not url_text:
        if not _interactive():
            raise CliError(
                "give the hub's address: berth login --url https://hub.example.org", ExitCode.USAGE
            )
        url_text = input("Hub address (https://...): ")
    url = normalize_url(url_text)
    token_page = f"{url}/hub/token"
    if args.token_stdin:
        token = sys.stdin.readline().strip()
    else:
        token = env.get("BERTH_TOKEN") or env.get("JUPYTERHUB_API_TOKEN") or ""
        if not token:
            if not _interactive():
                raise CliError(
                    f"no token: create one at {token_page}, then pipe it in with"
                    " `berth login --token-stdin` or set JUPYTERHUB_API_TOKEN",
                    ExitCode.USAGE,
                )
            token = getpass.getpass(f"API token (create one at {token_page}): ").strip()
    if not token:
        raise CliError(f"the token is empty; create one at {token_page}", ExitCode.USAGE)
    login = Login(url=url, token=token, api_url=f"{url}/hub/api", source="berth login")
    with HubClient(login) as client:
        model = client.whoami()
    if model.get("kind", "user") != "user":
        raise CliError(
            f"this token belongs to the service {model['name']!r}; create a token of your own at"
            f" {token_page}",
            ExitCode.AUTH,
        )
    path = save_login(url, token, env)
    ctx.say(f"Logged in to {url} as {model['name']}. Saved to {path} (readable by you only).")
    return ExitCode.OK


def cmd_logout(ctx: Context) -> int:
    path = remove_login(ctx.env)
    ctx.say(f"Logged out: removed {path}." if path else "Not logged in; nothing to remove.")
    return ExitCode.OK


# -- the catalog -------------------------------------------------------------------------------


def cmd_services(ctx: Context) -> int:
    catalog = ctx.client().catalog(ctx.user())
    if ctx.args.service:
        service = find_service(catalog, ctx.args.service)
        if ctx.args.json:
            ctx.json(service)
        else:
            ctx.out.write(services_text(catalog, ctx.args.service) + "\n")
        return ExitCode.OK
    if ctx.args.json:
        ctx.json(catalog)
    elif not catalog.get("services"):
        ctx.say("This hub offers you no service; ask its admin for access.")
    else:
        ctx.out.write(services_text(catalog) + "\n")
    return ExitCode.OK


# -- sessions ----------------------------------------------------------------------------------


def _servers(ctx: Context) -> dict[str, dict[str, Any]]:
    servers = ctx.client().user_model(ctx.user()).get("servers") or {}
    return {name: server for name, server in servers.items() if name}


def _server(ctx: Context, name: str) -> dict[str, Any]:
    server = _servers(ctx).get(name)
    if server is None:
        raise CliError(f"you have no session named {name!r}; see `berth list`", ExitCode.NOT_FOUND)
    return server


def _latest_event(ctx: Context, name: str) -> dict[str, Any] | None:
    """The last progress event of a starting session (what it is waiting for)."""
    latest = None
    try:
        for event in ctx.client().progress(ctx.user(), name, read_timeout=1.0):
            latest = event
            if event.get("ready") or event.get("failed"):
                break
    except CliError:
        return None
    return latest


def _deadlines(ctx: Context, catalog: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    api = catalog.get("culler_api")
    if not api:
        return {}
    try:
        sessions = ctx.client().culler_sessions(api, ctx.user())
    except CliError as e:
        ctx.say(f"berth: deadlines unavailable: {e.message}")
        return {}
    return {str(s.get("name")): s for s in sessions}


def _view(
    ctx: Context,
    name: str,
    server: Mapping[str, Any],
    catalog: Mapping[str, Any],
    deadline: Mapping[str, Any] | None,
) -> dict[str, Any]:
    event = _latest_event(ctx, name) if server.get("pending") == "spawn" else None
    return session_view(
        name,
        server,
        user=ctx.user(),
        hub_url=ctx.client().login.url,
        catalog=catalog,
        deadline=deadline,
        last_event=event,
    )


def cmd_list(ctx: Context) -> int:
    client = ctx.client()
    servers = _servers(ctx)
    catalog = client.catalog(ctx.user())
    deadlines = _deadlines(ctx, catalog) if servers else {}
    views = [
        _view(ctx, name, server, catalog, deadlines.get(name))
        for name, server in sorted(servers.items())
    ]
    if not ctx.args.all:
        views = [view for view in views if view["state"] != "stopped"]
    if ctx.args.json:
        ctx.json({"user": ctx.user(), "sessions": views})
    elif not views:
        ctx.say("No sessions. Start one with `berth launch <service>` (see `berth services`).")
    else:
        ctx.out.write(list_table(views, ctx.now) + "\n")
    return ExitCode.OK


def _one_view(ctx: Context, name: str) -> dict[str, Any]:
    server = _server(ctx, name)
    client = ctx.client()
    catalog = client.catalog(ctx.user())
    deadline = None
    api = catalog.get("culler_api")
    if api and server.get("ready"):
        try:
            deadline = client.culler_session(api, ctx.user(), name)
        except CliError as e:
            ctx.say(f"berth: deadlines unavailable: {e.message}")
    return _view(ctx, name, server, catalog, deadline)


def cmd_describe(ctx: Context) -> int:
    view = _one_view(ctx, ctx.args.name)
    if ctx.args.json:
        ctx.json(view)
    else:
        ctx.out.write(describe_text(view, ctx.now) + "\n")
    return ExitCode.OK


def _not_running(view: Mapping[str, Any]) -> CliError:
    name = view["name"]
    if view["state"] in ("queued", "starting"):
        progress = view.get("progress") or {}
        detail = f" ({progress['message']})" if progress.get("message") else ""
        return CliError(
            f"{name} is {view['state']}{detail}; wait for it with `berth wait {name}`",
            ExitCode.CONFLICT,
        )
    service = view.get("service") or "<service>"
    return CliError(
        f"{name} is {view['state']}; start it again with `berth launch {service} --name {name}`",
        ExitCode.CONFLICT,
    )


def cmd_url(ctx: Context) -> int:
    view = _one_view(ctx, ctx.args.name)
    if view["state"] != "running":
        raise _not_running(view)
    if ctx.args.json:
        ctx.json({"name": view["name"], "url": view["url"], "open_url": view["open_url"]})
    else:
        ctx.out.write(f"{view['url']}\n")
    if ctx.args.open:
        webbrowser.open(view["open_url"] or view["url"])
    return ExitCode.OK


def _follow(ctx: Context, name: str, timeout: float | None, *, launched: bool) -> None:
    """Show the session's progress until it is ready; raise if it fails, stops or times out."""
    client = ctx.client()
    user = ctx.user()
    deadline = None if timeout is None else time.monotonic() + timeout
    started_here = launched
    live = ctx.err.isatty() and not ctx.env.get("BERTH_NO_LIVE")
    with Display(ctx.err, live=live) as display:
        while True:
            server = _server(ctx, name)
            if server.get("ready"):
                return
            if server.get("pending") != "spawn":
                event = _latest_event(ctx, name)
                if event is not None and event.get("failed"):
                    raise _failed(name, event)
                if not started_here:
                    raise _not_running(session_view(
                        name, server, user=user, hub_url=client.login.url, catalog={}
                    ))  # fmt: skip
                raise CliError(
                    f"{name} stopped before it was ready; see `berth logs {name}` for its output",
                    ExitCode.SESSION_FAILED,
                )
            started_here = True
            remaining = None if deadline is None else deadline - time.monotonic()
            read_timeout = 30.0 if remaining is None else max(0.5, min(30.0, remaining))
            for event in client.progress(user, name, read_timeout=read_timeout):
                display.event(event)
                if event.get("failed"):
                    raise _failed(name, event)
                if event.get("ready"):
                    return
                if deadline is not None and time.monotonic() > deadline:
                    break
            if deadline is not None and time.monotonic() > deadline:
                raise CliError(
                    f"{name} is still {display.phase} after {duration(timeout)}; it goes on: follow"
                    f" it with `berth wait {name}` or give up with `berth stop {name}`",
                    ExitCode.TIMEOUT,
                )
            time.sleep(0.5)


def _failed(name: str, event: Mapping[str, Any]) -> CliError:
    message = str(event.get("message") or "it failed").removeprefix("Spawn failed: ")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    text = lines[0].rstrip(":") if lines else "it failed"
    if len(lines) > 1:
        text = f"{lines[0]} {' / '.join(lines[1:])}"
    return CliError(
        f"{name} failed to start: {text.rstrip('.')}; see `berth logs {name}`",
        ExitCode.SESSION_FAILED,
    )


def _interrupted(name: str) -> CliError:
    return CliError(
        f"stopped waiting; {name} goes on starting: `berth wait {name}` follows it,"
        f" `berth stop {name}` gives up",
        ExitCode.INTERRUPTED,
    )


def _report_ready(ctx: Context, name: str) -> int:
    view = _one_view(ctx, name)
    if ctx.args.json:
        ctx.json(view)
        return ExitCode.OK
    if view["open_url"] and view["open_url"] != view["url"]:
        ctx.say(f"Ready. Open {view['open_url']} in a browser; its address is:")
    else:
        ctx.say("Ready:")
    ctx.out.write(f"{view['url']}\n")
    return ExitCode.OK


def cmd_wait(ctx: Context) -> int:
    name = ctx.args.name
    try:
        _follow(ctx, name, ctx.args.timeout, launched=False)
    except KeyboardInterrupt:
        raise _interrupted(name) from None
    return _report_ready(ctx, name)


def cmd_launch(ctx: Context) -> int:
    args = ctx.args
    if args.profile is not None and (args.gpus is not None or args.gpu_type is not None):
        raise CliError("give either --profile or --gpus/--gpu-type, not both", ExitCode.USAGE)
    if args.name is not None and not SESSION_NAME.match(args.name):
        raise CliError(
            f"{args.name!r} is not a valid session name; use 1-30 lower-case letters, digits and"
            " single '-', starting with a letter (e.g. llm-1)",
            ExitCode.USAGE,
        )
    client = ctx.client()
    user = ctx.user()
    catalog = client.catalog(user)
    service = find_service(catalog, args.service)
    profile = choose_profile(service, profile=args.profile, gpus=args.gpus, gpu_type=args.gpu_type)
    inputs = parse_inputs(service, args.input or [])
    servers = _servers(ctx)
    name = args.name or default_name(service["name"], servers)
    existing = servers.get(name)
    if existing is not None and (existing.get("ready") or existing.get("pending")):
        raise CliError(
            f"you already have a session named {name!r}; choose another --name, or stop it"
            f" with `berth stop {name}`",
            ExitCode.CONFLICT,
        )
    options: dict[str, Any] = {"service": service["name"], "profile": profile["name"]}
    if args.hours is not None:
        options["hours"] = args.hours
    if inputs:
        options["inputs"] = inputs
    try:
        status = client.start(user, name, options)
    except CliError:
        if existing is None:
            # the hub keeps a record of a refused start: leave no name behind
            with contextlib.suppress(CliError):
                if name in _servers(ctx):
                    client.stop(user, name, remove=True)
        raise
    hours = args.hours if args.hours is not None else profile["policy"]["default_seconds"] / 3600
    ctx.say(
        f"Launching {name}: {service['display_name']} on {profile['display_name']}"
        f" ({profile['name']}) for {duration(hours * 3600)}."
    )
    if status == 202 and not args.wait:
        if args.json:
            ctx.json(_one_view(ctx, name))
        else:
            ctx.say(
                f"It is starting. Follow it with `berth wait {name}`; see it with `berth list`."
            )
            ctx.out.write(f"{name}\n")
        return ExitCode.OK
    if status == 202:
        try:
            _follow(ctx, name, args.timeout, launched=True)
        except KeyboardInterrupt:
            raise _interrupted(name) from None
    return _report_ready(ctx, name)


def cmd_stop(ctx: Context) -> int:
    name = ctx.args.name
    server = _server(ctx, name)
    user = ctx.user()
    client = ctx.client()
    active = bool(server.get("ready") or server.get("pending"))
    if not active and not ctx.args.remove:
        ctx.say(f"{name} is already stopped.")
        return ExitCode.OK
    status = client.stop(user, name, remove=ctx.args.remove)
    if status == 202 and not ctx.args.no_wait:
        deadline = time.monotonic() + ctx.args.timeout
        while True:
            current = _servers(ctx).get(name)
            if current is None or not (current.get("ready") or current.get("pending")):
                break
            if time.monotonic() > deadline:
                raise CliError(
                    f"{name} is still stopping after {duration(ctx.args.timeout)}; check it"
                    f" with `berth describe {name}`",
                    ExitCode.TIMEOUT,
                )
            time.sleep(0.5)
    done = "Stopping" if status == 202 and ctx.args.no_wait else "Stopped"
    ctx.say(f"{done} {name}{' and removed it' if ctx.args.remove else ''}.")
    return ExitCode.OK


def cmd_extend(ctx: Context) -> int:
    args = ctx.args
    name = args.name
    if not args.hours > 0:
        raise CliError("--hours must be more than 0, e.g. --hours 1 or --hours 0.5", ExitCode.USAGE)
    client = ctx.client()
    user = ctx.user()
    catalog = client.catalog(user)
    api = catalog.get("culler_api")
    if not api:
        raise CliError(
            "this hub runs no berth-culler, so sessions have no deadline to extend; ask its admin",
            ExitCode.FAILED,
        )
    _server(ctx, name)
    result = client.extend(api, user, name, args.hours, args.reason)
    if args.json:
        ctx.json(result)
        return ExitCode.OK
    now = ctx.now
    extension = result.get("extension") or {}
    text = (
        f"Extended {name} by {duration(result.get('extended_by_seconds'))}: its time ends at"
        f" {when(result.get('hard_deadline'), now)}; {duration(extension.get('left_seconds'))}"
        " of extension left."
    )
    if result.get("ends_because") == "idle" and result.get("idle_deadline"):
        text += f" Unused, it ends sooner: {when(result['idle_deadline'], now)}."
    ctx.out.write(text + "\n")
    return ExitCode.OK


def cmd_logs(ctx: Context) -> int:
    name = ctx.args.name
    body = ctx.client().logs(ctx.user(), name, ctx.args.lines)
    if ctx.args.json:
        ctx.json(body)
        return ExitCode.OK
    lines = body.get("lines") or []
    for line in lines:
        ctx.out.write(f"{line}\n")
    if not lines:
        ctx.say(f"{name} has printed nothing yet.")
    return ExitCode.OK


COMMANDS: dict[str, Callable[[Context], int]] = {
    "login": cmd_login,
    "logout": cmd_logout,
    "services": cmd_services,
    "launch": cmd_launch,
    "list": cmd_list,
    "describe": cmd_describe,
    "url": cmd_url,
    "wait": cmd_wait,
    "extend": cmd_extend,
    "stop": cmd_stop,
    "logs": cmd_logs,
}
