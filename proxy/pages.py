"""What the gate itself answers: the "starting" page, and errors as pages or JSON.

Each function returns a complete :class:`Reply` (status, headers, body) so the server can write it
in one piece. Browsers (they ask for ``text/html``) get a small page; programs get
``{"error": ..., "status": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from http import HTTPStatus

__all__ = ["Reply", "error", "redirect", "starting"]


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: Sequence[tuple[bytes, bytes]] = field(default_factory=tuple)

    @property
    def reason(self) -> str:
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return "Unknown"


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:46rem;margin:3rem auto;padding:0 1rem;"
    "color:#222}h1{font-size:1.4rem}pre{background:#f4f4f4;padding:.8rem;overflow:auto;"
    "font-size:.85rem;white-space:pre-wrap}p.small{color:#666;font-size:.85rem}"
)


def _page(title: str, body: str, *, refresh: int | None = None) -> bytes:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f'<meta name="viewport" content="width=device-width">{meta}'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    ).encode()


def _html(status: int, page: bytes, extra: Sequence[tuple[bytes, bytes]] = ()) -> Reply:
    headers = [
        (b"Content-Type", b"text/html; charset=utf-8"),
        (b"Cache-Control", b"no-store"),
        *extra,
    ]
    return Reply(status, page, tuple(headers))


def _json(
    status: int, document: dict[str, object], extra: Sequence[tuple[bytes, bytes]] = ()
) -> Reply:
    headers = [
        (b"Content-Type", b"application/json"),
        (b"Cache-Control", b"no-store"),
        *extra,
    ]
    return Reply(status, json.dumps(document).encode(), tuple(headers))


def error(status: int, message: str, *, html: bool, detail: str = "") -> Reply:
    """A gate error: ``message`` is one sentence a person can act on."""
    if html:
        extra = f"<p class=small>{escape(detail)}</p>" if detail else ""
        title = f"{status} {Reply(status, b'').reason}"
        return _html(status, _page(title, f"<p>{escape(message)}</p>{extra}"))
    document: dict[str, object] = {"error": message, "status": status}
    if detail:
        document["detail"] = detail
    return _json(status, document)


def starting(
    name: str,
    *,
    html: bool,
    retry_after: int,
    output: Sequence[str] = (),
    exit_code: int | None = None,
    failure: str = "",
) -> Reply:
    """503 while the service starts (the page refreshes itself), or after it failed to start.

    ``output`` is the last lines the service printed; it is only passed for people allowed to see
    the session. A 503 also tells JupyterHub's spawn check that the server is not up yet.
    """
    retry = [(b"Retry-After", str(retry_after).encode())]
    if failure:
        message = failure
        if exit_code is not None:
            message += f" (exit code {exit_code})"
    else:
        message = f"{name} is starting; this page reloads by itself."
    if html:
        body = f"<p>{escape(message)}</p>"
        if output:
            heading = "Its last output" if failure else "Its output so far"
            body += f"<h2>{heading}</h2><pre>{escape(chr(10).join(output))}</pre>"
        page = _page(
            f"{name} failed" if failure else f"Starting {name}",
            body,
            refresh=None if failure else retry_after,
        )
        return _html(503, page, () if failure else retry)
    document: dict[str, object] = {
        "error": message,
        "status": 503,
        "state": "failed" if failure else "starting",
    }
    if output:
        document["output"] = list(output)
    if exit_code is not None:
        document["exit_code"] = exit_code
    return _json(503, document, () if failure else retry)


def redirect(location: str, *, cookies: Sequence[bytes] = ()) -> Reply:
    headers = [(b"Location", location.encode()), (b"Cache-Control", b"no-store")]
    headers += [(b"Set-Cookie", cookie) for cookie in cookies]
    return Reply(302, b"", tuple(headers))
