"""What the commands decide before and after talking to the hub. Pure functions of the catalog
(``GET /hub/api/berth/catalog``), the hub's server models and berth-culler's session models."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import CliError, ExitCode
from .progress import phase_of

__all__ = [
    "SESSION_NAME",
    "choose_profile",
    "default_name",
    "find_service",
    "parse_inputs",
    "session_view",
    "state_of",
]

#: JupyterHub 6's rule for new server names, which Berth keeps (URLs, job and pod names).
SESSION_NAME = re.compile(r"^(?=.{1,30}$)[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _names(items: Iterable[Mapping[str, Any]]) -> str:
    return ", ".join(str(item["name"]) for item in items) or "(none)"


def find_service(catalog: Mapping[str, Any], name: str) -> dict[str, Any]:
    services: list[dict[str, Any]] = catalog.get("services", [])
    for service in services:
        if service["name"] == name:
            return service
    raise CliError(
        f"unknown service {name!r}; this hub offers: {_names(services)} (see `berth services`)",
        ExitCode.NOT_FOUND,
    )


def _gpu_label(profile: Mapping[str, Any]) -> str:
    if not profile["gpus"]:
        return "no GPU"
    kind = f" {str(profile['gpu_type']).upper()}" if profile.get("gpu_type") else ""
    return f"{profile['gpus']} x{kind} GPU"


def choose_profile(
    service: Mapping[str, Any],
    *,
    profile: str | None = None,
    gpus: int | None = None,
    gpu_type: str | None = None,
) -> dict[str, Any]:
    """The profile to launch on: the one named, the smallest with exactly ``gpus`` GPUs (of
    ``gpu_type``), or the service's default (the first one this hub can run if it cannot)."""
    profiles: list[dict[str, Any]] = service["profiles"]
    name = service["name"]
    if profile is not None:
        for candidate in profiles:
            if candidate["name"] == profile:
                if not candidate["available"]:
                    raise CliError(
                        f"profile {profile!r} cannot run on this hub: "
                        f"{candidate['unavailable_reason']}; choose another of {name}'s profiles"
                        " (`berth services " + name + "`)",
                        ExitCode.USAGE,
                    )
                return candidate
        raise CliError(
            f"{profile!r} is not a profile {name} runs on; choose one of: {_names(profiles)}",
            ExitCode.NOT_FOUND,
        )
    runnable = [p for p in profiles if p["available"]]
    if not runnable:
        reasons = "; ".join(f"{p['name']}: {p['unavailable_reason']}" for p in profiles)
        raise CliError(f"{name} cannot run on this hub ({reasons})", ExitCode.USAGE)
    if gpus is None and gpu_type is None:
        default = next((p for p in runnable if p["name"] == service["default_profile"]), None)
        return default or runnable[0]
    wanted = [
        p
        for p in runnable
        if (gpus is None or p["gpus"] == gpus)
        and (gpu_type is None or str(p.get("gpu_type") or "").lower() == gpu_type.lower())
        and (gpu_type is None or p["gpus"] > 0)
    ]
    if not wanted:
        asked = f"{gpus if gpus is not None else 'any number of'}"
        kind = f" {gpu_type.upper()}" if gpu_type else ""
        offered = ", ".join(f"{p['name']} ({_gpu_label(p)})" for p in runnable)
        raise CliError(
            f"no profile of {name} has {asked}{kind} GPU{'s' * (gpus != 1)}; it offers: {offered}",
            ExitCode.NOT_FOUND,
        )
    return min(wanted, key=lambda p: (p["gpus"], p["cpus"], p["memory_bytes"]))


def _coerce(spec: Mapping[str, Any], text: str, pair: str) -> Any:
    kind = spec["type"]
    if kind == "boolean":
        lowered = text.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise CliError(f"--input {pair}: expected true or false", ExitCode.USAGE)
    if kind == "integer":
        try:
            return int(text.strip())
        except ValueError:
            raise CliError(f"--input {pair}: expected a whole number", ExitCode.USAGE) from None
    if kind == "number":
        try:
            return float(text.strip())
        except ValueError:
            raise CliError(f"--input {pair}: expected a number", ExitCode.USAGE) from None
    if kind == "choice" and text not in spec.get("choices", []):
        choices = ", ".join(spec.get("choices", []))
        raise CliError(f"--input {pair}: choose one of: {choices}", ExitCode.USAGE)
    return text


def parse_inputs(service: Mapping[str, Any], pairs: Sequence[str]) -> dict[str, Any]:
    """``--input key=value`` arguments as typed ``inputs`` (the hub checks the rest)."""
    specs = {spec["name"]: spec for spec in service["inputs"]}
    known = ", ".join(specs) or "none"
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            example = next(iter(specs), "name")
            raise CliError(
                f"--input expects key=value (e.g. --input {example}=...), got {pair!r}",
                ExitCode.USAGE,
            )
        if key not in specs:
            raise CliError(
                f"{service['name']} has no input {key!r}; its inputs are: {known}", ExitCode.USAGE
            )
        if key in values:
            raise CliError(f"--input {key} is given twice", ExitCode.USAGE)
        values[key] = _coerce(specs[key], text, pair)
    for spec in specs.values():
        if spec["required"] and spec["default"] is None and spec["name"] not in values:
            about = f" ({spec['description']})" if spec.get("description") else ""
            raise CliError(
                f"{service['name']} needs --input {spec['name']}=...{about}", ExitCode.USAGE
            )
    return values


def default_name(service: str, taken: Iterable[str]) -> str:
    """``jupyter``, then ``jupyter-2``, ``jupyter-3``... among names not used yet."""
    base = re.sub(r"[^a-z0-9]+", "-", service.lower()).strip("-")[:24] or "session"
    if not base[0].isalpha():
        base = f"s-{base}"[:24]
    taken = set(taken)
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"


def state_of(server: Mapping[str, Any], last_event: Mapping[str, Any] | None = None) -> str:
    """running, queued, starting, stopping or stopped."""
    if server.get("ready"):
        return "running"
    pending = server.get("pending")
    if pending == "spawn":
        if last_event is not None and phase_of(dict(last_event)) == "queued":
            return "queued"
        return "starting"
    if pending == "stop":
        return "stopping"
    if pending:
        return str(pending)
    return "stopped"


def _find_profile(service: Mapping[str, Any] | None, name: object) -> dict[str, Any] | None:
    if service is None:
        return None
    profiles: list[dict[str, Any]] = service["profiles"]
    return next((p for p in profiles if p["name"] == name), None)


def session_view(
    name: str,
    server: Mapping[str, Any],
    *,
    user: str,
    hub_url: str,
    catalog: Mapping[str, Any],
    deadline: Mapping[str, Any] | None = None,
    last_event: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One session as ``berth list``, ``describe`` and ``--json`` show it."""
    options = server.get("user_options") or {}
    services: list[dict[str, Any]] = catalog.get("services", [])
    service = next((s for s in services if s["name"] == options.get("service")), None)
    profile = _find_profile(service, options.get("profile"))
    path = server.get("url") or ""
    origin = re.sub(r"^(https?://[^/]+).*$", r"\1", hub_url)
    url = f"{origin}{path}" if path else None
    url_path = service["url_path"] if service else "/"
    open_url = f"{url.rstrip('/')}{url_path}" if url and url_path != "/" else url
    state = state_of(server, last_event)
    return {
        "name": name,
        "user": user,
        "state": state,
        "service": options.get("service"),
        "service_display_name": service["display_name"] if service else None,
        "profile": options.get("profile"),
        "profile_display_name": profile["display_name"] if profile else None,
        "resources": (
            {k: profile[k] for k in ("cpus", "memory", "memory_bytes", "gpus", "gpu_type")}
            if profile
            else None
        ),
        "hours": options.get("hours"),
        "inputs": options.get("inputs") or {},
        "url": url if state in ("running", "starting", "queued") else None,
        "open_url": open_url if state == "running" else None,
        "started": server.get("started"),
        "last_activity": server.get("last_activity"),
        "progress": (
            dict(last_event) if last_event is not None and state in ("queued", "starting") else None
        ),
        "deadlines": dict(deadline) if deadline is not None else None,
    }
