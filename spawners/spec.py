"""The launch spec: one checked, backend-neutral description of what a session runs.

:func:`build_launch_spec` is pure: a :class:`~berth.spawners.options.Selection` plus the user and
session names in, a :class:`LaunchSpec` out. Backends render it (a process, a batch script, a pod)
and never look at ``user_options`` themselves.

``argv`` is the whole command line the backend starts, already wrapped for the hub:
``jupyterhub-singleuser ...`` for Jupyter, ``berth-gate [gate options] -- <service command>`` for
everything else. Runtime placeholders (``{port}``, ``{unix_socket}``, ``{base_url}``) are left in
the service command for berth-gate to fill; everything else is filled here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from berth.hub_config.catalog import InputValue, Profile, ServiceKind, ServiceType, Transport
from berth.hub_config.placeholders import INPUT_PREFIX, RUNTIME_NAMES, fill, names_in, render

from .options import Selection

__all__ = [
    "GATE_COMMAND",
    "LABEL_PREFIX",
    "LaunchSpec",
    "PortRule",
    "Resources",
    "build_launch_spec",
]

GATE_COMMAND = "berth-gate"
LABEL_PREFIX = "berth.jupyter.org/"


@dataclass(frozen=True)
class Resources:
    cpus: float
    memory: int  # bytes
    gpus: int
    gpu_type: str | None

    @property
    def memory_mb(self) -> int:
        return self.memory // 1024**2


@dataclass(frozen=True)
class PortRule:
    """Where the service listens. The session's public port (singleuser or berth-gate) is
    chosen by the backend where the session runs; ``transport`` is the private side of a gated
    service: a TCP port on loopback or a unix socket, both picked by berth-gate."""

    transport: Transport = "tcp"


@dataclass(frozen=True)
class LaunchSpec:
    user: str
    session: str
    service: ServiceType
    profile: Profile
    kind: ServiceKind
    argv: tuple[str, ...]
    environment: Mapping[str, str]
    port: PortRule
    url_path: str
    readiness_path: str
    ready_timeout: timedelta
    resources: Resources
    #: what the user asked for; the culler ends the session then (plus any extension)
    time_limit: timedelta
    #: the scheduler's wall time: the longest the session can live with every extension
    hard_limit: timedelta
    labels: Mapping[str, str] = field(default_factory=dict)
    image: str | None = None


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _input_text(value: InputValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _format_number(value)
    return str(value)


def build_launch_spec(selection: Selection, user: str, session: str) -> LaunchSpec:
    """Turn a checked selection into what a backend runs. Pure; no I/O."""
    service, profile = selection.service, selection.profile
    resources = Resources(profile.cpus, profile.memory, profile.gpus, profile.gpu_type)
    values = {
        "cpus": _format_number(profile.cpus),
        "memory_mb": str(resources.memory_mb),
        "gpus": str(profile.gpus),
        "hours": _format_number(selection.duration.total_seconds() / 3600),
        "user": user,
        "session": session,
    }
    values.update({INPUT_PREFIX + k: _input_text(v) for k, v in selection.inputs.items()})

    def runtime(template: str) -> bool:
        return any(name in RUNTIME_NAMES for name in names_in(template))

    # Values without runtime placeholders are final here; the rest stay templates for berth-gate.
    environment = {
        name: fill(value, values) if runtime(value) else render(value, values)
        for name, value in service.environment.items()
    }
    templated = sorted(name for name, value in service.environment.items() if runtime(value))
    environment.update(
        {
            "BERTH_SERVICE": service.name,
            "BERTH_PROFILE": profile.name,
            "BERTH_SESSION_HOURS": values["hours"],
        }
    )

    argv: tuple[str, ...]
    if service.kind == "jupyter":
        argv = tuple(render(arg, values) for arg in service.command)
    else:
        gate = [
            GATE_COMMAND,
            "--ready-path", service.readiness_path,
            "--ready-timeout", _format_number(service.ready_timeout.total_seconds()),
            "--prefix", service.prefix,
            "--transport", service.transport,
        ]  # fmt: skip
        for name in templated:
            gate += ["--env", name]
        argv = (*gate, "--", *(fill(arg, values) for arg in service.command))

    labels = {
        LABEL_PREFIX + "user": user,
        LABEL_PREFIX + "session": session,
        LABEL_PREFIX + "service": service.name,
        LABEL_PREFIX + "profile": profile.name,
    }
    return LaunchSpec(
        user=user,
        session=session,
        service=service,
        profile=profile,
        kind=service.kind,
        argv=argv,
        environment=environment,
        port=PortRule(service.transport),
        url_path=service.url_path,
        readiness_path=service.readiness_path,
        ready_timeout=service.ready_timeout,
        resources=resources,
        time_limit=selection.duration,
        hard_limit=selection.duration + selection.policy.extension_cap,
        labels=labels,
        image=profile.kubernetes.image or service.image,
    )
