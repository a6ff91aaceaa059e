"""The catalog as KubeSpawner ``profile_list`` entries, the shape z2jh admins know.

One entry per catalog profile (``slug`` = the profile's name) with its resources and placement in
``kubespawner_override``, and one ``profile_options`` choice per service type that runs on it, each
choice carrying its image. Berth applies exactly these overrides (see :mod:`.builders`); it does not
let users pick anything outside them: no ``unlisted_choice`` is ever offered.
"""

from __future__ import annotations

from typing import Any

from berth.hub_config.catalog import Catalog, Profile

from .builders import profile_override, service_override

__all__ = ["catalog_profile_list", "profile_entry"]


def profile_entry(catalog: Catalog, profile: Profile, default_image: str) -> dict[str, Any]:
    services = [s for s in catalog.services.values() if profile.name in s.profiles]
    entry: dict[str, Any] = {
        "display_name": profile.display_name,
        "description": profile.description,
        "slug": profile.name,
        "kubespawner_override": profile_override(profile),
    }
    if services:
        entry["profile_options"] = {
            "service": {
                "display_name": "Service",
                "choices": {
                    service.name: {
                        "display_name": service.display_name,
                        "kubespawner_override": service_override(service, profile, default_image),
                    }
                    for service in services
                },
                "unlisted_choice": {"enabled": False},
            }
        }
    return entry


def catalog_profile_list(catalog: Catalog, default_image: str) -> list[dict[str, Any]]:
    entries = [profile_entry(catalog, p, default_image) for p in catalog.profiles.values()]
    if entries:
        entries[0]["default"] = True
    return entries
