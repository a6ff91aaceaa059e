"""The JSON Schema of ``user_options``, generated from the catalog. Pure.

It states the same rules as :func:`~berth.spawners.options.validate_user_options` (and, given the
profiles a backend cannot run, as ``BerthSpawner.check_user_options``), so that programs, the
``berth`` CLI and the spawn page can check a request before sending it. The validator stays the
authority: the schema is for clients, and the tests generate values to check that both accept
and refuse alike.

Draft 2020-12. Every key of ``user_options`` is optional where the validator fills it in (the
first service the user may use, its first profile, the policy's default duration) and ``null``
means the same as absent, as it does for the validator.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

from berth.hub_config.catalog import Catalog, InputSpec, ServiceType

from .options import MIN_HOURS

__all__ = [
    "CONTROL_CHARACTER",
    "DRAFT",
    "input_schema",
    "service_options_schema",
    "user_options_schema",
]

DRAFT = "https://json-schema.org/draft/2020-12/schema"
#: What the validator refuses anywhere in a text input (``berth.hub_config.inputs``). Written as
#: a search for the character, since ``$`` also matches before a final newline in Python.
CONTROL_CHARACTER = "[\\u0000-\\u001f\\u007f]"

Schema = dict[str, Any]


def _hours(seconds: float) -> float:
    return seconds / 3600


def _nullable(type_name: str, nullable: bool) -> str | list[str]:
    return [type_name, "null"] if nullable else type_name


def _must_be_given(spec: InputSpec) -> bool:
    """The validator refuses a missing or null value only for required inputs with no default."""
    return spec.required and spec.default is None


def input_schema(spec: InputSpec) -> Schema:
    """The rules of one service input (``check_input``), plus ``null`` for "use the default"."""
    nullable = not _must_be_given(spec)
    schema: Schema = {"title": spec.label}
    if spec.description:
        schema["description"] = spec.description
    if spec.type == "choice":
        schema["enum"] = [*spec.choices, *([None] if nullable else [])]
    elif spec.type == "boolean":
        schema["type"] = _nullable("boolean", nullable)
    elif spec.type in ("integer", "number"):
        schema["type"] = _nullable(spec.type, nullable)
        if spec.minimum is not None:
            schema["minimum"] = spec.minimum
        if spec.maximum is not None:
            schema["maximum"] = spec.maximum
    else:
        schema["type"] = _nullable("string", nullable)
        schema["maxLength"] = spec.max_length
        if spec.min_length:
            schema["minLength"] = spec.min_length
        schema["not"] = {"type": "string", "pattern": CONTROL_CHARACTER}
        if spec.pattern is not None:
            # JSON Schema patterns are searched, the validator's are matched in full.
            schema["pattern"] = f"^(?:{spec.pattern})$"
    if spec.default is not None:
        schema["default"] = spec.default
    return schema


def _inputs_schema(service: ServiceType) -> tuple[Schema, bool]:
    needed = [spec.name for spec in service.inputs if _must_be_given(spec)]
    schema: Schema = {
        "type": "object" if needed else ["object", "null"],
        "properties": {spec.name: input_schema(spec) for spec in service.inputs},
        "additionalProperties": False,
    }
    if needed:
        schema["required"] = needed
    return schema, bool(needed)


def service_options_schema(
    catalog: Catalog,
    service: ServiceType,
    groups: Iterable[str] = (),
    unavailable: Collection[str] = (),
) -> Schema | bool:
    """``user_options`` that launch ``service`` for a user in ``groups``.

    ``unavailable``: names of profiles the backend cannot run (``profile_unavailable``). The
    answer is ``False`` (nothing is valid) when the user may run none of its profiles here.
    """
    groups = set(groups)
    allowed = catalog.profiles_for(service, groups)
    if service not in catalog.services_for(groups) or not allowed:
        return False
    runnable = [profile for profile in allowed if profile.name not in unavailable]
    if not runnable:
        return False
    default = allowed[0]
    default_runs = default.name not in unavailable
    is_default_service = catalog.services_for(groups)[0] is service

    required: list[str] = []
    if is_default_service:
        service_rule: Schema = {"enum": [service.name, None]}
    else:
        service_rule = {"const": service.name}
        required.append("service")
    names: list[str | None] = [profile.name for profile in runnable]
    if default_runs:
        names.append(None)
    else:
        required.append("profile")
    maxima = {
        profile.name: _hours(
            catalog.policy_for(service, profile, groups).max_duration.total_seconds()
        )
        for profile in runnable
    }
    hours: Schema = {
        "type": ["number", "null"],
        "minimum": MIN_HOURS,
        "description": "how long the session may run, in hours (null: the policy's default)",
    }
    conditions: list[Schema] = []
    if len(set(maxima.values())) == 1:
        hours["maximum"] = next(iter(maxima.values()))
    else:
        for name, maximum in maxima.items():
            match: Schema = {"properties": {"profile": {"const": name}}, "required": ["profile"]}
            if name == default.name:
                # absent or null means the default profile
                match = {"properties": {"profile": {"enum": [name, None]}}}
            conditions.append(
                {"if": match, "then": {"properties": {"hours": {"maximum": maximum}}}}
            )
    inputs, inputs_needed = _inputs_schema(service)
    if inputs_needed:
        required.append("inputs")
    schema: Schema = {
        "title": f"{service.display_name} ({service.name})",
        "type": "object",
        "properties": {
            "service": service_rule,
            "profile": {"enum": names},
            "hours": hours,
            "inputs": inputs,
        },
        "additionalProperties": False,
    }
    if service.description:
        schema["description"] = service.description
    if required:
        schema["required"] = required
    if conditions:
        schema["allOf"] = conditions
    return schema


def user_options_schema(
    catalog: Catalog, groups: Iterable[str] = (), unavailable: Collection[str] = ()
) -> Schema | bool:
    """Every ``user_options`` a user in ``groups`` may send: one of the services' schemas."""
    groups = set(groups)
    parts = {
        service.name: service_options_schema(catalog, service, groups, unavailable)
        for service in catalog.services_for(groups)
    }
    runnable = {name: schema for name, schema in parts.items() if schema is not False}
    if not runnable:
        return False
    return {
        "$schema": DRAFT,
        "title": "user_options",
        "oneOf": [{"$ref": f"#/$defs/{name}"} for name in runnable],
        "$defs": runnable,
    }
