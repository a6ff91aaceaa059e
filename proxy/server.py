"""The client side of the gate: HTTP/1.1 parsed by httptools, each request checked and proxied.

One :class:`ClientConnection` per client connection. Request heads are parsed as bytes arrive and
served in order: the gate checks the login, answers itself when it must (not signed in, starting,
errors) or opens an :class:`Exchange` with the service. When nothing needs waiting for (the
login's answer is cached, a kept-alive connection to the service is free) this all happens in the
parser's callback and the exchange reports back by callback; otherwise the request runs as a task
(:meth:`ClientConnection._serve`) that waits for the hub or for a new connection. Bodies are never
collected: upload chunks go to the service as they are parsed, response chunks to the client as
they arrive, and each side pauses reading while the other's writes back up. A websocket upgrade
that the service accepts turns both connections into a byte pipe.

Timeouts (waiting for a request's head, an idle kept-alive connection, the service's answer) use
one lazily re-armed timer per connection: arming only records a deadline, and the timer, when it
fires early, sets itself again for the latest deadline. Most requests create no timer at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeAlias, cast

import httptools

from . import pages
from .auth import AuthError, Decision, cookies_of, is_cross_site
from .headers import Header, request_headers, response_headers, wants_html

if TYPE_CHECKING:
    from .gate import Gate
    from .upstream import UpstreamConnection

__all__ = ["ClientConnection", "Request"]

log = logging.getLogger("berth.gate")

_NO_BODY_STATUS = frozenset({204, 304})
_BODY_BUFFER = 256 * 1024
_KEEPALIVE_IDLE = 75.0
_HEADER_TIMEOUT = 60.0
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_NO_DROP: frozenset[bytes] = frozenset()
_DROP_AUTHORIZATION = frozenset({b"authorization"})
#: a timer that fires this much before its deadline (clock granularity) counts as on time
_TIMER_SLACK = 0.005


class _HeadersTooLarge(Exception):
    pass


class Request:
    """One parsed request head, and its body as it arrives."""

    __slots__ = (
        "body",
        "body_done",
        "chunked",
        "content_length",
        "early",
        "exchange",
        "expect_continue",
        "headers",
        "keep_alive",
        "method",
        "sink",
        "target",
        "upgrade",
        "version",
        "waiter",
    )

    def __init__(self) -> None:
        self.target = b""
        self.headers: list[Header] = []
        self.method = b""
        self.version = "1.1"
        self.keep_alive = True
        self.upgrade = False
        self.content_length: int | None = None
        self.chunked = False
        self.expect_continue = False
        self.body: deque[bytes] = deque()
        self.body_done = False
        #: where body chunks go once the exchange has started (None: buffer them)
        self.sink: UpstreamConnection | None = None
        #: the exchange the body streams to, told when the body is complete
        self.exchange: Exchange | None = None
        self.waiter: asyncio.Future[None] | None = None
        #: bytes that followed an upgrade request's head
        self.early = b""

    @property
    def has_body(self) -> bool:
        return self.chunked or bool(self.content_length)

    def header(self, wanted: bytes) -> bytes | None:
        for name, value in self.headers:
            if name.lower() == wanted:
                return value
        return None


class _Pending:
    """What a request waits for before the gate can go on: the hub's answer about a token, or
    the hub's side of the OAuth callback."""

    __slots__ = ("callback", "token", "upstream_target", "via_cookie")

    def __init__(
        self, upstream_target: bytes, token: str = "", *, via_cookie: bool, callback: bool
    ) -> None:
        self.upstream_target = upstream_target
        self.token = token
        self.via_cookie = via_cookie
        self.callback = callback


#: how a request goes on: answered by the gate (whether the connection stays open), an exchange
#: with the service to start, or something to wait for first
Plan: TypeAlias = "bool | _Pending | Exchange"


class ClientConnection(asyncio.Protocol):
    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = ""
        self.parsing: Request | None = None
        self.queue: deque[Request] = deque()
        #: the request being served, when it waits for something (hub, new connection)
        self.task: asyncio.Task[None] | None = None
        #: the request being served, when it went straight to the service
        self.exchange: Exchange | None = None
        #: a request arrived while none was being served: serve it once the read is parsed
        self._start_pending = False
        self.closed = False
        self.header_size = 0
        self.buffered = 0
        self.reading_paused = False
        #: after an upgrade: the service transport bytes go to
        self.pipe: asyncio.Transport | None = None
        #: the transport whose reading pauses when writes to this client back up
        self.peer: asyncio.Transport | None = None
        self._drain: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0
        self._on_deadline: Callable[[], None] | None = None

    @property
    def busy(self) -> bool:
        """A request is being served."""
        return self.task is not None or self.exchange is not None

    # -- asyncio -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        peer = self.transport.get_extra_info("peername")
        self.client_ip = peer[0] if isinstance(peer, tuple) and peer else "127.0.0.1"
        self.gate.connections.add(self)
        self._arm(_HEADER_TIMEOUT, self._idle_timeout)

    def _arm(self, seconds: float, action: Callable[[], None]) -> None:
        """Call ``action`` in ``seconds`` unless re-armed or disarmed before."""
        deadline = self.loop.time() + seconds
        self._deadline = deadline
        self._on_deadline = action
        if self._timer is None or self._timer_at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(deadline, self._expire)
            self._timer_at = deadline

    def _disarm(self) -> None:
        self._on_deadline = None

    def _expire(self) -> None:
        self._timer = None
        action = self._on_deadline
        if action is None or self.closed:
            return
        if self._deadline - self.loop.time() > _TIMER_SLACK:  # re-armed since: wait on
            self._timer = self.loop.call_at(self._deadline, self._expire)
            self._timer_at = self._deadline
            return
        self._on_deadline = None
        action()

    def _idle_timeout(self) -> None:
        if not self.busy and self.pipe is None:
            self.close()

    def data_received(self, data: bytes) -> None:
        if self.pipe is not None:
            self.gate.activity.touch()
            self.pipe.write(data)
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            offset = e.args[0] if e.args else len(data)
            request = self.queue[-1] if self.queue else None
            if request is not None and request.upgrade:
                request.early = data[offset:]
                self._pause_reading()  # the rest belongs to the tunnel, if there is one
            else:
                self._refuse(400, "This upgrade request is not understood.")
        except httptools.HttpParserCallbackError as e:
            if isinstance(e.__context__, _HeadersTooLarge):
                self._refuse(431, "The request's headers are too large.")
            else:
                log.exception("Request parsing failed")
                self._refuse(400, "The request could not be read.")
        except httptools.HttpParserError:
            self._refuse(400, "The request is not valid HTTP/1.1.")
        if self._start_pending:
            # after the whole read is parsed, so a body that came with the head is complete
            self._start_pending = False
            if not self.busy:
                self._start_next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.gate.connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.pipe is not None:
            self.pipe.close()
            self.pipe = None
        if self.task is not None:
            self.task.cancel()
        for request in self.queue:
            if request.sink is not None:
                request.sink.close()
        self._wake_drain()

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading()
        self._wake_drain()

    def _wake_drain(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        # also undoes a pause the service side made for flow control
        if self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.parsing = Request()
        self.header_size = 0
        if not self.busy:
            self._arm(_HEADER_TIMEOUT, self._idle_timeout)

    def on_url(self, url: bytes) -> None:
        assert self.parsing is not None
        self.parsing.target += url
        self.header_size += len(url)
        if self.header_size > self.gate.max_header_size:
            raise _HeadersTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.parsing is not None
        self.header_size += len(name) + len(value) + 4
        if self.header_size > self.gate.max_header_size:
            raise _HeadersTooLarge
        self.parsing.headers.append((name, value))

    def on_headers_complete(self) -> None:
        request = self.parsing
        assert request is not None
        parser = self.parser
        request.method = parser.get_method()
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        request.upgrade = parser.should_upgrade()
        for name, value in request.headers:
            lower = name.lower()
            if lower == b"content-length":
                with contextlib.suppress(ValueError):
                    request.content_length = int(value)
            elif lower == b"transfer-encoding":
                request.chunked = b"chunked" in value.lower()
            elif lower == b"expect":
                request.expect_continue = value.strip().lower() == b"100-continue"
        self.queue.append(request)
        if not self.busy:
            self._start_pending = True

    def on_body(self, chunk: bytes) -> None:
        request = self.parsing
        if request is None or not chunk:
            return
        sink = request.sink
        if sink is not None and not sink.closed:
            if request.chunked:
                sink.transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))  # type: ignore[union-attr]
            else:
                sink.write(chunk)
            return
        request.body.append(chunk)
        self.buffered += len(chunk)
        if self.buffered > _BODY_BUFFER:
            self._pause_reading()
        if request.waiter is not None and not request.waiter.done():
            request.waiter.set_result(None)

    def on_message_complete(self) -> None:
        request = self.parsing
        if request is None:
            return
        request.body_done = True
        sink = request.sink
        if sink is not None and not sink.closed and request.chunked:
            sink.write(b"0\r\n\r\n")
        if request.exchange is not None:
            request.exchange.body_sent()
        if request.waiter is not None and not request.waiter.done():
            request.waiter.set_result(None)
        self.parsing = None

    # -- serving -------------------------------------------------------------------------

    def _start_next(self) -> None:
        """Serve the queued requests in order: at once while nothing needs waiting for, else
        in a task; when none is left, wait for the next one (keep-alive)."""
        self.task = None
        while self.queue and not self.closed:
            request = self.queue[0]
            self._disarm()
            try:
                plan = self._plan(request)
                if isinstance(plan, bool):
                    if self._finish(request, plan):
                        continue
                    return
                if isinstance(plan, Exchange) and not request.upgrade:
                    conn = self.gate.pool.take_idle()
                    if conn is not None:
                        self.exchange = plan
                        plan.start(conn, self._exchange_done)
                        return
            except Exception:
                self._failed(request)
                return
            self.task = self.loop.create_task(self._serve(request, plan))
            return
        if not self.closed:
            self._arm(_KEEPALIVE_IDLE, self._idle_timeout)

    def _finish(self, request: Request, keep: bool) -> bool:
        """A request is over; whether the connection goes on to the next one."""
        if self.closed or self.pipe is not None:
            return False
        if self.queue and self.queue[0] is request:
            self.queue.popleft()
        if not keep or not request.body_done:
            self.close()
            return False
        self.buffered = 0
        self._resume_reading()
        return True

    def _failed(self, request: Request) -> None:
        log.exception("Unexpected error serving %s", request.target[:200])
        reply = pages.error(
            500, "The gate failed on this request.", html=wants_html(request.headers)
        )
        self._send_reply(request, reply, close=True)

    def _exchange_done(self, exchange: Exchange, keep: bool | None) -> None:
        """An exchange started without a task is over (``None``: its kept-alive connection had
        been closed by the service; it is tried once more on a new one)."""
        self.exchange = None
        self.peer = None
        self._disarm()
        request = exchange.request
        if keep is None:
            retry = Exchange(self, request, exchange.target, exchange.headers)
            if not self.closed:
                self.task = self.loop.create_task(self._serve(request, retry))
            return
        if self._finish(request, keep):
            self._start_next()

    async def _serve(self, request: Request, plan: Plan) -> None:
        try:
            keep = await self._handle(request, plan)
        except asyncio.CancelledError:
            return
        except Exception:
            self._failed(request)
            return
        if self._finish(request, keep):
            self._start_next()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.closed:
            self.transport.write(data)

    async def drain(self) -> None:
        transport = self.transport
        if transport is None or self.closed or transport.get_write_buffer_size() <= 65536:
            return
        self._drain = asyncio.get_running_loop().create_future()
        await self._drain
        self._drain = None

    def _refuse(self, status: int, message: str) -> None:
        """Answer a request that could not be parsed, then close (the stream is out of step)."""
        if self.busy or self.queue or self.closed:  # earlier requests are owed their answers
            self.close()
            return
        headers = self.parsing.headers if self.parsing is not None else []
        reply = pages.error(status, message, html=wants_html(headers))
        self._write_reply(reply, head_only=False, close=True, version="1.1")
        self.close()

    def _write_reply(
        self, reply: pages.Reply, *, head_only: bool, close: bool, version: str
    ) -> None:
        lines = [b"HTTP/1.1 %d %s" % (reply.status, reply.reason.encode())]
        lines += [name + b": " + value for name, value in reply.headers]
        lines.append(b"Content-Length: %d" % len(reply.body))
        if close:
            lines.append(b"Connection: close")
        elif version == "1.0":
            lines.append(b"Connection: keep-alive")
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        self.write(head if head_only or not reply.body else head + reply.body)

    def _send_reply(self, request: Request, reply: pages.Reply, *, close: bool = False) -> bool:
        """Answer from the gate itself; returns whether the connection stays open."""
        # A body the client is still sending (or waiting to send) is not wanted: close after.
        close = (
            close
            or not request.keep_alive
            or request.upgrade
            or (request.has_body and not request.body_done)
        )
        self._write_reply(
            reply, head_only=request.method == b"HEAD", close=close, version=request.version
        )
        return not close

    def _error(self, request: Request, status: int, message: str) -> bool:
        reply = pages.error(status, message, html=wants_html(request.headers))
        return self._send_reply(request, reply)

    def _plan(self, request: Request) -> Plan:
        """What can be decided about a request without waiting: the gate's own answer (already
        sent), the exchange to run, or what to wait for first."""
        gate = self.gate
        if request.method == b"CONNECT":
            return self._error(request, 405, "CONNECT is not served here.")
        target = request.target
        upstream_target = gate.paths.upstream_target(target)
        if upstream_target is None:
            path = target.split(b"?", 1)[0]
            if path == gate.paths.base.encode():
                query = target[len(path) :].decode("latin-1")
                return self._send_reply(request, pages.redirect(gate.paths.prefix + query))
            return self._error(request, 404, f"This server only answers under {gate.paths.prefix}")
        gate.activity.touch()
        if target.split(b"?", 1)[0] == gate.callback_path:
            return _Pending(upstream_target, via_cookie=False, callback=True)

        # Who is asking: a token in the Authorization header, else the login cookie.
        auth = gate.auth
        token: str | None = None
        via_cookie = False
        authorization = request.header(b"authorization")
        if authorization is not None:
            token = auth.token_from_header(authorization)
        if token is None:
            token = auth.token_from_cookie(cookies_of(request.headers))
            via_cookie = token is not None
        decision: Decision | None = None
        if token is not None:
            hit, decision = auth.cached(token)
            if not hit:
                return _Pending(upstream_target, token, via_cookie=via_cookie, callback=False)
        return self._after_auth(request, upstream_target, decision, via_cookie=via_cookie)

    def _after_auth(
        self,
        request: Request,
        upstream_target: bytes,
        decision: Decision | None,
        *,
        via_cookie: bool,
    ) -> bool | Exchange:
        """The rest once the hub has said who is asking (``decision`` None: nobody)."""
        gate = self.gate
        allowed = decision is not None and decision.allowed
        if not gate.ready:
            # JupyterHub's spawn check reads 5xx as "not up yet"; only people allowed to use the
            # session see the service's own output.
            html = wants_html(request.headers)
            return self._send_reply(request, gate.starting_reply(html=html, detail=allowed))
        if not allowed:
            if decision is not None:
                who = f"{decision.kind.capitalize()} {decision.name}"
                return self._error(request, 403, f"{who} may not use this server.")
            if request.upgrade:
                return self._error(request, 403, "Sign in first.")
            html = wants_html(request.headers)
            if html and request.method == b"GET":
                secure = _forwarded_proto(request.headers) == b"https"
                cookies = cookies_of(request.headers)
                login = gate.auth.login(request.target.decode("latin-1"), cookies, secure=secure)
                return self._send_reply(request, login)
            message = "Sign in, or send 'Authorization: token <your hub token>'."
            reply = pages.error(401, message, html=html)
            challenge = (b"WWW-Authenticate", b'Bearer realm="JupyterHub"')
            return self._send_reply(
                request, pages.Reply(401, reply.body, (*reply.headers, challenge))
            )
        if via_cookie and is_cross_site(request.method, request.headers, upgrade=request.upgrade):
            return self._error(
                request, 403, "A request from another site cannot use your login here."
            )

        # The hub credential the gate used stays here: the service never sees the user's token.
        headers = request_headers(
            _without_login_cookie(request.headers, gate.auth.cookie_name),
            upstream_host=gate.pool.authority_bytes,
            client_ip=self.client_ip,
            prefix=gate.paths.prefix_bytes,
            drop=_NO_DROP if via_cookie or decision is None else _DROP_AUTHORIZATION,
            upgrade=request.upgrade,
        )
        if request.expect_continue and not request.body_done:
            self.write(_CONTINUE)
        return Exchange(self, request, upstream_target, headers)

    async def _handle(self, request: Request, plan: Plan) -> bool:
        """Wait for what the plan needs, then run the exchange; whether to keep the connection."""
        if isinstance(plan, _Pending):
            auth = self.gate.auth
            html = wants_html(request.headers)
            if plan.callback:
                target = request.target
                query = target.split(b"?", 1)[1].decode("latin-1") if b"?" in target else ""
                secure = _forwarded_proto(request.headers) == b"https"
                cookies = cookies_of(request.headers)
                reply = await auth.callback(query, cookies, secure=secure, html=html)
                return self._send_reply(request, reply)
            try:
                decision = await auth.decide(plan.token)
            except AuthError as e:
                log.warning("%s", e)
                return self._error(
                    request, 502, "The hub did not answer the login check; try again shortly."
                )
            plan = self._after_auth(
                request, plan.upstream_target, decision, via_cookie=plan.via_cookie
            )
        if isinstance(plan, bool):
            return plan
        return await plan.run()


def _forwarded_proto(headers: list[Header]) -> bytes:
    for name, value in headers:
        if name.lower() == b"x-forwarded-proto":
            return value.split(b",")[0].strip().lower()
    return b"http"


def _without_login_cookie(headers: list[Header], cookie_name: str) -> list[Header]:
    """The request headers with the gate's own login cookie taken out of ``Cookie``."""
    marker = cookie_name.encode() + b"="
    out: list[Header] = []
    for name, value in headers:
        if name.lower() == b"cookie" and marker in value:
            kept = [p for p in value.split(b";") if not p.strip().startswith(marker)]
            if not kept:
                continue
            value = b";".join(kept).strip()
        out.append((name, value))
    return out


class Exchange:
    """One request forwarded to the service and its response streamed back."""

    __slots__ = (
        "chunked_out",
        "client",
        "conn",
        "done",
        "eof_ends",
        "finish",
        "head_sent",
        "headers",
        "keep",
        "length_out",
        "out",
        "request",
        "settled",
        "target",
    )

    def __init__(
        self, client: ClientConnection, request: Request, target: bytes, headers: list[Header]
    ) -> None:
        self.client = client
        self.request = request
        self.target = target
        self.headers = headers
        self.conn: UpstreamConnection | None = None
        #: how the outcome is reported: a future :meth:`run` awaits, or a callback
        self.done: asyncio.Future[bool] | None = None
        self.finish: Callable[[Exchange, bool | None], None] | None = None
        self.settled = False
        self.head_sent = False
        self.chunked_out = False
        #: the response is framed by closing the connection (HTTP/1.0 client, no length)
        self.length_out = True
        #: the service frames its body by closing the connection
        self.eof_ends = False
        self.keep = request.keep_alive
        #: response bytes produced by one read from the service, written to the client together
        self.out: list[bytes] = []

    def _head(self) -> bytes:
        request = self.request
        lines = [request.method + b" " + self.target + b" HTTP/1.1"]
        lines += [name + b": " + value for name, value in self.headers]
        if request.chunked:
            lines.append(b"Transfer-Encoding: chunked")
        elif request.content_length is not None:
            lines.append(b"Content-Length: %d" % request.content_length)
        elif request.method in (b"POST", b"PUT", b"PATCH"):
            lines.append(b"Content-Length: 0")
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def start(
        self,
        conn: UpstreamConnection,
        finish: Callable[[Exchange, bool | None], None] | None = None,
    ) -> None:
        """Send the request on ``conn``; the outcome goes to ``finish`` (soon after the response
        is written), or to :meth:`run`: whether the client connection stays open, or None when
        it must be tried again on a new connection."""
        client = self.client
        self.conn = conn
        self.finish = finish
        conn.begin(self)
        conn.peer = client.transport
        client.peer = conn.transport
        self._send_body(self._head())
        if self.request.body_done:
            self.body_sent()

    def body_sent(self) -> None:
        """The service has the whole request: from now on it has --upstream-timeout seconds to
        answer. (While a body is still coming, the client sets the pace, not the service.)"""
        if not self.settled and not self.head_sent:
            self.client._arm(self.client.gate.upstream_timeout, self._timeout)

    async def run(self) -> bool:
        """Forward the request; return whether the client connection stays open."""
        gate = self.client.gate
        request = self.request
        try:
            conn = await (gate.pool.connect() if request.upgrade else gate.pool.acquire())
        except (TimeoutError, OSError) as e:
            log.warning("Cannot reach the service: %s", e)
            return self.client._send_reply(
                request,
                pages.error(
                    502,
                    "The service is not answering; it may have stopped.",
                    html=wants_html(request.headers),
                ),
            )
        self.done = self.client.loop.create_future()
        self.start(conn)
        try:
            keep = await self.done
        except _Retry:
            return await Exchange(self.client, request, self.target, self.headers).run()
        finally:
            self.client._disarm()
            self.client.peer = None
        return keep

    def _settle(self, keep: bool | None) -> None:
        """The exchange is over (``None``: try again on a new connection)."""
        if self.settled:
            return
        self.settled = True
        if self.finish is not None:
            # after the response now being written: the next request must not overtake it
            self.client.loop.call_soon(self.finish, self, keep)
        elif self.done is not None:
            if keep is None:
                self.done.set_exception(_Retry())
                self.done.exception()
            else:
                self.done.set_result(keep)

    def _send_body(self, head: bytes) -> None:
        """Write the head and the body received so far; the parser sends the rest itself."""
        request = self.request
        conn = self.conn
        assert conn is not None and conn.transport is not None
        if not request.has_body:
            conn.transport.write(head)
            return
        out = [head]
        while request.body:
            chunk = request.body.popleft()
            self.client.buffered -= len(chunk)
            if request.chunked:
                out += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
            else:
                out.append(chunk)
        if request.body_done:
            if request.chunked:
                out.append(b"0\r\n\r\n")
        else:
            # From here on the parser writes body chunks straight to the service.
            request.sink = conn
            request.exchange = self
            self.client._resume_reading()
        conn.transport.writelines(out)

    def _timeout(self) -> None:
        if not self.head_sent and not self.settled:
            log.warning("The service did not answer within %gs", self.client.gate.upstream_timeout)
            self._fail(504, "The service did not answer in time.")

    def _fail(self, status: int, message: str) -> None:
        if self.conn is not None:
            self.conn.sink = None
            self.conn.close()
        if self.settled:
            return
        if self.head_sent:
            self.client.close()
            self._settle(False)
            return
        reply = pages.error(status, message, html=wants_html(self.request.headers))
        keep = self.client._send_reply(self.request, reply, close=True)
        self._settle(keep)

    # -- ResponseSink --------------------------------------------------------------------

    def response_head(
        self, status: int, reason: bytes, headers: list[Header], upgrade: bool
    ) -> None:
        client = self.client
        gate = client.gate
        request = self.request
        out = response_headers(headers, upstream_authority=gate.pool.authority, paths=gate.paths)
        lines = [b"HTTP/1.1 %d %s" % (status, reason)]
        lines += [name + b": " + value for name, value in out]
        length: bytes | None = None
        chunked_in = False
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                length = value
            elif lower == b"transfer-encoding":
                chunked_in = True
        no_body = request.method == b"HEAD" or status in _NO_BODY_STATUS
        if upgrade:
            lines.append(b"Connection: Upgrade")
            protocol = next((v for n, v in headers if n.lower() == b"upgrade"), None)
            if protocol is not None:
                lines.append(b"Upgrade: " + protocol)
        else:
            if length is not None and not chunked_in:
                lines.append(b"Content-Length: " + length)
            elif not no_body:
                self.eof_ends = not chunked_in
                if request.version == "1.1":
                    lines.append(b"Transfer-Encoding: chunked")
                    self.chunked_out = True
                else:
                    self.length_out = False
                    self.keep = False
            if not self.keep:
                lines.append(b"Connection: close")
            elif request.version == "1.0":
                lines.append(b"Connection: keep-alive")
        self.out.append(b"\r\n".join(lines) + b"\r\n\r\n")
        self.head_sent = True
        if upgrade:
            return
        if request.method == b"HEAD" and self.conn is not None:
            # llhttp would wait for a body a HEAD response never has: end here, drop the connection
            conn, self.conn = self.conn, None
            conn.sink = None
            conn.close()
            self._settle(self.keep)

    def response_body(self, chunk: bytes) -> None:
        if self.chunked_out:
            self.out += (b"%x\r\n" % len(chunk), chunk, b"\r\n")
        else:
            self.out.append(chunk)

    def flush(self) -> None:
        out = self.out
        if out:
            client = self.client
            if client.transport is not None and not client.closed:
                client.transport.writelines(out) if len(out) > 1 else client.transport.write(out[0])
            self.out = []

    def response_done(self) -> None:
        if self.chunked_out:
            self.out.append(b"0\r\n\r\n")
        conn = self.conn
        request = self.request
        if conn is not None:
            if request.body_done:
                self.client.gate.pool.release(conn)
            else:
                conn.close()
        if request.upgrade:
            self.keep = False  # the service refused the upgrade; the stream is out of step
        self._settle(self.keep and self.length_out)

    def upstream_lost(self, exc: Exception | None) -> None:
        if self.settled:
            return
        conn = self.conn
        if not self.head_sent:
            if conn is not None and conn.used and not conn.started and not self.request.has_body:
                # a kept-alive connection the service had closed: try once more on a new one
                self._settle(None)
                return
            self._fail(502, "The service closed the connection without answering.")
            return
        if self.eof_ends and exc is None:
            # the service framed its body by closing: that was the end of it
            if self.chunked_out:
                self.client.write(b"0\r\n\r\n")
            self._settle(self.keep and self.length_out)
            return
        self.client.close()  # cut short: the client must see that the body is incomplete
        self._settle(False)

    def upstream_tunnel(self, leftover: bytes) -> None:
        """The service switched protocols: join the two connections byte for byte."""
        client = self.client
        conn = self.conn
        assert conn is not None and conn.transport is not None
        gate = client.gate
        gate.activity.touch()
        if leftover:
            client.write(leftover)
        conn.pipe = client.transport
        conn.touch = gate.activity.touch
        client.pipe = conn.transport
        conn.peer = client.transport
        client.peer = conn.transport
        if self.request.early:
            conn.write(self.request.early)
        client._resume_reading()
        self._settle(True)


class _Retry(Exception):
    pass
