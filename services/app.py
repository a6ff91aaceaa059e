"""``berth-culler``: the hub-managed service that ends idle and expired sessions.

The hub starts it (see :func:`berth.services.culler_config`) with ``JUPYTERHUB_API_TOKEN``,
``JUPYTERHUB_API_URL``, ``JUPYTERHUB_SERVICE_PREFIX`` and ``JUPYTERHUB_SERVICE_URL`` set; it runs
a pass every ``interval`` seconds and serves its API at the service prefix.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

from tornado import web
from tornado.httpserver import HTTPServer
from traitlets import Bool, Float, Int, Unicode, default, validate
from traitlets.config import Application

from berth.hub_config.loader import load_catalog

from . import clock
from .api import make_handlers
from .culler import Culler
from .hubclient import HubClient, RetryPolicy
from .ledger import Ledger
from .webhook import Webhook

__all__ = ["CullerApp", "main"]


class CullerApp(Application):
    name = "berth-culler"
    description = "Ends idle and expired Berth sessions, serves the extend and deadlines API."

    aliases = {
        "catalog": "CullerApp.catalog",
        "db-url": "CullerApp.db_url",
        "interval": "CullerApp.interval",
        "concurrency": "CullerApp.concurrency",
        "page-size": "CullerApp.page_size",
        "webhook-url": "CullerApp.webhook_url",
        "log-level": "Application.log_level",
        "config": "CullerApp.config_file",
    }
    flags = {
        "once": ({"CullerApp": {"once": True}}, "Run one pass, print its summary and exit."),
        "dry-run": ({"CullerApp": {"dry_run": True}}, "Decide and log, but end nothing."),
    }

    config_file = Unicode(
        "",
        help="A Python config file to load (traitlets), e.g. berth_culler_config.py.",
    ).tag(config=True)

    catalog = Unicode(
        help="""Path of the Berth catalog (berth.yaml) the hub uses: the policies come from it.

        Default: $BERTH_CATALOG.""",
    ).tag(config=True)

    @default("catalog")
    def _catalog_default(self) -> str:
        return os.environ.get("BERTH_CATALOG", "")

    db_url = Unicode(
        "sqlite:///berth-culler.sqlite",
        help="""SQLAlchemy URL of the ledger (extensions, warnings, ends).

        The default is a sqlite file in the working directory (the hub's, when the hub starts the
        culler). For PostgreSQL: postgresql+psycopg://user:password@host/dbname (needs the
        `postgres` extra). The tables are created if missing.""",
    ).tag(config=True)

    interval = Float(
        60.0,
        help="""Seconds between the starts of two passes. Each session is warned and ended at
        most this late.""",
    ).tag(config=True)

    concurrency = Int(
        10,
        help="Most requests in flight to the hub at once (pages read and servers stopped).",
    ).tag(config=True)

    page_size = Int(
        200,
        help="""Users per page when reading the hub's user list. The hub caps it at its
        `JupyterHub.api_page_max_limit` (200 by default).""",
    ).tag(config=True)

    request_timeout = Float(
        30.0, help="Seconds to wait for one hub API answer before counting it a failure."
    ).tag(config=True)

    retry_for = Float(
        60.0,
        help="""Seconds to keep retrying one hub request (connection errors, timeouts, 5xx, 429)
        with exponential backoff before giving up on it. A pass whose list could not be read
        decides nothing; the next pass starts afresh.""",
    ).tag(config=True)

    max_data_age = Float(
        120.0,
        help="""Seconds. If reading the whole server list takes longer than this (a slow hub),
        the pass takes no decision on it: activity may have happened since the first pages were
        read.""",
    ).tag(config=True)

    webhook_url = Unicode(
        "",
        help="""URL that receives a JSON POST for each warning (once per session and deadline)
        and each session ended. Empty: no webhook. See openapi.yaml, schema WebhookEvent.""",
    ).tag(config=True)

    webhook_secret = Unicode(
        "",
        help="""If set, each webhook request carries X-Berth-Signature: sha256=<HMAC-SHA256 of
        the body with this secret>. Default: $BERTH_CULLER_WEBHOOK_SECRET.""",
    ).tag(config=True)

    @default("webhook_secret")
    def _webhook_secret_default(self) -> str:
        return os.environ.get("BERTH_CULLER_WEBHOOK_SECRET", "")

    webhook_timeout = Float(10.0, help="Seconds to wait for the webhook to answer.").tag(
        config=True
    )

    dry_run = Bool(
        False, help="Decide and log, but end nothing and record nothing in the ledger."
    ).tag(config=True)

    once = Bool(False, help="Run one pass, print its summary, and exit (cron or benchmarks).").tag(
        config=True
    )

    api_url = Unicode(help="The hub's API URL. Default: $JUPYTERHUB_API_URL, set by the hub.").tag(
        config=True
    )

    @default("api_url")
    def _api_url_default(self) -> str:
        return os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")

    api_token = Unicode(
        help="Token for the hub's API. Default: $JUPYTERHUB_API_TOKEN, set by the hub."
    ).tag(config=True)

    @default("api_token")
    def _api_token_default(self) -> str:
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    service_prefix = Unicode(
        help="URL prefix of the API. Default: $JUPYTERHUB_SERVICE_PREFIX, set by the hub."
    ).tag(config=True)

    @default("service_prefix")
    def _service_prefix_default(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/berth-culler/")

    @validate("service_prefix")
    def _check_prefix(self, proposal: Any) -> str:
        value = str(proposal["value"])
        return value if value.endswith("/") else value + "/"

    bind_url = Unicode(
        help="""Where the API listens. Default: $JUPYTERHUB_SERVICE_URL, set by the hub from the
        service's `url`. Empty: no API (passes only).""",
    ).tag(config=True)

    @default("bind_url")
    def _bind_url_default(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_URL", "")

    public_url = Unicode(
        "",
        help="""The culler's own public URL (https://hub.example.org/services/berth-culler/),
        used to give webhook receivers a full link to the extend API. Default:
        $JUPYTERHUB_PUBLIC_URL, which the hub sets when JupyterHub.public_url is configured;
        none otherwise.""",
    ).tag(config=True)

    @default("public_url")
    def _public_url_default(self) -> str:
        return os.environ.get("JUPYTERHUB_PUBLIC_URL", "")

    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)
        if self.config_file:
            self.load_config_file(self.config_file)
        # The culler's modules log to "berth.culler"; show those lines as the application's.
        culler_log = logging.getLogger("berth.culler")
        culler_log.setLevel(self.log.getEffectiveLevel())
        for handler in self.log.handlers:
            culler_log.addHandler(handler)
        culler_log.propagate = False
        if not self.catalog:
            self.log.critical("berth-culler needs --catalog=PATH (or $BERTH_CATALOG)")
            self.exit(2)
        if not self.api_token:
            self.log.critical("berth-culler needs a hub API token ($JUPYTERHUB_API_TOKEN)")
            self.exit(2)

    def build(self) -> tuple[Culler, HubClient, Ledger, Webhook | None]:
        catalog = load_catalog(self.catalog)
        hub = HubClient(
            self.api_url,
            self.api_token,
            concurrency=self.concurrency,
            request_timeout=self.request_timeout,
            retry=RetryPolicy(retry_for=self.retry_for),
        )
        ledger = Ledger(self.db_url)
        webhook = None
        if self.webhook_url:
            webhook = Webhook(
                self.webhook_url, secret=self.webhook_secret, timeout=self.webhook_timeout
            )
        service_url = self.public_url.rstrip("/")
        culler = Culler(
            catalog,
            hub,
            ledger,
            webhook=webhook,
            page_size=self.page_size,
            max_data_age=timedelta(seconds=self.max_data_age),
            dry_run=self.dry_run,
            service_url=service_url,
        )
        return culler, hub, ledger, webhook

    async def run(self) -> None:
        culler, hub, ledger, webhook = self.build()
        server: HTTPServer | None = None
        try:
            if self.once:
                report = await culler.run_pass()
                print(report.summary())
                return
            if self.bind_url:
                url = urlparse(self.bind_url)
                app = web.Application(
                    make_handlers(self.service_prefix, culler),
                    cookie_secret=os.urandom(32),
                )
                server = HTTPServer(app, xheaders=True)
                server.listen(url.port or 80, url.hostname or "127.0.0.1")
                self.log.info(
                    "berth-culler API at %s%s", self.bind_url.rstrip("/"), self.service_prefix
                )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            if os.environ.get("JUPYTERHUB_SERVICE_NAME"):
                # Started by the hub: end with it, even if it died without stopping us.
                self._watchdog = asyncio.ensure_future(self._watch_parent(stop))
            while not stop.is_set():
                began = clock.now()
                try:
                    await culler.run_pass()
                except Exception:
                    # The ledger's database away, a bug: log it, keep the service up, try again.
                    self.log.exception("the pass failed; the next one starts afresh")
                elapsed = (clock.now() - began).total_seconds()
                try:
                    await asyncio.wait_for(stop.wait(), max(1.0, self.interval - elapsed))
                except TimeoutError:
                    pass
        finally:
            if server is not None:
                server.stop()
            hub.close()
            if webhook is not None:
                webhook.close()
            ledger.close()

    async def _watch_parent(self, stop: asyncio.Event) -> None:
        parent = os.getppid()
        while not stop.is_set():
            if os.getppid() != parent:
                self.log.warning("the hub that started berth-culler is gone; stopping")
                stop.set()
                return
            try:
                await asyncio.wait_for(stop.wait(), 2.0)
            except TimeoutError:
                pass

    def start(self) -> None:
        asyncio.run(self.run())


def main(argv: list[str] | None = None) -> None:
    app = CullerApp()
    app.initialize(argv)
    app.start()


if __name__ == "__main__":
    main()
