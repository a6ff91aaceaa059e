"""Tell a site's chat or e-mail bridge about warnings and ends: a JSON POST to one URL.

The body is one event (see ``openapi.yaml``, schema ``WebhookEvent``). With a secret set, the
request carries ``X-Berth-Signature: sha256=<hex HMAC-SHA256 of the body>`` so the receiver can
check it came from the culler. A failed delivery is logged and reported to the caller, which
decides whether to try again; it never delays an end.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest

__all__ = ["SIGNATURE_HEADER", "Webhook", "sign"]

log = logging.getLogger("berth.culler")

SIGNATURE_HEADER = "X-Berth-Signature"


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for ``body``."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class Webhook:
    """POSTs events to ``url``; ``send`` returns whether the receiver answered 2xx."""

    def __init__(self, url: str, *, secret: str = "", timeout: float = 10.0) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self._http = AsyncHTTPClient(force_instance=True, max_clients=4)

    def close(self) -> None:
        self._http.close()

    async def send(self, event: dict[str, Any]) -> bool:
        body = json.dumps(event, sort_keys=True).encode("utf-8")
        headers = {"Content-Type": "application/json", "User-Agent": "berth-culler"}
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body)
        request = HTTPRequest(
            self.url,
            method="POST",
            body=body,
            headers=headers,
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
            follow_redirects=False,
        )
        try:
            await self._http.fetch(request)
        except HTTPClientError as e:
            log.warning("webhook %s answered %s for %s", self.url, e.code, event.get("event"))
            return False
        except OSError as e:
            log.warning("webhook %s unreachable for %s: %s", self.url, event.get("event"), e)
            return False
        return True
