"""The hub's REST API (and berth-culler's) over HTTP, with every failure turned into one line.

:func:`explain` maps an HTTP answer to a :class:`~berth.cli.errors.CliError` (pure, tested alone);
:class:`HubClient` sends requests and streams the hub's progress events.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx

from .config import Login
from .errors import CliError, ExitCode
from .progress import parse_sse

__all__ = ["CULLER", "HubClient", "explain", "hub_message", "segment"]

_INVALID_TOKEN = "Missing or invalid credentials"
#: The hub service that keeps deadlines and grants extensions.
CULLER = "berth-culler"


def hub_message(response: httpx.Response) -> str:
    """The hub's (or the culler's) own sentence from an error answer, else the reason phrase."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or f"HTTP {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        message: str = body["message"]
        return message.rstrip(".")
    return response.reason_phrase or f"HTTP {response.status_code}"


def explain(
    response: httpx.Response,
    login: Login,
    *,
    action: str,
    not_found: str | None = None,
    conflict: str | None = None,
    service: str | None = None,
    token_rejected: bool = False,
) -> CliError:
    """One sentence with the fix for a failed answer. ``action``: what was being done
    ("list your sessions"); ``not_found``/``conflict``: the sentence for 404/409, if known;
    ``service``: the hub service that answered (berth-culler), if not the hub itself;
    ``token_rejected``: the hub does not know the token at all (see HubClient.token_works)."""
    status = response.status_code
    message = hub_message(response)
    if service is not None and status == 401:
        return CliError(
            f"{service} did not accept your token ({message}); it needs the scope"
            f" access:services!service={service}, which tokens made at {login.token_page} with"
            " the default permissions have; make one and run `berth login`",
            ExitCode.AUTH,
        )
    if service is not None and status == 403:
        return CliError(f"{service} refused to {action}: {message}", ExitCode.AUTH)
    if token_rejected or status == 401 or (status == 403 and _INVALID_TOKEN in message):
        return CliError(
            f"the hub at {login.url} does not accept your token (wrong, expired or revoked);"
            f" create one at {login.token_page} and run `berth login`",
            ExitCode.AUTH,
        )
    if status == 403:
        return CliError(
            f"your token may not {action} ({message}); create a token with more permissions at"
            f" {login.token_page} and run `berth login`",
            ExitCode.AUTH,
        )
    if status == 404:
        return CliError(
            not_found or f"{service or 'the hub'} found nothing to {action}: {message}",
            ExitCode.NOT_FOUND,
        )
    if status == 409:
        return CliError(conflict or message, ExitCode.CONFLICT)
    who = service or "the hub"
    if 400 <= status < 500:
        return CliError(f"{who} refused to {action}: {message}", ExitCode.USAGE)
    return CliError(
        f"{who} failed to {action} ({status} {response.reason_phrase}: {message}); try again in"
        f" a moment, or ask an admin to look at the {'hub' if service is None else service} log",
        ExitCode.FAILED,
    )


def _unreachable(login: Login, url: str, error: httpx.HTTPError) -> CliError:
    if isinstance(error, httpx.TimeoutException):
        why = "it did not answer in time"
    elif isinstance(error, httpx.ConnectError):
        text = str(error)
        if "CERTIFICATE" in text.upper() or "SSL" in text.upper():
            why = f"its TLS certificate was refused ({text})"
        else:
            why = f"no connection ({text or 'refused'})"
    else:
        why = str(error) or type(error).__name__
    return CliError(
        f"cannot reach the hub at {login.url}: {why}; check the address (`berth login --url"
        " https://...`) and that the hub is up",
        ExitCode.UNREACHABLE,
    )


def _json(response: httpx.Response, login: Login, action: str) -> Any:
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        raise CliError(
            f"{response.request.url} answered with {kind}, not JSON, when asked to {action}:"
            f" is {login.url} the hub's address? check it with `berth login --url`",
            ExitCode.FAILED,
        ) from None


def segment(value: str) -> str:
    """A user or session name as one URL path segment."""
    return quote(value, safe="")


class HubClient:
    """Requests to one hub, authenticated with the login's token."""

    def __init__(self, login: Login, *, timeout: float = 30.0) -> None:
        if not login.token:
            raise CliError(
                f"no API token for {login.url}: run `berth login` (or set JUPYTERHUB_API_TOKEN);"
                f" create a token at {login.token_page}",
                ExitCode.AUTH,
            )
        self.login = login
        self._http = httpx.Client(
            headers={
                "Authorization": f"token {login.token}",
                "User-Agent": "berth-cli",
                "Accept": "application/json",
            },
            timeout=timeout,
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plain requests -----------------------------------------------------------------------

    def api_url(self, path: str) -> str:
        return f"{self.login.api_url}{path}"

    def public_url(self, path: str) -> str:
        return f"{self.login.url}{path}"

    def request(
        self,
        method: str,
        url: str,
        *,
        action: str,
        ok: tuple[int, ...] = (200,),
        not_found: str | None = None,
        conflict: str | None = None,
        service: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as e:
            raise _unreachable(self.login, url, e) from None
        if response.status_code not in ok:
            if 300 <= response.status_code < 400:
                raise CliError(
                    f"{url} redirects to {response.headers.get('location')!r} instead of"
                    f" answering: is {self.login.url} the hub's address? check it with"
                    " `berth login --url`",
                    ExitCode.FAILED,
                )
            rejected = response.status_code == 403 and service is None and not self.token_works(url)
            raise explain(
                response,
                self.login,
                action=action,
                not_found=not_found,
                conflict=conflict,
                service=service,
                token_rejected=rejected,
            )
        return response

    def token_works(self, failed_url: str = "") -> bool:
        """Whether the hub knows the token at all: any valid token may read its own identity,
        so a 403 there means a wrong, expired or revoked token, not a missing permission."""
        if failed_url == self.api_url("/user"):
            return False
        try:
            return self._http.get(self.api_url("/user")).status_code == 200
        except httpx.HTTPError:
            return True

    def get_json(self, url: str, *, action: str, **kwargs: Any) -> Any:
        return _json(self.request("GET", url, action=action, **kwargs), self.login, action)

    # -- the hub ------------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        try:
            model = self.get_json(self.api_url("/user"), action="say who you are")
        except CliError as e:
            if e.code != ExitCode.NOT_FOUND:
                raise
            raise CliError(
                f"{self.login.api_url}/user does not exist: is {self.login.url} the hub's address?"
                " check the address with `berth login --url`",
                ExitCode.FAILED,
            ) from None
        if not isinstance(model, dict) or "name" not in model:
            raise CliError(f"{self.login.api_url}/user did not answer with a user; is it a hub?")
        return model

    def user_model(self, user: str) -> dict[str, Any]:
        model = self.get_json(
            self.api_url(f"/users/{segment(user)}"),
            action=f"read {user}'s sessions",
            params={"include_stopped_servers": "1"},
            not_found=f"the hub has no user named {user!r} (or your token may not see it)",
        )
        if not isinstance(model, dict) or "servers" not in model:
            # the hub leaves out what a token may not read
            raise CliError(
                f"your token may not read {user}'s sessions (it lacks the read:servers scope);"
                f" create a token with more permissions at {self.login.token_page} and run"
                " `berth login`",
                ExitCode.AUTH,
            )
        return model

    def catalog(self, user: str) -> dict[str, Any]:
        document = self.get_json(
            self.api_url("/berth/catalog"),
            action="read the catalog",
            params={"user": user},
            not_found=(
                f"the hub at {self.login.url} does not run Berth (no /hub/api/berth/catalog),"
                f" or has no user {user!r}; ask its admin"
            ),
        )
        return document if isinstance(document, dict) else {}

    def server_path(self, user: str, name: str) -> str:
        return f"/users/{segment(user)}/servers/{segment(name)}"

    def start(self, user: str, name: str, user_options: dict[str, Any]) -> int:
        response = self.request(
            "POST",
            self.api_url(self.server_path(user, name)),
            action=f"start {name}",
            ok=(201, 202),
            json={"user_options": user_options},
        )
        return response.status_code

    def stop(self, user: str, name: str, *, remove: bool) -> int:
        response = self.request(
            "DELETE",
            self.api_url(self.server_path(user, name)),
            action=f"stop {name}",
            ok=(202, 204),
            not_found=f"you have no session named {name!r}; see `berth list`",
            json={"remove": remove},
        )
        return response.status_code

    def logs(self, user: str, name: str, lines: int) -> dict[str, Any]:
        body = self.get_json(
            self.api_url(f"/berth/users/{segment(user)}/sessions/{segment(name)}/logs"),
            action=f"read {name}'s output",
            params={"lines": str(lines)},
            not_found=f"no output is kept for {name!r} (no such session, or it never started)",
        )
        return body if isinstance(body, dict) else {}

    def progress(self, user: str, name: str, *, read_timeout: float) -> Iterator[dict[str, Any]]:
        """The hub's progress events for a starting session, as they come."""
        url = self.api_url(self.server_path(user, name) + "/progress")
        timeout = httpx.Timeout(30.0, read=read_timeout)
        try:
            with self._http.stream(
                "GET", url, headers={"Accept": "text/event-stream"}, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    response.read()
                    raise explain(
                        response,
                        self.login,
                        action=f"follow {name}",
                        not_found=f"you have no session named {name!r}; see `berth list`",
                    )
                yield from parse_sse(response.iter_lines())
        except httpx.TimeoutException:
            return  # nothing for a while, not even the hub's keep-alive: the caller looks again
        except httpx.HTTPError as e:
            raise _unreachable(self.login, url, e) from None

    # -- berth-culler -------------------------------------------------------------------------

    def culler_sessions(self, culler_api: str, user: str) -> list[dict[str, Any]]:
        body = self.get_json(
            self.public_url(f"{culler_api}sessions"),
            action="read session deadlines",
            params={"user": user},
            service=CULLER,
        )
        sessions = body.get("sessions") if isinstance(body, dict) else None
        return [s for s in sessions if isinstance(s, dict)] if isinstance(sessions, list) else []

    def culler_session(self, culler_api: str, user: str, name: str) -> dict[str, Any] | None:
        """The session's deadlines, or None when the culler does not see it running."""
        response = self.request(
            "GET",
            self.public_url(f"{culler_api}sessions/{segment(user)}/{segment(name)}"),
            action=f"read {name}'s deadlines",
            ok=(200, 404),
            service=CULLER,
        )
        if response.status_code == 404:
            return None
        body = _json(response, self.login, f"read {name}'s deadlines")
        return body if isinstance(body, dict) else None

    def extend(
        self, culler_api: str, user: str, name: str, hours: float, reason: str | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"hours": hours}
        if reason:
            body["reason"] = reason
        response = self.request(
            "POST",
            self.public_url(f"{culler_api}sessions/{segment(user)}/{segment(name)}/extend"),
            action=f"extend {name}",
            not_found=f"{name!r} is not a running session; see `berth list`",
            service=CULLER,
            content=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        result = _json(response, self.login, f"extend {name}")
        return result if isinstance(result, dict) else {}
