"""Pure header and path rules of the gate: what is forwarded, what is added, what is rewritten.

Headers travel as ``(name, value)`` pairs of ``bytes`` exactly as they came off the wire; names are
compared case-insensitively. Nothing here does I/O, so each rule is tested against literal output.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "HOP_BY_HOP",
    "Header",
    "PathMap",
    "connection_tokens",
    "public_location",
    "request_headers",
    "response_headers",
    "wants_html",
]

Header = tuple[bytes, bytes]

#: RFC 9110 section 7.6.1 connection-specific fields, plus the pre-standard ``Proxy-Connection``.
#: ``Host`` and the body framing headers are set by the gate itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"host", b"expect"})
_FORWARDED = frozenset(
    {b"x-forwarded-for", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-prefix"}
)


def connection_tokens(headers: Iterable[Header]) -> frozenset[bytes]:
    """The lower-cased options of every ``Connection`` header (``close``, ``upgrade``, names)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(part.strip().lower() for part in value.split(b",") if part.strip())
    return frozenset(tokens)


def _first(headers: Iterable[Header], wanted: bytes) -> bytes | None:
    for name, value in headers:
        if name.lower() == wanted:
            return value
    return None


class PathMap:
    """Where a public path goes: the session prefix is stripped or kept, as the catalog says.

    ``prefix`` is the session's URL prefix with its trailing slash (``/user/alice/llm/``), as in
    ``JUPYTERHUB_SERVICE_PREFIX``.
    """

    __slots__ = ("base", "prefix", "prefix_bytes", "strip")

    def __init__(self, prefix: str, strip: bool) -> None:
        if not prefix.startswith("/"):
            raise ValueError(f"the prefix must start with '/', not {prefix!r}")
        self.prefix = prefix if prefix.endswith("/") else prefix + "/"
        self.prefix_bytes = self.prefix.encode()
        #: the prefix without its trailing slash: ``{base_url}`` for the service
        self.base = self.prefix.rstrip("/")
        self.strip = strip

    def upstream_target(self, target: bytes) -> bytes | None:
        """The request target the service sees, or None when ``target`` is outside the prefix."""
        prefix = self.prefix_bytes
        if not target.startswith(prefix):
            return None
        if self.strip:
            return target[len(prefix) - 1 :]
        return target

    def public_path(self, path: str) -> str:
        """A path the service produced (a redirect), as the browser must request it."""
        if not self.strip or path == self.base or path.startswith(self.prefix):
            return path
        return self.base + path


def request_headers(
    headers: Sequence[Header],
    *,
    upstream_host: bytes,
    client_ip: str,
    prefix: bytes,
    drop: frozenset[bytes] = frozenset(),
    upgrade: bool = False,
) -> list[Header]:
    """The request headers sent to the service.

    Hop-by-hop headers (and those the client's ``Connection`` names) are dropped; ``Host`` becomes
    the service's own address, the way nginx's ``proxy_pass`` does, so services that check it
    (Ollama) accept the request; the public host goes in ``X-Forwarded-Host``. ``X-Forwarded-For``
    gets the client appended; ``X-Forwarded-Proto`` and ``-Host`` keep what the hub's proxy set.
    ``drop`` names further headers to withhold (the hub credentials the gate consumed). For a
    websocket upgrade, ``Connection: Upgrade`` and ``Upgrade`` are passed on.
    """
    hop = HOP_BY_HOP | connection_tokens(headers)
    out: list[Header] = [(b"Host", upstream_host)]
    forwarded_for = b""
    proto = b""
    host = b""
    for name, value in headers:
        lower = name.lower()
        if lower in hop or lower in _FRAMING or lower in drop:
            if lower == b"host":
                host = value
            continue
        if lower in _FORWARDED:
            if lower == b"x-forwarded-for":
                forwarded_for = value
            elif lower == b"x-forwarded-proto":
                proto = value
            elif lower == b"x-forwarded-host":
                host = value
            continue
        out.append((name, value))
    client = client_ip.encode()
    out.append((b"X-Forwarded-For", forwarded_for + b", " + client if forwarded_for else client))
    out.append((b"X-Forwarded-Proto", proto.split(b",")[0].strip() or b"http"))
    if host:
        out.append((b"X-Forwarded-Host", host.split(b",")[0].strip()))
    out.append((b"X-Forwarded-Prefix", prefix.rstrip(b"/")))
    if upgrade:
        out.append((b"Connection", b"Upgrade"))
        upgrade_value = _first(headers, b"upgrade")
        if upgrade_value is not None:
            out.append((b"Upgrade", upgrade_value))
    return out


def public_location(location: str, *, upstream_authority: str, paths: PathMap) -> str:
    """Rewrite a ``Location`` the service sent so the browser stays behind the gate.

    An absolute URL to the service's private address becomes a path on the public host, and, when
    the prefix is stripped, a host-absolute path gets the prefix back (``/login`` becomes
    ``/user/alice/llm/login``). Links elsewhere and relative references are left alone.
    """
    try:
        parts = urlsplit(location)
    except ValueError:
        return location
    if parts.scheme or parts.netloc:
        if parts.scheme not in ("http", "https") or parts.netloc != upstream_authority:
            return location
    elif not parts.path.startswith("/") or parts.path.startswith("//"):
        return location
    path = paths.public_path(parts.path or "/")
    return urlunsplit(("", "", path, parts.query, parts.fragment))


def response_headers(
    headers: Sequence[Header], *, upstream_authority: str, paths: PathMap
) -> list[Header]:
    """The service's response headers as the client gets them: hop-by-hop and framing headers
    dropped (the gate frames the body itself) and ``Location`` made public."""
    hop = HOP_BY_HOP | connection_tokens(headers) | {b"content-length"}
    out: list[Header] = []
    for name, value in headers:
        lower = name.lower()
        if lower in hop:
            continue
        if lower == b"location":
            text = value.decode("latin-1")
            rewritten = public_location(text, upstream_authority=upstream_authority, paths=paths)
            value = rewritten.encode("latin-1")
        out.append((name, value))
    return out


def wants_html(headers: Iterable[Header]) -> bool:
    """Whether the client is a browser navigating (it asks for HTML), not a program."""
    accept = _first(headers, b"accept")
    return accept is not None and b"text/html" in accept.lower()
