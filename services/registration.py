"""Register berth-culler with the hub: the service entry, its role, and users' access to it.

``jupyterhub_config.py`` (through :func:`berth.hub_config.configure`) calls::

    service, role = culler_config("berth.yaml")
    c.JupyterHub.services.append(service)
    c.JupyterHub.load_roles.append(role)

or simply ``register_culler(c, "berth.yaml")``, which also lets every user reach the API.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Mapping
from typing import Any

from traitlets.config.loader import LazyConfigValue

__all__ = [
    "CULLER_SCOPES",
    "SERVICE_NAME",
    "culler_config",
    "register_culler",
    "user_access_scope",
]

SERVICE_NAME = "berth-culler"

#: Everything the culler needs from the hub, and nothing else:
#: list:users   list users with ready servers (GET /users?state=ready); includes read:users:name
#: read:servers the servers in those models: started, last_activity, user_options, ready, pending
#: read:users:groups   the user's groups, which pick the group policies
#: delete:servers      stop a session past its deadline
CULLER_SCOPES = ("list:users", "read:servers", "read:users:groups", "delete:servers")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def user_access_scope(name: str = SERVICE_NAME) -> str:
    """The scope a user needs to call the culler's API (to see deadlines and extend)."""
    return f"access:services!service={name}"


def culler_config(
    catalog_path: str | os.PathLike[str],
    *,
    name: str = SERVICE_NAME,
    port: int | None = None,
    db_url: str | None = None,
    interval: float | None = None,
    webhook_url: str | None = None,
    extra_args: tuple[str, ...] = (),
    environment: Mapping[str, str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The hub-managed service entry and its least-privilege role.

    ``port``: where the API listens on 127.0.0.1 (a free port is picked when None). ``db_url``:
    the ledger (default: ``sqlite:///berth-culler.sqlite`` in the hub's working directory).
    Other settings go in ``extra_args`` as ``--CullerApp.name=value``.
    """
    args = [sys.executable, "-m", "berth.services.app", f"--catalog={os.fspath(catalog_path)}"]
    if db_url is not None:
        args.append(f"--db-url={db_url}")
    if interval is not None:
        args.append(f"--interval={interval:g}")
    if webhook_url is not None:
        args.append(f"--webhook-url={webhook_url}")
    args.extend(extra_args)
    service: dict[str, Any] = {
        "name": name,
        "display": False,
        "url": f"http://127.0.0.1:{port or _free_port()}",
        "command": args,
        "oauth_no_confirm": True,
        "environment": dict(environment or {}),
    }
    role = {
        "name": name,
        "description": "berth-culler: read ready servers and groups, stop expired sessions",
        "scopes": list(CULLER_SCOPES),
        "services": [name],
    }
    return service, role


def _user_role(roles: list[dict[str, Any]]) -> dict[str, Any]:
    for role in roles:
        if role.get("name") == "user":
            return role
    role = {"name": "user", "scopes": ["self"]}
    roles.append(role)
    return role


def _as_list(section: Any, key: str) -> list[Any]:
    value = section[key] if key in section else []
    if isinstance(value, LazyConfigValue):  # c.JupyterHub.services.append(...) on an unset list
        value = value.get_value([])
    return list(value)


def register_culler(c: Any, catalog_path: str | os.PathLike[str], **options: Any) -> None:
    """Add the culler to a hub config ``c``; every user may call its API for their sessions.

    Adds the service, its role, and ``access:services!service=berth-culler`` to the ``user``
    role (defining that role as ``self`` plus this scope if the config does not define it).
    """
    service, role = culler_config(catalog_path, **options)
    c.JupyterHub.services = [*_as_list(c.JupyterHub, "services"), service]
    roles = [dict(r) for r in _as_list(c.JupyterHub, "load_roles")]
    roles.append(role)
    user_role = _user_role(roles)
    scopes = list(user_role.get("scopes", ["self"]))
    if user_access_scope(service["name"]) not in scopes:
        scopes.append(user_access_scope(service["name"]))
    user_role["scopes"] = scopes
    c.JupyterHub.load_roles = roles
