"""Registration with the hub's config, and the retry schedule."""

from __future__ import annotations

import sys

from traitlets.config import Config

from berth.services import register_culler, user_access_scope
from berth.services.hubclient import RetryPolicy


def test_register_culler_adds_service_role_and_users_access_to_an_empty_config() -> None:
    c = Config()
    register_culler(c, "/etc/berth/berth.yaml", port=8765, db_url="sqlite:////var/lib/c.sqlite")
    assert c.JupyterHub.services == [
        {
            "name": "berth-culler",
            "display": False,
            "url": "http://127.0.0.1:8765",
            "command": [
                sys.executable,
                "-m",
                "berth.services.app",
                "--catalog=/etc/berth/berth.yaml",
                "--db-url=sqlite:////var/lib/c.sqlite",
            ],
            "oauth_no_confirm": True,
            "environment": {},
        }
    ]
    assert c.JupyterHub.load_roles == [
        {
            "name": "berth-culler",
            "description": "berth-culler: read ready servers and groups, stop expired sessions",
            "scopes": ["list:users", "read:servers", "read:users:groups", "delete:servers"],
            "services": ["berth-culler"],
        },
        {"name": "user", "scopes": ["self", "access:services!service=berth-culler"]},
    ]


def test_register_culler_keeps_what_the_config_already_has() -> None:
    c = Config()
    c.JupyterHub.services.append({"name": "other", "api_token": "x" * 32})  # a lazy append
    c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self", "access:servers!user"]}]
    register_culler(c, "berth.yaml", port=8765)
    assert [s["name"] for s in c.JupyterHub.services] == ["other", "berth-culler"]
    user_role = next(r for r in c.JupyterHub.load_roles if r["name"] == "user")
    assert user_role["scopes"] == ["self", "access:servers!user", user_access_scope()]


def test_backoff_doubles_up_to_its_cap_within_the_retry_window() -> None:
    assert RetryPolicy(start=0.5, cap=15, retry_for=60).delays() == [
        0.5, 1, 2, 4, 8, 15, 15,
    ]  # fmt: skip
    assert RetryPolicy(retry_for=0).delays() == []
