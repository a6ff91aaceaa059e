"""Who may use the session: the hub's own OAuth, through :class:`jupyterhub.services.auth.HubOAuth`.

Programs send ``Authorization: token <t>`` or ``Bearer <t>`` (so an OpenAI client works with a hub
token as its API key); browsers go through the hub's OAuth flow once and then carry a signed
cookie that holds the OAuth token, exactly as jupyterhub-singleuser does. Either way the hub says
who the token belongs to and which scopes it has, and the gate lets the request through only if
those scopes grant one of ``$JUPYTERHUB_OAUTH_ACCESS_SCOPES`` (the owner, or whoever the hub gives
``access:servers`` on this server). Answers are cached per token for ``cache_max_age`` seconds,
like HubAuth's own cache, so the hub is asked once per token, not once per request.

HubOAuth is written for tornado request handlers; the gate is not one, so it uses HubOAuth's
handler-free parts (token lookup, scope check, OAuth state, PKCE, code exchange) and signs its
cookies with tornado's ``create_signed_value``, the format tornado's secure cookies use.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit

from jupyterhub.services.auth import HubOAuth
from tornado.httpclient import HTTPClientError
from tornado.web import HTTPError, create_signed_value, decode_signed_value

from . import pages
from .config import HubEnvironment
from .headers import Header

__all__ = ["AuthError", "Decision", "GateAuth", "cookies_of", "is_cross_site"]

log = logging.getLogger("berth.gate")

_SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
_NEGATIVE_TTL = 30.0


class AuthError(Exception):
    """The hub could not be asked (down, or refused the gate's own token)."""


@dataclass(frozen=True)
class Decision:
    """What the hub said about one token."""

    name: str
    kind: str
    allowed: bool


def cookies_of(headers: Iterable[Header]) -> dict[str, str]:
    """The request's cookies by name (the first of each name wins), without SimpleCookie's
    strictness: one malformed pair does not hide the others."""
    found: dict[str, str] = {}
    for name, value in headers:
        if name.lower() != b"cookie":
            continue
        for pair in value.decode("latin-1").split(";"):
            key, sep, val = pair.strip().partition("=")
            if sep and key and key not in found:
                found[key] = val.strip().strip('"')
    return found


def is_cross_site(method: bytes, headers: Iterable[Header], *, upgrade: bool) -> bool:
    """Whether a cookie-carrying request came from another site and must not ride the cookie.

    Applies to unsafe methods and websocket upgrades: a browser sends ``Origin`` with those, and it
    must name the host the request went to (``X-Forwarded-Host`` from the hub's proxy, else
    ``Host``); without ``Origin``, ``Sec-Fetch-Site: cross-site`` also refuses.
    """
    if method in _SAFE_METHODS and not upgrade:
        return False
    origin = host = forwarded = fetch_site = None
    for name, value in headers:
        lower = name.lower()
        if lower == b"origin":
            origin = value
        elif lower == b"host":
            host = value
        elif lower == b"x-forwarded-host":
            forwarded = value.split(b",")[0].strip()
        elif lower == b"sec-fetch-site":
            fetch_site = value
    if origin is not None:
        if origin == b"null":
            return True
        origin_host = urlsplit(origin.decode("latin-1")).netloc.lower()
        expected = (forwarded or host or b"").decode("latin-1").lower()
        return origin_host != expected
    return fetch_site is not None and fetch_site.lower() == b"cross-site"


class GateAuth:
    """The gate's side of the hub's OAuth, plus the per-token decision cache."""

    def __init__(
        self,
        hub: HubEnvironment,
        *,
        cache_max_age: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.hub = hub
        self.hub_auth = HubOAuth(
            api_token=hub.api_token,
            api_url=hub.api_url,
            base_url=hub.prefix,
            hub_prefix=hub.hub_prefix,
            oauth_client_id=hub.client_id,
            oauth_redirect_uri=hub.oauth_callback_url,
            access_scopes=set(hub.access_scopes),
            cache_max_age=int(cache_max_age),
        )
        self.cookie_name = self.hub_auth.cookie_name
        self.state_cookie_name = self.hub_auth.state_cookie_name
        self.cookie_path = self.hub_auth.cookie_path
        self._secret = secrets.token_bytes(32)
        self.cache_max_age = cache_max_age
        self.clock = clock
        self._decisions: dict[bytes, tuple[float, Decision | None]] = {}
        self._pending: dict[bytes, asyncio.Future[Decision | None]] = {}

    # -- tokens ------------------------------------------------------------------------------

    def token_from_cookie(self, cookies: Mapping[str, str]) -> str | None:
        raw = cookies.get(self.cookie_name)
        if not raw:
            return None
        value = decode_signed_value(self._secret, self.cookie_name, raw, max_age_days=31)
        return value.decode("ascii", "replace") if value else None

    @staticmethod
    def token_from_header(value: bytes) -> str | None:
        scheme, _, token = value.strip().partition(b" ")
        if scheme.lower() in (b"token", b"bearer") and token.strip():
            return token.strip().decode("latin-1")
        return None

    def cached(self, token: str) -> tuple[bool, Decision | None]:
        """``(True, decision)`` if the hub's answer for ``token`` is cached and fresh."""
        key = hashlib.sha256(token.encode("latin-1", "replace")).digest()
        entry = self._decisions.get(key)
        if entry is not None and entry[0] > self.clock():
            return True, entry[1]
        return False, None

    async def decide(self, token: str) -> Decision | None:
        """Ask the hub who ``token`` belongs to and whether it may use this server.

        None means the hub does not know the token. Concurrent requests with the same new token
        share one question to the hub. Raises :class:`AuthError` if the hub cannot answer.
        """
        hit, decision = self.cached(token)
        if hit:
            return decision
        key = hashlib.sha256(token.encode("latin-1", "replace")).digest()
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Decision | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            decision = await self._ask_hub(token)
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved here; waiters re-raise it
            raise
        finally:
            del self._pending[key]
        future.set_result(decision)
        ttl = self.cache_max_age if decision is not None else _NEGATIVE_TTL
        self._decisions[key] = (self.clock() + ttl, decision)
        if len(self._decisions) > 10000:
            now = self.clock()
            self._decisions = {k: v for k, v in self._decisions.items() if v[0] > now}
        return decision

    async def _ask_hub(self, token: str) -> Decision | None:
        try:
            model = await self.hub_auth.user_for_token(token, use_cache=False, sync=False)
        except (HTTPError, HTTPClientError, OSError) as e:
            raise AuthError(f"could not check the login with the hub: {e}") from e
        if not model:
            return None
        scopes = self.hub_auth.check_scopes(self.hub_auth.access_scopes, model)
        name = str(model.get("name", ""))
        kind = str(model.get("kind", "user"))
        if not scopes:
            log.info("Refusing %s %s: no access to this server", kind, name)
        return Decision(name=name, kind=kind, allowed=bool(scopes))

    # -- the OAuth flow ------------------------------------------------------------------------

    def _cookie(self, name: str, value: str, *, secure: bool, max_age: int | None) -> bytes:
        parts = [f"{name}={value}", f"Path={self.cookie_path}", "HttpOnly", "SameSite=Lax"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if secure or self.hub.cookie_options.get("secure"):
            parts.append("Secure")
        return "; ".join(parts).encode("latin-1")

    def _signed(self, name: str, value: str) -> str:
        return create_signed_value(self._secret, name, value).decode("ascii")

    def login(self, next_url: str, cookies: Mapping[str, str], *, secure: bool) -> pages.Reply:
        """Send a browser to the hub's OAuth authorize page, remembering where it was going."""
        auth = self.hub_auth
        extra: dict[str, str] = {}
        cookie_name = self.state_cookie_name
        if cookie_name in cookies:
            # another login is under way in this browser: use a cookie of its own
            cookie_name = f"{cookie_name}-{secrets.token_hex(4)}"
            extra["cookie_name"] = cookie_name
        verifier, challenge, method = auth.generate_pkce_code_challenge()
        state = auth.generate_state(next_url, code_verifier=verifier, **extra)
        query = urlencode(
            {
                "client_id": auth.oauth_client_id,
                "redirect_uri": auth.oauth_redirect_uri,
                "response_type": "code",
                "state": state,
                "code_challenge": challenge,
                "code_challenge_method": method,
            }
        )
        cookie = self._cookie(
            cookie_name, self._signed(cookie_name, state), secure=secure, max_age=600
        )
        return pages.redirect(f"{auth.oauth_authorization_url}?{query}", cookies=[cookie])

    async def callback(
        self, query: str, cookies: Mapping[str, str], *, secure: bool, html: bool
    ) -> pages.Reply:
        """Finish the OAuth flow: check the state, trade the code for a token, set the cookie."""
        auth = self.hub_auth
        args = {k: v[0] for k, v in parse_qs(query).items()}
        if "error" in args:
            message = args.get("error_description", args["error"])
            return pages.error(400, f"The hub refused the login: {message}", html=html)
        code, state = args.get("code"), args.get("state")
        if not code or not state:
            return pages.error(
                400, "The login callback lacks its code or state; log in again.", html=html
            )
        cookie_name = auth.get_state_cookie_name(state)
        raw = cookies.get(cookie_name)
        cookie_state = (
            decode_signed_value(self._secret, cookie_name, raw, max_age_days=1) if raw else None
        )
        expired = [
            self._cookie(name, "", secure=secure, max_age=0)
            for name in cookies
            if name.startswith(self.state_cookie_name)
        ]
        if cookie_state is None or cookie_state.decode("ascii", "replace") != state:
            return pages.error(403, "The login state does not match; log in again.", html=html)
        next_url = auth.get_next_url(state)
        verifier = auth.get_code_verifier(state)
        auth.clear_oauth_state(state)
        try:
            token = await auth.token_for_code(code, code_verifier=verifier, sync=False)
            decision = await self.decide(token)
        except (HTTPError, HTTPClientError, OSError, AuthError) as e:
            log.warning("OAuth code exchange failed: %s", e)
            return pages.error(502, "The hub could not complete the login; try again.", html=html)
        if decision is None:
            return pages.error(500, "The hub issued a token it does not recognise.", html=html)
        log.info("Logged in %s %s", decision.kind, decision.name)
        login_cookie = self._cookie(
            self.cookie_name, self._signed(self.cookie_name, token), secure=secure, max_age=None
        )
        if not next_url.startswith(self.hub.prefix):
            next_url = self.hub.prefix
        return pages.redirect(next_url, cookies=[*expired, login_cookie])
