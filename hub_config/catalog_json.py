"""The catalog as one user sees it, as JSON (``GET /hub/api/berth/catalog``). Pure.

Service types the user may launch, the profiles each allows with their resources and policy,
the inputs each asks for, and the ``user_options`` JSON Schema of each. Profiles the backend cannot
run are listed with ``available: false`` and the reason, so a client can say why.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any

from berth.spawners.options import describe_limits
from berth.spawners.schema import service_options_schema, user_options_schema

from .catalog import Catalog, InputSpec, Policy, Profile, ServiceType
from .units import format_memory

__all__ = ["catalog_document", "input_document", "policy_document", "profile_document"]


def _seconds(value: timedelta | None) -> int | None:
    return None if value is None else round(value.total_seconds())


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def policy_document(policy: Policy) -> dict[str, Any]:
    return {
        "default_seconds": _seconds(policy.default_duration),
        "max_seconds": _seconds(policy.max_duration),
        "extension_cap_seconds": _seconds(policy.extension_cap),
        "idle_timeout_seconds": _seconds(policy.idle_timeout),
        "warn_before_seconds": _seconds(policy.warn_before),
        "summary": describe_limits(policy),
    }


def profile_document(profile: Profile, policy: Policy, unavailable: str | None) -> dict[str, Any]:
    return {
        "name": profile.name,
        "display_name": profile.display_name,
        "description": profile.description,
        "cpus": _number(profile.cpus),
        "memory_bytes": profile.memory,
        "memory": format_memory(profile.memory),
        "gpus": profile.gpus,
        "gpu_type": profile.gpu_type,
        "available": unavailable is None,
        "unavailable_reason": unavailable,
        "policy": policy_document(policy),
    }


def input_document(spec: InputSpec) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": spec.name,
        "type": spec.type,
        "display_name": spec.label,
        "description": spec.description,
        "required": spec.required,
        "default": spec.default,
    }
    if spec.type == "choice":
        document["choices"] = list(spec.choices)
    if spec.type == "string":
        document.update(
            pattern=spec.pattern, min_length=spec.min_length, max_length=spec.max_length
        )
    if spec.type in ("integer", "number"):
        document.update(minimum=spec.minimum, maximum=spec.maximum)
    if spec.placeholder:
        document["placeholder"] = spec.placeholder
    return document


def _service_document(
    catalog: Catalog, service: ServiceType, groups: set[str], unavailable: Mapping[str, str]
) -> dict[str, Any]:
    allowed = catalog.profiles_for(service, groups)
    profiles = [
        profile_document(
            profile, catalog.policy_for(service, profile, groups), unavailable.get(profile.name)
        )
        for profile in allowed
    ]
    return {
        "name": service.name,
        "display_name": service.display_name,
        "description": service.description,
        "kind": service.kind,
        "url_path": service.url_path,
        "available": any(profile["available"] for profile in profiles),
        "default_profile": allowed[0].name,
        "profiles": profiles,
        "inputs": [input_document(spec) for spec in service.inputs],
        "user_options_schema": service_options_schema(catalog, service, groups, unavailable),
    }


def catalog_document(
    catalog: Catalog,
    groups: Iterable[str],
    unavailable: Mapping[str, str],
    *,
    user: str,
    culler_api: str | None = None,
) -> dict[str, Any]:
    """``unavailable``: profile name -> why this backend cannot run it.
    ``culler_api``: the path of berth-culler's API on the hub's public URL, if it runs."""
    groups = set(groups)
    services = catalog.services_for(groups)
    return {
        "user": user,
        "backend": catalog.backend,
        "default_service": services[0].name if services else None,
        "services": [
            _service_document(catalog, service, groups, unavailable) for service in services
        ],
        "user_options_schema": user_options_schema(catalog, groups, unavailable),
        "culler_api": culler_api,
    }
