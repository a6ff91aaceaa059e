"""What Berth's pages show about a user's sessions (``berth`` in the templates' namespace).

:func:`configure` puts :func:`page_data` in ``JupyterHub.template_vars``; JupyterHub calls it with
the user viewing a page and the home page (templates/home.html) draws a card per session from it.
:func:`session_card` is the pure part: one session's card from its options and the catalog.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from .catalog import Catalog
from .units import format_memory

__all__ = ["CULLER_SERVICE", "page_data", "session_card", "suggest_name"]

#: The hub service that keeps deadlines and grants extensions.
CULLER_SERVICE = "berth-culler"
_STATE_LABELS = {
    "running": "Running",
    "starting": "Starting",
    "stopping": "Stopping",
    "stopped": "Stopped",
}


def _cpus(value: float) -> str:
    return f"{value:g}"


def session_card(
    name: str,
    options: Mapping[str, Any] | None,
    *,
    state: str,
    catalog: Catalog | None,
    url: str,
    progress_url: str,
) -> dict[str, Any]:
    """One session as a card: what runs, on what, where, and in which state."""
    options = options or {}
    service = catalog.services.get(str(options.get("service"))) if catalog else None
    profile = catalog.profiles.get(str(options.get("profile"))) if catalog else None
    url_path = service.url_path if service is not None else "/"
    hours = options.get("hours")
    inputs = options.get("inputs") if isinstance(options.get("inputs"), dict) else {}
    return {
        "name": name,
        "state": state,
        "state_label": _STATE_LABELS.get(state, state.capitalize()),
        "active": state in ("running", "starting", "stopping"),
        "service": service.name if service else options.get("service"),
        "service_display_name": (
            service.display_name if service else str(options.get("service") or "Session")
        ),
        "profile": profile.name if profile else options.get("profile"),
        "profile_display_name": profile.display_name if profile else options.get("profile"),
        "cpus": _cpus(profile.cpus) if profile else None,
        "memory": format_memory(profile.memory) if profile else None,
        "gpus": profile.gpus if profile else 0,
        "gpu_type": (profile.gpu_type or "GPU").upper() if profile and profile.gpus else None,
        "hours": hours if isinstance(hours, int | float) else None,
        "inputs": dict(inputs or {}),
        "url": url,
        "open_url": url.rstrip("/") + url_path if url_path != "/" else url,
        "progress_url": progress_url,
    }


def suggest_name(taken: Iterable[str]) -> str:
    """The first of session-1, session-2... not in use."""
    taken = set(taken)
    number = 1
    while f"session-{number}" in taken:
        number += 1
    return f"session-{number}"


def _state(spawner: Any) -> str:
    # stopped sessions come as the hub's database records, which have no ready/pending
    if getattr(spawner, "ready", False):
        return "running"
    pending = getattr(spawner, "pending", None)
    if pending == "spawn":
        return "starting"
    if pending == "stop":
        return "stopping"
    return "stopped"


def _catalog(user: Any, spawners: list[Any]) -> Catalog | None:
    """The catalog, from a running session's spawner or else the user's default one."""
    source = next((s for s in spawners if hasattr(s, "berth_catalog")), None) or user.spawner
    if not hasattr(source, "berth_catalog"):
        return None
    try:
        catalog: Catalog = source.berth_catalog
    except Exception:  # a broken catalog file must not break the page
        source.log.exception("Berth could not read the catalog for the home page")
        return None
    return catalog


def _culler_api(user: Any) -> str | None:
    services: Mapping[str, Any] = (getattr(user, "settings", None) or {}).get("services") or {}
    culler = services.get(CULLER_SERVICE)
    return f"{culler.prefix}api/" if culler is not None else None


def page_data(user: Any) -> dict[str, Any] | None:
    """``JupyterHub.template_vars`` entry: the viewer's sessions as cards (None when no one is
    logged in)."""
    if user is None or not hasattr(user, "all_spawners"):
        return None
    spawners = list(user.all_spawners(include_default=False))
    catalog = _catalog(user, spawners) if spawners else None
    cards = []
    for spawner in spawners:
        record = getattr(spawner, "orm_spawner", None) or spawner
        options = record.user_options or getattr(spawner, "user_options", None)
        cards.append(
            session_card(
                spawner.name,
                options,
                state=_state(spawner),
                catalog=catalog,
                url=user.server_url(spawner.name),
                progress_url=user.progress_url(spawner.name),
            )
        )
    cards.sort(key=lambda card: (not card["active"], card["name"]))
    return {
        "sessions": cards,
        "culler_api": _culler_api(user),
        "suggested_name": suggest_name(card["name"] for card in cards),
        "session_name_pattern": re.sub(r"^\^|\$$", "", _SESSION_NAME),
    }


#: JupyterHub 6's rule for new server names (the same as berth.spawners.options).
_SESSION_NAME = r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$"
