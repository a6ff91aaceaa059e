"""Connections to the service: a keep-alive pool and the response side of each exchange.

:class:`UpstreamConnection` parses the service's responses with httptools (llhttp) and hands each
event to its current :class:`ResponseSink` as it arrives, so bodies stream with no buffering.
After a websocket upgrade it becomes a byte pipe to the client. :class:`UpstreamPool` keeps idle
keep-alive connections (most recently used first) to a loopback port or a unix socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol, cast

import httptools

from .headers import Header

__all__ = ["ResponseSink", "UpstreamConnection", "UpstreamPool"]


class ResponseSink(Protocol):
    """Who receives one response (the client side of an exchange)."""

    def response_head(
        self, status: int, reason: bytes, headers: list[Header], upgrade: bool
    ) -> None: ...
    def response_body(self, chunk: bytes) -> None: ...
    def response_done(self) -> None: ...
    def upstream_lost(self, exc: Exception | None) -> None: ...
    def upstream_tunnel(self, leftover: bytes) -> None: ...
    def flush(self) -> None: ...


class UpstreamConnection(asyncio.Protocol):
    __slots__ = (
        "_drain",
        "_informational",
        "_reason",
        "closed",
        "headers",
        "parser",
        "peer",
        "pipe",
        "reusable",
        "sink",
        "started",
        "touch",
        "transport",
        "used",
    )

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.sink: ResponseSink | None = None
        self.headers: list[Header] = []
        self._reason = b""
        self._informational = False
        self.closed = False
        self.reusable = False
        #: a response byte has arrived for the current exchange
        self.started = False
        #: this connection carried an earlier exchange (a stale keep-alive may be closed)
        self.used = False
        #: after an upgrade: the client transport bytes go to
        self.pipe: asyncio.Transport | None = None
        #: the transport whose reading pauses when this one's writes back up
        self.peer: asyncio.Transport | None = None
        #: called for each chunk of tunnelled traffic (activity)
        self.touch: Callable[[], None] | None = None
        self._drain: asyncio.Future[None] | None = None

    # -- asyncio -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self.pipe is not None:
            if self.touch is not None:
                self.touch()
            self.pipe.write(data)
            return
        if self.sink is None:  # nothing was asked: a confused service; drop the connection
            self.close()
            return
        self.started = True
        sink = self.sink
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            offset = e.args[0] if e.args else len(data)
            self.sink = None
            sink.flush()
            sink.upstream_tunnel(data[offset:])
        except httptools.HttpParserError as e:
            self.sink = None
            self.close()
            if sink is not None:
                sink.upstream_lost(e)
        else:
            sink.flush()  # what this read produced goes to the client in one write

    def eof_received(self) -> bool | None:
        return None  # close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self.pipe is not None:
            self.pipe.close()
            self.pipe = None
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.upstream_lost(exc)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- httptools callbacks -------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self._reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        headers, self.headers = self.headers, []
        if 100 <= status < 200 and status != 101:
            self._informational = True  # 100 Continue, 103 Early Hints: not forwarded
            return
        if self.sink is not None:
            upgrade = status == 101
            self._informational = upgrade  # its message ends in the upgrade, not response_done
            self.reusable = not upgrade and self.parser.should_keep_alive()
            self.sink.response_head(status, self._reason, headers, upgrade)

    def on_body(self, chunk: bytes) -> None:
        if self.sink is not None and chunk:
            self.sink.response_body(chunk)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.response_done()

    # -- the gate's side -----------------------------------------------------------------

    def begin(self, sink: ResponseSink) -> None:
        self.sink = sink
        self.started = False

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait until the service has taken what was written (flow control for uploads)."""
        transport = self.transport
        if transport is None or self.closed:
            return
        if transport.get_write_buffer_size() <= 65536:
            return
        self._drain = asyncio.get_running_loop().create_future()
        await self._drain
        self._drain = None

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


class UpstreamPool:
    """Idle keep-alive connections to the service, most recently used first."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        unix_socket: str | None = None,
        max_idle: int = 64,
        connect_timeout: float = 10.0,
    ) -> None:
        if (port is None) == (unix_socket is None):
            raise ValueError("give a port or a unix socket")
        self.host = host
        self.port = port
        self.unix_socket = unix_socket
        self.max_idle = max_idle
        self.connect_timeout = connect_timeout
        self._idle: list[UpstreamConnection] = []
        #: the Host header the service gets, and the authority its own absolute URLs carry
        self.authority = f"{host}:{port}" if port is not None else "localhost"
        self.authority_bytes = self.authority.encode()

    async def connect(self) -> UpstreamConnection:
        """A new connection; raises OSError or asyncio.TimeoutError."""
        loop = asyncio.get_running_loop()
        factory: Callable[[], UpstreamConnection] = UpstreamConnection
        if self.unix_socket is not None:
            coro = loop.create_unix_connection(factory, self.unix_socket)
        else:
            assert self.port is not None
            coro = loop.create_connection(factory, self.host, self.port)
        _, conn = await asyncio.wait_for(coro, self.connect_timeout)
        return conn

    def take_idle(self) -> UpstreamConnection | None:
        """The most recently used idle connection, or None if there is none."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                conn.used = True
                if conn.transport is not None:
                    # its last client may have paused it (flow control) after it came back
                    conn.transport.resume_reading()
                return conn
        return None

    async def acquire(self) -> UpstreamConnection:
        """An idle connection, else a new one."""
        return self.take_idle() or await self.connect()

    def release(self, conn: UpstreamConnection) -> None:
        if conn.reusable and not conn.closed and len(self._idle) < self.max_idle:
            conn.peer = None
            if conn.transport is not None:
                conn.transport.resume_reading()  # the client may have paused it
            self._idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        for conn in self._idle:
            with contextlib.suppress(Exception):
                conn.close()
        self._idle.clear()
