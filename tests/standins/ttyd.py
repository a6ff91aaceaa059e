"""A stand-in for ttyd 1.7 (https://github.com/tsl0922/ttyd): the terminal Berth's catalog serves.

ttyd has no Debian 12 package and no PyPI distribution, so the tests run this instead, with the
catalog's own command line:

    python ttyd.py --port=PORT --interface=127.0.0.1 --base-path=/user/a/s --writable \\
        --ping-interval=30 bash -l

What it does as ttyd does (read from ttyd's own server.c, http.c and protocol.c):

- Options are parsed up to the first argument that is not one; that argument and everything after
  it is the command (so ``bash -l`` keeps its ``-l``). ``--interface`` is an address, a network
  interface name, or a unix socket path when it ends in ``.sock`` or ``.socket`` (then ``--port``
  is ignored).
- With ``--base-path=B`` (trailing slashes trimmed) it answers exactly ``B/`` (the page),
  ``B/token`` (``{"token": ""}`` or the credential), ``B/ws`` (the terminal websocket) and
  redirects ``B`` to ``B/``; anything else is 404.
- The websocket speaks ttyd's protocol on the ``tty`` subprotocol (a client that does not ask for it
  gets nothing, so it is refused here). The client's first message is a JSON object with
  ``AuthToken``, ``columns`` and ``rows``; then the command starts on a new pseudo-terminal (the
  ``pty`` module: its own session, ``TERM=xterm-256color`` added to the environment) and the server
  sends ``'1'`` + window title (``"<command> (<hostname>)"``), ``'2'`` + preferences JSON
  (``--client-option``), then ``'0'`` + output as it comes. Client messages: ``'0'`` + input
  (dropped unless ``--writable``: ttyd is read-only by default), ``'1'`` + resize JSON,
  ``'2'``/``'3'`` pause/resume output. All server messages are binary frames.
- When the command exits the socket closes (1000 if it exited 0, else 1006); when the socket
  closes the command gets SIGHUP (``--signal``). On SIGTERM ttyd closes every socket, which hangs
  up every command, and exits.

Options it does not implement (TLS, ``--uid``/``--gid``, ``--once``...) are refused with a message
rather than ignored. The page is a small client of the same protocol (ttyd's own is a bundled
xterm.js app): it computes its websocket and token URLs from ``location`` exactly as ttyd's does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import getopt
import ipaddress
import json
import os
import pty
import signal
import socket
import struct
import sys
import termios
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

VERSION = "1.7.7"
SERVER = f"ttyd/{VERSION} (berth stand-in)"

#: ttyd's options: long name -> (short letter, takes a value), as in its server.c
OPTIONS = {
    "port": ("p", True), "interface": ("i", True), "socket-owner": ("U", True),
    "credential": ("c", True), "auth-header": ("H", True), "uid": ("u", True),
    "gid": ("g", True), "signal": ("s", True), "cwd": ("w", True), "index": ("I", True),
    "base-path": ("b", True), "ping-interval": ("P", True), "srv-buf-size": ("f", True),
    "ipv6": ("6", False), "ssl": ("S", False), "ssl-cert": ("C", True), "ssl-key": ("K", True),
    "ssl-ca": ("A", True), "url-arg": ("a", False), "writable": ("W", False),
    "terminal-type": ("T", True), "client-option": ("t", True), "check-origin": ("O", False),
    "max-clients": ("m", True), "once": ("o", False), "exit-no-conn": ("q", False),
    "browser": ("B", False), "debug": ("d", True), "version": ("v", False), "help": ("h", False),
}  # fmt: skip
NOT_IMPLEMENTED = frozenset(
    {"socket-owner", "uid", "gid", "ssl", "ssl-cert", "ssl-key", "ssl-ca", "once", "exit-no-conn",
     "browser"}
)  # fmt: skip


class UsageError(Exception):
    pass


@dataclass
class Options:
    command: list[str]
    port: int = 7681
    interface: str = ""
    base_path: str = ""
    writable: bool = False
    ping_interval: int = 5
    terminal_type: str = "xterm-256color"
    preferences: dict[str, object] = field(default_factory=dict)
    check_origin: bool = False
    credential: str | None = None  # base64 of user:password, as ttyd keeps it
    auth_header: str | None = None
    cwd: str | None = None
    close_signal: int = signal.SIGHUP
    max_clients: int = 0
    url_arg: bool = False
    index: str | None = None

    @property
    def unix_socket(self) -> str | None:
        return self.interface if self.interface.endswith((".sock", ".socket")) else None


def _int(name: str, text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise UsageError(f"invalid value for {name}: {text}") from None


def _signal(text: str) -> int:
    name = text.upper()
    if name.isdigit():
        return int(name)
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise UsageError(f"invalid signal: {text}") from None


def parse(argv: list[str]) -> Options | None:
    """ttyd's command line; None for --help/--version (already answered)."""
    short = "".join(letter + (":" if value else "") for letter, value in OPTIONS.values())
    longs = [name + ("=" if value else "") for name, (_, value) in OPTIONS.items()]
    try:
        pairs, command = getopt.getopt(argv, short, longs)  # stops at the first non-option
    except getopt.GetoptError as e:
        raise UsageError(str(e)) from None
    options = Options(command=command)
    letters = {"--" + name: "-" + letter for name, (letter, _) in OPTIONS.items()}
    names = {letter: name for name, letter in letters.items()}
    for flag, value in pairs:
        flag = letters.get(flag, flag)
        if names[flag][2:] in NOT_IMPLEMENTED:
            raise UsageError(f"{names[flag]} is not implemented by this stand-in")
        if flag == "-h":
            print(f"ttyd is a tool for sharing terminal over the web ({SERVER})")
            return None
        if flag == "-v":
            print(f"ttyd version {VERSION}")
            return None
        if flag == "-p":
            options.port = _int("port", value)
            if options.port < 0:
                raise UsageError(f"invalid port: {value}")
        elif flag == "-i":
            options.interface = value
        elif flag == "-b":
            options.base_path = value.rstrip("/")
        elif flag == "-W":
            options.writable = True
        elif flag == "-P":
            options.ping_interval = _int("ping-interval", value)
            if options.ping_interval < 0:
                raise UsageError(f"invalid ping interval: {value}")
        elif flag == "-T":
            options.terminal_type = value
        elif flag == "-t":
            key, sep, raw = value.partition("=")
            if not key or not sep:
                raise UsageError(f"invalid client option: {value}, format: key=value")
            try:
                options.preferences[key] = json.loads(raw)
            except json.JSONDecodeError:
                options.preferences[key] = raw
        elif flag == "-O":
            options.check_origin = True
        elif flag == "-c":
            if ":" not in value:
                raise UsageError("invalid credential, format: username:password")
            options.credential = base64.b64encode(value.encode()).decode()
        elif flag == "-H":
            options.auth_header = value
        elif flag == "-w":
            options.cwd = value
        elif flag == "-s":
            options.close_signal = _signal(value)
        elif flag == "-m":
            options.max_clients = _int("max-clients", value)
        elif flag == "-a":
            options.url_arg = True
        elif flag == "-I":
            if not os.path.isfile(value):
                raise UsageError(f"Can not stat index.html: {value}")
            options.index = value
        # -d (log level), -f (buffer size), -6 (IPv6) change nothing a client can see here
    if not options.command:
        raise UsageError("missing start command")
    return options


# -- the terminal ---------------------------------------------------------------------------------


class Terminal:
    """One command on one pseudo-terminal, wired to one websocket."""

    def __init__(self, options: Options, args: list[str]) -> None:
        self.options = options
        self.argv = [*options.command, *args]
        self.pid = 0
        self.fd = -1
        self.paused = False
        self.output: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._unwritten = bytearray()

    def spawn(self, columns: int, rows: int, user: str) -> None:
        pid, fd = pty.fork()  # a new session whose controlling terminal is the pty
        if pid == 0:  # the child: set the size, then become the command
            try:
                for signum in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores these
                    signal.signal(signum, signal.SIG_DFL)
                if columns > 0 and rows > 0:
                    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
                if self.options.cwd:
                    os.chdir(self.options.cwd)
                os.environ["TERM"] = self.options.terminal_type
                if user:
                    os.environ["TTYD_USER"] = user
                os.execvp(self.argv[0], self.argv)
            except BaseException as e:
                os.write(2, f"execvp failed: {e}\n".encode())
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        os.set_blocking(fd, False)
        loop = asyncio.get_running_loop()
        loop.add_reader(fd, self._readable)
        pidfd = os.pidfd_open(pid)
        loop.add_reader(pidfd, self._reap, pidfd)

    def _reap(self, pidfd: int) -> None:
        asyncio.get_running_loop().remove_reader(pidfd)
        os.close(pidfd)
        _, status = os.waitpid(self.pid, 0)
        self.exited.set_result(os.waitstatus_to_exitcode(status))

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: every process on the terminal has gone
            data = b""
        if data:
            self.output.put_nowait(data)
            return
        asyncio.get_running_loop().remove_reader(self.fd)
        self.output.put_nowait(None)

    def write(self, data: bytes) -> None:
        """Input for the command, written as the terminal takes it."""
        if self.fd < 0:
            return
        pending = not self._unwritten
        self._unwritten += data
        if pending:
            self._flush()

    def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            written = os.write(self.fd, self._unwritten)
        except BlockingIOError:
            written = 0
        except OSError:
            self._unwritten.clear()
            return
        del self._unwritten[:written]
        loop.remove_writer(self.fd)
        if self._unwritten:
            loop.add_writer(self.fd, self._flush)

    def resize(self, columns: int, rows: int) -> None:
        if self.fd >= 0:
            fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def pause(self) -> None:
        if not self.paused and self.fd >= 0:
            self.paused = True
            asyncio.get_running_loop().remove_reader(self.fd)

    def resume(self) -> None:
        if self.paused and self.fd >= 0:
            self.paused = False
            asyncio.get_running_loop().add_reader(self.fd, self._readable)

    def hang_up(self) -> None:
        """The client went away: signal the command (SIGHUP unless --signal) and let go."""
        if self.pid and not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, self.options.close_signal)
        if self.fd >= 0:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self.fd)
            loop.remove_writer(self.fd)
            os.close(self.fd)
            self.fd = -1


# -- HTTP -----------------------------------------------------------------------------------------

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<title>ttyd - Terminal</title>
<style>body{margin:0;background:#2b2b2b;color:#d2d2d2}
#terminal-container{white-space:pre-wrap;font-family:monospace;padding:4px}</style>
</head>
<body>
<pre id="terminal-container"></pre>
<script>
(async () => {
  const location = window.location;
  const protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const path = location.pathname.replace(/[/]+$/, '');
  const wsUrl = [protocol, '//', location.host, path, '/ws', location.search].join('');
  const tokenUrl = [location.protocol, '//', location.host, path, '/token'].join('');
  const screen = document.getElementById('terminal-container');
  const encoder = new TextEncoder(), decoder = new TextDecoder();
  let token = '';
  try { token = (await (await fetch(tokenUrl)).json()).token; } catch (e) {}
  const socket = new WebSocket(wsUrl, ['tty']);
  socket.binaryType = 'arraybuffer';
  const send = (command, text) => socket.send(encoder.encode(command + text));
  socket.onopen = () => {
    socket.send(encoder.encode(JSON.stringify({AuthToken: token, columns: 80, rows: 24})));
    document.body.dataset.state = 'open';
  };
  socket.onmessage = (event) => {
    const data = new Uint8Array(event.data);
    const text = decoder.decode(data.slice(1));
    switch (String.fromCharCode(data[0])) {
      case '0': screen.textContent += text.replace(/\\x1b\\[[0-9;?]*[A-Za-z]/g, ''); break;
      case '1': document.title = text; break;
      case '2': document.body.dataset.preferences = text; break;
    }
  };
  socket.onclose = (event) => { document.body.dataset.state = 'closed ' + event.code; };
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Enter') send('0', '\\r');
    else if (event.key.length === 1) send('0', event.key);
    else return;
    event.preventDefault();
  });
})();
</script>
</body>
</html>
"""


class Server:
    def __init__(self, options: Options) -> None:
        self.options = options
        base = options.base_path
        self.ws_path = base + "/ws"
        self.index_path = base + "/"
        self.token_path = base + "/token"
        self.parent_path = base  # "" when there is no base path: never a request path
        self.clients = 0
        self.terminals: set[Terminal] = set()
        self.title = " ".join(options.command) + f" ({socket.gethostname()})"

    def _auth_ok(self, request: web.Request) -> bool:
        if self.options.auth_header is not None:
            return bool(request.headers.get(self.options.auth_header))
        if self.options.credential is not None:
            value = request.headers.get("Authorization", "")
            return value == "Basic " + self.options.credential
        return True

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = {"Server": SERVER}
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self.websocket(request)
        if not self._auth_ok(request):
            if self.options.auth_header is not None:
                challenge = {"Proxy-Authenticate": 'Basic realm="ttyd"'}
                return web.Response(status=407, headers={**headers, **challenge})
            challenge = {"WWW-Authenticate": 'Basic realm="ttyd"'}
            return web.Response(status=401, headers={**headers, **challenge})
        path = request.path
        if path == self.token_path:
            body = json.dumps({"token": self.options.credential or ""})
            return web.Response(
                text=body, headers={**headers, "Content-Type": "application/json;charset=utf-8"}
            )
        if self.parent_path and path == self.parent_path:
            return web.Response(status=302, headers={**headers, "Location": self.index_path})
        if path != self.index_path:
            return web.Response(status=404, headers=headers)
        if self.options.index is not None:
            return web.FileResponse(self.options.index, headers=headers)
        return web.Response(text=PAGE, content_type="text/html", headers=headers)

    def _origin_ok(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin", "")
        _, sep, rest = origin.partition("://")
        if not sep or not rest:
            return False
        authority = rest.split("/", 1)[0]
        host, _, port = authority.rpartition(":") if ":" in authority else (authority, "", "")
        if port in ("80", "443"):
            authority = host
        return authority.lower() == request.headers.get("Host", "").lower()

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        options = self.options
        refuse = web.Response(status=403, headers={"Server": SERVER})
        if options.max_clients > 0 and self.clients >= options.max_clients:
            return refuse
        if not self._auth_ok(request) or request.path != self.ws_path:
            return refuse
        if options.check_origin and not self._origin_ok(request):
            return refuse
        offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if "tty" not in offered:
            return web.Response(status=400, text="ttyd speaks the 'tty' websocket subprotocol")
        heartbeat = float(options.ping_interval) if options.ping_interval > 0 else None
        ws = web.WebSocketResponse(protocols=("tty",), heartbeat=heartbeat, max_msg_size=0)
        await ws.prepare(request)
        self.clients += 1
        args = request.query.getall("arg", []) if options.url_arg else []
        user = request.headers.get(options.auth_header, "") if options.auth_header else ""
        terminal: Terminal | None = None
        pump: asyncio.Task[None] | None = None
        authenticated = options.credential is None
        try:
            async for message in ws:
                if message.type == WSMsgType.BINARY:
                    data = message.data
                elif message.type == WSMsgType.TEXT:
                    data = message.data.encode()
                else:
                    break
                if not data:
                    continue
                command = data[:1]
                if not authenticated and command != b"{":
                    break  # ttyd drops a client that talks before it authenticates
                if command == b"{":
                    if terminal is not None:
                        continue
                    request_json = _json(data)
                    if options.credential is not None:
                        if request_json.get("AuthToken") != options.credential:
                            await ws.close(code=1008)  # policy violation, as ttyd says
                            break
                        authenticated = True
                    terminal = Terminal(options, args)
                    terminal.spawn(
                        _size(request_json.get("columns")), _size(request_json.get("rows")), user
                    )
                    self.terminals.add(terminal)
                    pump = asyncio.create_task(self._pump(terminal, ws))
                elif command == b"0":
                    if options.writable and terminal is not None:
                        terminal.write(data[1:])
                elif command == b"1":
                    if terminal is not None:
                        size = _json(data[1:])
                        terminal.resize(_size(size.get("columns")), _size(size.get("rows")))
                elif command == b"2":
                    if terminal is not None:
                        terminal.pause()
                elif command == b"3":
                    if terminal is not None:
                        terminal.resume()
                # anything else: ttyd ignores unknown message types
        finally:
            self.clients -= 1
            if pump is not None:
                pump.cancel()
            if terminal is not None:
                self.terminals.discard(terminal)
                terminal.hang_up()
        return ws

    async def _pump(self, terminal: Terminal, ws: web.WebSocketResponse) -> None:
        await ws.send_bytes(b"1" + self.title.encode())
        await ws.send_bytes(b"2" + json.dumps(self.options.preferences).encode())
        while (data := await terminal.output.get()) is not None:
            await ws.send_bytes(b"0" + data)
        code = await terminal.exited
        await ws.close(code=1000 if code == 0 else 1006)

    async def shutdown(self, app: web.Application) -> None:
        for terminal in list(self.terminals):
            terminal.hang_up()


def _json(data: bytes) -> dict[str, object]:
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _size(value: object) -> int:
    return value if isinstance(value, int) and 0 <= value < 65536 else 0


def _interface_address(name: str) -> str:
    """The IPv4 address of a network interface (ttyd lets libwebsockets accept either)."""
    with contextlib.suppress(ValueError):
        return str(ipaddress.ip_address(name))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
        except OSError:
            raise UsageError(f"no such interface: {name}") from None
    return socket.inet_ntoa(packed[20:24])  # SIOCGIFADDR


async def serve(options: Options) -> None:
    server = Server(options)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    app.on_shutdown.append(server.shutdown)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site: web.BaseSite
    if options.unix_socket is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(options.unix_socket)
        site = web.UnixSite(runner, options.unix_socket)
        where = options.unix_socket
    else:
        host = _interface_address(options.interface) if options.interface else "0.0.0.0"
        site = web.TCPSite(runner, host, options.port)
        where = f"{host}:{options.port}"
    await site.start()
    print(f"[ttyd stand-in] start command: {' '.join(options.command)}", flush=True)
    if not options.writable:
        print("The --writable option is not set, will start in readonly mode", flush=True)
    print(f" Listening on {where}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    print("received signal, exiting...", flush=True)
    await runner.cleanup()  # closes every socket; each terminal gets its hang-up signal
    if options.unix_socket is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(options.unix_socket)


def main() -> int:
    try:
        options = parse(sys.argv[1:])
    except UsageError as e:
        print(f"ttyd: {e}", file=sys.stderr)
        return 1
    if options is None:
        return 0
    try:
        asyncio.run(serve(options))
    except UsageError as e:
        print(f"ttyd: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
