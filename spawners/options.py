"""The one validator for what a user asks for: form, query string and REST ``user_options`` alike.

``user_options`` is an allow-list::

    {"service": "vllm", "profile": "gpu-1", "hours": 2, "inputs": {"model": "org/model"}}

Every key is optional (the first service the user may use, its first profile, the policy's default
duration); anything present must be known, typed, in range and match its pattern. A refusal is an
:class:`OptionsError`: HTTP 400 whose message says what was wrong and what is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tornado import web

from berth.hub_config.catalog import Catalog, InputValue, Policy, Profile, ServiceType
from berth.hub_config.inputs import InputError, check_input, coerce_form_value
from berth.hub_config.units import format_duration

__all__ = [
    "MIN_HOURS",
    "SESSION_NAME_PATTERN",
    "USER_OPTION_KEYS",
    "OptionsError",
    "Selection",
    "check_session_name",
    "describe_limits",
    "options_from_form",
    "validate_user_options",
]

USER_OPTION_KEYS = ("service", "profile", "hours", "inputs")
#: Session (named server) names: they appear in URLs, job names and pod names. The same rule as
#: JupyterHub 6's "safe slug" for new server names, so the CLI can check before asking the hub.
SESSION_NAME_PATTERN = re.compile(r"^(?=.{1,30}$)[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
_MAX_TEXT = 200
#: The shortest duration anyone may ask for: one minute.
MIN_HOURS = 1 / 60


class OptionsError(web.HTTPError):
    """A request the catalog does not allow. Shown to the user as it is (HTTP 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, "%s", message)
        self.message = message
        # JupyterHub shows this on the spawn page and in API error bodies.
        self.jupyterhub_message = message

    def __str__(self) -> str:
        return self.message


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _hours(duration: timedelta) -> str:
    hours = duration.total_seconds() / 3600
    return f"{hours:g} hour{'s' * (hours != 1)}"


@dataclass(frozen=True)
class Selection:
    """A checked choice: the catalog objects it names, the duration, the inputs, the policy."""

    service: ServiceType
    profile: Profile
    duration: timedelta
    inputs: Mapping[str, InputValue]
    policy: Policy

    def to_user_options(self) -> dict[str, Any]:
        """The canonical ``user_options`` this selection stands for."""
        return {
            "service": self.service.name,
            "profile": self.profile.name,
            "hours": round(self.duration.total_seconds() / 3600, 4),
            "inputs": dict(self.inputs),
        }


def check_session_name(name: str) -> None:
    """Refuse session names that are not safe in URLs, job names and labels."""
    if name and not SESSION_NAME_PATTERN.match(name):
        raise OptionsError(
            f"{_show(name)} is not a valid session name; use 1-30 lower-case letters, digits and"
            " single '-', starting with a letter (e.g. llm-1)"
        )


def _pick_service(catalog: Catalog, raw: object, groups: set[str]) -> ServiceType:
    available = catalog.services_for(groups)
    if raw is None:
        if not available:
            raise OptionsError("no service is available to you; ask an admin for access")
        return available[0]
    if not isinstance(raw, str) or raw not in catalog.services:
        names = ", ".join(s.name for s in available) or "(none)"
        raise OptionsError(f"unknown service {_show(raw)}; available: {names}")
    service = catalog.services[raw]
    if service not in available:
        raise OptionsError(
            f"service '{raw}' is limited to the groups {', '.join(service.allowed_groups)}"
        )
    return service


def _pick_profile(catalog: Catalog, service: ServiceType, raw: object, groups: set[str]) -> Profile:
    allowed = catalog.profiles_for(service, groups)
    if raw is None:
        return allowed[0]
    names = ", ".join(p.name for p in allowed)
    if not isinstance(raw, str) or raw not in service.profiles:
        raise OptionsError(
            f"{_show(raw)} is not a profile {service.name} runs on; choose one of: {names}"
        )
    profile = catalog.profiles[raw]
    if profile not in allowed:
        raise OptionsError(
            f"profile '{raw}' is limited to the groups {', '.join(profile.allowed_groups)};"
            f" you may use: {names}"
        )
    return profile


def _pick_duration(raw: object, policy: Policy, where: str) -> timedelta:
    if raw is None:
        return policy.default_duration
    if (
        isinstance(raw, bool)
        or not isinstance(raw, int | float)
        or (isinstance(raw, float) and not math.isfinite(raw))
    ):
        raise OptionsError(f"hours must be a number such as 2 or 0.5, got {_show(raw)}")
    # Compare the number as sent (not after rounding), so the JSON Schema states the same rule.
    if raw < MIN_HOURS:
        raise OptionsError(f"hours must be at least one minute (0.0167), got {_show(raw)}")
    if raw > policy.max_duration.total_seconds() / 3600:
        raise OptionsError(
            f"{raw:g} hours is longer than the {_hours(policy.max_duration)} allowed for {where};"
            f" ask for at most {policy.max_duration.total_seconds() / 3600:g}"
        )
    return min(timedelta(minutes=round(raw * 60)), policy.max_duration)


def _pick_inputs(service: ServiceType, raw: object) -> dict[str, InputValue]:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise OptionsError(f"inputs must be an object of name to value, got {_show(raw)}")
    known = ", ".join(spec.name for spec in service.inputs) or "none"
    for key in raw:
        if service.input(key) is None:
            raise OptionsError(f"{service.name} has no input {_show(key)}; its inputs are: {known}")
    values: dict[str, InputValue] = {}
    for spec in service.inputs:
        if spec.name in raw and raw[spec.name] is not None:
            try:
                values[spec.name] = check_input(spec, raw[spec.name])
            except InputError as e:
                raise OptionsError(f"input '{spec.name}' of {service.name}: {e}") from None
        elif spec.default is not None:
            values[spec.name] = spec.default
        elif spec.required:
            about = f" ({spec.description})" if spec.description else ""
            raise OptionsError(f"{service.name} needs the input '{spec.name}'{about}")
    return values


def validate_user_options(
    catalog: Catalog, options: object, groups: Iterable[str] = ()
) -> Selection:
    """Check ``options`` against the catalog for a user in ``groups``; raise OptionsError."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise OptionsError(f"user_options must be an object, got {_show(options)}")
    for key in options:
        if key not in USER_OPTION_KEYS:
            raise OptionsError(
                f"unknown option {_show(key)}; allowed options: {', '.join(USER_OPTION_KEYS)}"
            )
    group_set = set(groups)
    service = _pick_service(catalog, options.get("service"), group_set)
    profile = _pick_profile(catalog, service, options.get("profile"), group_set)
    policy = catalog.policy_for(service, profile, group_set)
    where = f"{service.name} on {profile.name}"
    duration = _pick_duration(options.get("hours"), policy, where)
    inputs = _pick_inputs(service, options.get("inputs"))
    return Selection(service, profile, duration, inputs, policy)


def _one(formdata: Mapping[str, list[Any]], key: str) -> str | None:
    values = formdata.get(key)
    if not values:
        return None
    value = values[-1]  # a checkbox after its hidden "off" field: the last one wins
    if not isinstance(value, str):
        raise OptionsError(f"form field {_show(key)} must be text")
    if len(value) > 4096:
        raise OptionsError(f"form field {_show(key)} is too long")
    return value


def options_from_form(catalog: Catalog, formdata: Mapping[str, list[Any]]) -> dict[str, Any]:
    """Turn the spawn form (or a query string) into ``user_options``; check happens after.

    Fields: ``service``; then, for the chosen service only, ``<service>.profile``,
    ``<service>.hours`` and ``<service>.input.<name>`` (each tile has its own fields, so the page
    works without JavaScript). ``profile``, ``hours`` and ``input.<name>`` are accepted too, for
    links such as ``/hub/spawn/alice/llm?service=vllm&profile=gpu-1&input.model=...``.
    """
    options: dict[str, Any] = {}
    service_name = _one(formdata, "service")
    if service_name is None:
        return options
    options["service"] = service_name
    service = catalog.services.get(service_name)
    prefixes = [f"{service_name}.", ""] if service else [""]

    def field(name: str) -> str | None:
        for prefix in prefixes:
            value = _one(formdata, prefix + name)
            if value is not None:
                return value
        return None

    profile = field("profile")
    if profile:
        options["profile"] = profile
    hours = field("hours")
    if hours not in (None, ""):
        try:
            options["hours"] = float(hours)
        except ValueError:
            raise OptionsError(
                f"hours must be a number such as 2 or 0.5, got {_show(hours)}"
            ) from None
    if service is None:
        return options
    inputs: dict[str, InputValue] = {}
    for spec in service.inputs:
        text = field(f"input.{spec.name}")
        if text is None or text == "":
            continue
        try:
            inputs[spec.name] = coerce_form_value(spec, text)
        except InputError as e:
            raise OptionsError(f"input '{spec.name}' of {service.name}: {e}") from None
    if inputs:
        options["inputs"] = inputs
    return options


def describe_limits(policy: Policy) -> str:
    """One line for pages and the CLI: how long a session may run and idle."""
    idle = "never" if policy.idle_timeout is None else format_duration(policy.idle_timeout)
    return (
        f"up to {format_duration(policy.max_duration)}"
        f" (+{format_duration(policy.extension_cap)} by extension), idle limit {idle}"
    )
