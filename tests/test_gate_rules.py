"""berth-gate's pure parts against literal expected output: header and path rules, its command
line (as the launch spec writes it), JupyterHub's environment, pages, cookies, activity."""

from __future__ import annotations

import json
import platform

import pytest
from aiohttp import ClientSession, web

from berth.hub_config.loader import load_catalog
from berth.proxy import pages
from berth.proxy.activity import ActivityReporter
from berth.proxy.auth import GateAuth, cookies_of, is_cross_site
from berth.proxy.config import ConfigError, GateOptions, parse_args, read_environment
from berth.proxy.gate import service_environment
from berth.proxy.headers import (
    PathMap,
    public_location,
    request_headers,
    response_headers,
    wants_html,
)
from berth.proxy.memory import keep_read_buffers
from berth.spawners.options import validate_user_options
from berth.spawners.spec import build_launch_spec

from .gatekit import EXAMPLE_CATALOG, free_port, gate_environment

STRIP = PathMap("/user/alice/llm/", strip=True)
KEEP = PathMap("/user/alice/term/", strip=False)


def test_paths_strip_and_keep() -> None:
    assert STRIP.base == "/user/alice/llm"
    assert STRIP.upstream_target(b"/user/alice/llm/v1/models?x=1") == b"/v1/models?x=1"
    assert STRIP.upstream_target(b"/user/alice/llm/") == b"/"
    assert STRIP.upstream_target(b"/user/alice/llmx/") is None
    assert STRIP.upstream_target(b"/user/bob/llm/") is None
    assert KEEP.upstream_target(b"/user/alice/term/ws") == b"/user/alice/term/ws"
    assert STRIP.public_path("/login") == "/user/alice/llm/login"
    assert STRIP.public_path("/user/alice/llm/docs") == "/user/alice/llm/docs"
    assert KEEP.public_path("/login") == "/login"


def test_request_headers() -> None:
    headers = [
        (b"Host", b"hub.example.org"),
        (b"Connection", b"keep-alive, X-Secret"),
        (b"X-Secret", b"hop"),
        (b"Keep-Alive", b"timeout=5"),
        (b"TE", b"trailers"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Content-Length", b"5"),
        (b"Proxy-Authorization", b"Basic x"),
        (b"Authorization", b"token abc"),
        (b"Accept", b"text/html"),
        (b"X-Forwarded-For", b"10.0.0.9"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"hub.example.org"),
        (b"Cookie", b"a=b"),
    ]
    assert request_headers(
        headers,
        upstream_host=b"127.0.0.1:4000",
        client_ip="127.0.0.1",
        prefix=b"/user/alice/llm/",
        drop=frozenset({b"authorization"}),
    ) == [
        (b"Host", b"127.0.0.1:4000"),
        (b"Accept", b"text/html"),
        (b"Cookie", b"a=b"),
        (b"X-Forwarded-For", b"10.0.0.9, 127.0.0.1"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"hub.example.org"),
        (b"X-Forwarded-Prefix", b"/user/alice/llm"),
    ]


def test_request_headers_for_an_upgrade() -> None:
    headers = [
        (b"Host", b"127.0.0.1:8000"),
        (b"Connection", b"Upgrade"),
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Key", b"k"),
        (b"Sec-WebSocket-Protocol", b"tty"),
    ]
    assert request_headers(
        headers, upstream_host=b"localhost", client_ip="10.1.2.3", prefix=b"/p/", upgrade=True
    ) == [
        (b"Host", b"localhost"),
        (b"Sec-WebSocket-Key", b"k"),
        (b"Sec-WebSocket-Protocol", b"tty"),
        (b"X-Forwarded-For", b"10.1.2.3"),
        (b"X-Forwarded-Proto", b"http"),
        (b"X-Forwarded-Host", b"127.0.0.1:8000"),
        (b"X-Forwarded-Prefix", b"/p"),
        (b"Connection", b"Upgrade"),
        (b"Upgrade", b"websocket"),
    ]


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/login?next=%2F", "/user/alice/llm/login?next=%2F"),
        ("http://127.0.0.1:4000/docs#x", "/user/alice/llm/docs#x"),
        ("http://127.0.0.1:4000/user/alice/llm/docs", "/user/alice/llm/docs"),
        ("https://accounts.example.org/auth", "https://accounts.example.org/auth"),
        ("http://127.0.0.1:5000/other", "http://127.0.0.1:5000/other"),
        ("relative/path", "relative/path"),
        ("//cdn.example.org/x", "//cdn.example.org/x"),
        ("/user/alice/llm/", "/user/alice/llm/"),
    ],
)
def test_public_location(location: str, expected: str) -> None:
    assert public_location(location, upstream_authority="127.0.0.1:4000", paths=STRIP) == expected


def test_response_headers() -> None:
    headers = [
        (b"Content-Type", b"text/plain"),
        (b"Content-Length", b"12"),
        (b"Connection", b"close"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Location", b"/next"),
        (b"Set-Cookie", b"s=1; Path=/"),
    ]
    assert response_headers(headers, upstream_authority="127.0.0.1:1", paths=STRIP) == [
        (b"Content-Type", b"text/plain"),
        (b"Location", b"/user/alice/llm/next"),
        (b"Set-Cookie", b"s=1; Path=/"),
    ]


def test_wants_html() -> None:
    assert wants_html([(b"Accept", b"text/html,application/xhtml+xml,*/*;q=0.8")])
    assert not wants_html([(b"Accept", b"application/json")])
    assert not wants_html([])


def _example_argv(service: str, inputs: dict[str, object] | None = None) -> tuple[str, ...]:
    catalog = load_catalog(EXAMPLE_CATALOG)
    profile = catalog.services[service].profiles[0]
    options = {"service": service, "profile": profile, "inputs": inputs or {}}
    selection = validate_user_options(catalog, options, groups=[])
    return build_launch_spec(selection, "alice", "s1").argv


def test_parses_what_the_launch_spec_writes() -> None:
    argv = _example_argv("vllm", {"model": "org/model"})
    assert argv[0] == "berth-gate"
    assert parse_args(argv[1:]) == GateOptions(
        command=(
            "vllm", "serve", "org/model", "--host=127.0.0.1", "--port={port}",
            "--root-path={base_url}", "--tensor-parallel-size=1", "--max-model-len=8192",
        ),
        ready_path="/health",
        ready_timeout=1200.0,
        prefix="strip",
        transport="tcp",
    )  # fmt: skip
    ollama = parse_args(_example_argv("ollama")[1:])
    assert ollama.env == ("OLLAMA_HOST",)
    assert ollama.command == ("ollama", "serve")
    terminal = parse_args(_example_argv("terminal")[1:])
    assert terminal.prefix == "keep"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--prefix", "strip"], "no service command"),
        (["--"], "is empty"),
        (["--prefix", "sideways", "--", "x"], "invalid choice: 'sideways'"),
        (["--ready-timeout", "-1", "--", "x"], "must be more than 0"),
        (["--ready-path", "health", "--", "x"], "must start with '/'"),
        (["--env", "A=B", "--", "x"], "takes a variable name"),
    ],
)
def test_bad_command_lines(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_args(argv)


def test_reads_the_single_user_environment() -> None:
    env = gate_environment("http://127.0.0.1:8081", 5555, "/user/alice/web/")
    hub = read_environment(env)
    assert (hub.ip, hub.port, hub.prefix) == ("127.0.0.1", 5555, "/user/alice/web/")
    assert hub.callback_path == "/user/alice/web/oauth_callback"
    assert hub.access_scopes == {"access:servers!server=alice/web", "access:servers!user=alice"}
    assert hub.hub_prefix == "/hub/"
    assert hub.activity_url == "http://127.0.0.1:8081/hub/api/users/alice/activity"
    del env["JUPYTERHUB_API_TOKEN"]
    with pytest.raises(ConfigError, match=r"\$JUPYTERHUB_API_TOKEN is not set"):
        read_environment(env)
    env["JUPYTERHUB_API_TOKEN"] = "t"
    env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"] = "[]"
    with pytest.raises(ConfigError, match="non-empty JSON list"):
        read_environment(env)


def test_service_environment() -> None:
    environ = {
        "PATH": "/bin",
        "JUPYTERHUB_API_TOKEN": "secret",
        "OLLAMA_HOST": "127.0.0.1:{port}",
        "KEEP": "{literal}",
        "BRACES": "{{x}}{base_url}",
    }
    values = {"port": "4000", "base_url": "/user/a/o"}
    assert service_environment(environ, ("OLLAMA_HOST", "BRACES"), values) == {
        "PATH": "/bin",
        "OLLAMA_HOST": "127.0.0.1:4000",
        "KEEP": "{literal}",
        "BRACES": "{x}/user/a/o",
    }
    with pytest.raises(ConfigError, match=r"--env KEEP: no value for placeholder '\{literal\}'"):
        service_environment(environ, ("KEEP",), values)
    with pytest.raises(ConfigError, match="--env MISSING: the variable is not set"):
        service_environment(environ, ("MISSING",), values)


def test_starting_pages() -> None:
    reply = pages.starting("llm", html=False, retry_after=2)
    assert reply.status == 503
    assert (b"Retry-After", b"2") in reply.headers
    assert json.loads(reply.body) == {
        "error": "llm is starting; this page reloads by itself.",
        "status": 503,
        "state": "starting",
    }
    page = pages.starting("llm", html=True, retry_after=2, output=["loading <weights>"])
    assert b'<meta http-equiv="refresh" content="2">' in page.body
    assert b"loading &lt;weights&gt;" in page.body
    failed = pages.starting("llm", html=False, retry_after=2, output=["boom"], exit_code=3,
                            failure="The service exited before it was ready")  # fmt: skip
    assert json.loads(failed.body) == {
        "error": "The service exited before it was ready (exit code 3)",
        "status": 503,
        "state": "failed",
        "output": ["boom"],
        "exit_code": 3,
    }


def test_cookies_and_cross_site() -> None:
    assert cookies_of([(b"Cookie", b'a=1; bad; b="2"; a=3')]) == {"a": "1", "b": "2"}
    same = [(b"Host", b"hub.org"), (b"Origin", b"https://hub.org")]
    other = [(b"Host", b"hub.org"), (b"Origin", b"https://evil.org")]
    assert not is_cross_site(b"POST", same, upgrade=False)
    assert is_cross_site(b"POST", other, upgrade=False)
    assert is_cross_site(b"GET", other, upgrade=True)
    assert not is_cross_site(b"GET", other, upgrade=False)
    proxied = [(b"Host", b"127.0.0.1:9"), (b"X-Forwarded-Host", b"hub.org"),
               (b"Origin", b"https://hub.org")]  # fmt: skip
    assert not is_cross_site(b"PUT", proxied, upgrade=False)
    assert is_cross_site(b"DELETE", [(b"Sec-Fetch-Site", b"cross-site")], upgrade=False)
    assert not is_cross_site(b"DELETE", [(b"Sec-Fetch-Site", b"same-origin")], upgrade=False)


def test_login_cookie_round_trip_and_tampering() -> None:
    auth = GateAuth(read_environment(gate_environment("http://127.0.0.1:1", 5555)))
    login = auth.login("/user/alice/web/lab?x=1", {}, secure=True)
    assert login.status == 302
    location = dict(login.headers)[b"Location"].decode()
    assert location.startswith("/hub/api/oauth2/authorize?client_id=jupyterhub-user-alice-web")
    assert "code_challenge_method=S256" in location
    cookie = dict(login.headers)[b"Set-Cookie"].decode()
    assert cookie.startswith("jupyterhub-user-alice-web-oauth-state=")
    assert "; Path=/user/alice/web/; HttpOnly; SameSite=Lax; Max-Age=600; Secure" in cookie
    signed = auth._signed(auth.cookie_name, "the-token")
    assert auth.token_from_cookie({auth.cookie_name: signed}) == "the-token"
    assert auth.token_from_cookie({auth.cookie_name: signed.replace("|", "|x", 1)}) is None
    assert auth.token_from_header(b"Bearer abc") == "abc"
    assert auth.token_from_header(b"token abc") == "abc"
    assert auth.token_from_header(b"Basic abc") is None


async def test_activity_is_reported_only_after_traffic() -> None:
    received: list[dict[str, object]] = []

    async def activity(request: web.Request) -> web.Response:
        assert request.headers["Authorization"] == "token api-token"
        received.append(await request.json())
        return web.Response()

    app = web.Application()
    app.router.add_post("/hub/api/users/alice/activity", activity)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    now = [1_700_000_000.0]
    reporter = ActivityReporter(f"http://127.0.0.1:{port}/hub/api/users/alice/activity",
                                "api-token", "llm", clock=lambda: now[0])  # fmt: skip
    try:
        async with ClientSession() as session:
            assert not await reporter.report(session)  # nothing happened: nothing is sent
            reporter.touch()
            now[0] += 30
            reporter.touch()  # the latest traffic is what counts
            assert await reporter.report(session)
            assert not await reporter.report(session)  # quiet again
    finally:
        await runner.cleanup()
    stamp = "2023-11-14T22:13:50Z"
    assert received == [{"last_activity": stamp, "servers": {"llm": {"last_activity": stamp}}}]


def test_read_buffers_are_kept_unless_an_admin_tuned_the_allocator() -> None:
    assert keep_read_buffers({}) is (platform.libc_ver()[0] == "glibc")
    assert keep_read_buffers({"MALLOC_TRIM_THRESHOLD_": "0"}) is False
    assert keep_read_buffers({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"}) is False
