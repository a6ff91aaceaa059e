"""The catalog: what can run (service types), on what (profiles), for how long (policies).

These are plain frozen dataclasses. :mod:`berth.hub_config.loader` builds them from ``berth.yaml``
and is the only place that checks them; everything else may trust a :class:`Catalog`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

__all__ = [
    "BACKENDS",
    "INPUT_TYPES",
    "PREFIX_MODES",
    "SERVICE_KINDS",
    "TRANSPORTS",
    "Backend",
    "Catalog",
    "InputSpec",
    "InputType",
    "InputValue",
    "KubernetesProfile",
    "Policy",
    "PolicyOverride",
    "PrefixMode",
    "Profile",
    "ServiceKind",
    "ServiceType",
    "SlurmProfile",
    "SlurmService",
    "Transport",
]

Backend = Literal["local", "slurm", "kubernetes"]
BACKENDS: tuple[Backend, ...] = ("local", "slurm", "kubernetes")
ServiceKind = Literal["jupyter", "gated"]
PrefixMode = Literal["strip", "keep"]
Transport = Literal["tcp", "unix"]
InputType = Literal["string", "integer", "number", "boolean", "choice"]
InputValue = str | int | float | bool
INPUT_TYPES: tuple[InputType, ...] = ("string", "integer", "number", "boolean", "choice")
SERVICE_KINDS: tuple[ServiceKind, ...] = ("jupyter", "gated")
PREFIX_MODES: tuple[PrefixMode, ...] = ("strip", "keep")
TRANSPORTS: tuple[Transport, ...] = ("tcp", "unix")


@dataclass(frozen=True)
class Policy:
    """How long a session may live. ``idle_timeout=None`` means it is never ended for idleness."""

    idle_timeout: timedelta | None = timedelta(hours=1)
    max_duration: timedelta = timedelta(hours=8)
    default_duration: timedelta = timedelta(hours=2)
    extension_cap: timedelta = timedelta(hours=4)
    warn_before: timedelta = timedelta(minutes=15)

    def with_overrides(self, override: PolicyOverride) -> Policy:
        values = override.values

        def pick(name: str, current: timedelta) -> timedelta:
            value = values.get(name)
            return value if value is not None else current

        merged = Policy(
            idle_timeout=values["idle_timeout"] if "idle_timeout" in values else self.idle_timeout,
            max_duration=pick("max_duration", self.max_duration),
            default_duration=pick("default_duration", self.default_duration),
            extension_cap=pick("extension_cap", self.extension_cap),
            warn_before=pick("warn_before", self.warn_before),
        )
        if merged.default_duration > merged.max_duration:
            merged = dataclasses.replace(merged, default_duration=merged.max_duration)
        return merged


@dataclass(frozen=True)
class PolicyOverride:
    """The policy fields one level (service, profile, group) sets; absent fields inherit."""

    values: Mapping[str, timedelta | None] = field(default_factory=dict)


@dataclass(frozen=True)
class InputSpec:
    """One value a service type asks the user for, such as vLLM's ``model``."""

    name: str
    type: InputType = "string"
    display_name: str = ""
    description: str = ""
    required: bool = False
    default: InputValue | None = None
    pattern: str | None = None
    min_length: int = 0
    max_length: int = 256
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    placeholder: str = ""

    @property
    def label(self) -> str:
        return self.display_name or self.name


@dataclass(frozen=True)
class SlurmProfile:
    """Scheduler settings a profile pins; users cannot change them."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    reservation: str | None = None


@dataclass(frozen=True)
class KubernetesProfile:
    """Pod placement a profile pins (kubespawner terms)."""

    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, object], ...] = ()
    affinity: Mapping[str, object] | None = None
    gpu_resource: str = "nvidia.com/gpu"
    image: str | None = None


@dataclass(frozen=True)
class SlurmService:
    """Batch-script lines an admin runs before the service (``module load cuda``)."""

    setup: tuple[str, ...] = ()


@dataclass(frozen=True)
class Profile:
    """What a session runs on."""

    name: str
    display_name: str
    description: str = ""
    cpus: float = 1
    memory: int = 2 * 1024**3
    gpus: int = 0
    gpu_type: str | None = None
    backend: Backend = "local"
    slurm: SlurmProfile = field(default_factory=SlurmProfile)
    kubernetes: KubernetesProfile = field(default_factory=KubernetesProfile)
    policy: PolicyOverride = field(default_factory=PolicyOverride)
    allowed_groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServiceType:
    """What runs in a session.

    ``kind="jupyter"`` runs jupyterhub-singleuser, which speaks the hub's protocol itself;
    ``kind="gated"`` runs ``command`` behind berth-gate, which adds the hub's login.
    """

    name: str
    display_name: str
    kind: ServiceKind
    command: tuple[str, ...]
    profiles: tuple[str, ...]
    description: str = ""
    environment: Mapping[str, str] = field(default_factory=dict)
    url_path: str = "/"
    readiness_path: str = "/"
    ready_timeout: timedelta = timedelta(minutes=5)
    prefix: PrefixMode = "strip"
    transport: Transport = "tcp"
    inputs: tuple[InputSpec, ...] = ()
    image: str | None = None
    slurm: SlurmService = field(default_factory=SlurmService)
    policy: PolicyOverride = field(default_factory=PolicyOverride)
    allowed_groups: tuple[str, ...] = ()

    def input(self, name: str) -> InputSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)


def _most_generous(values: list[timedelta | None]) -> timedelta | None:
    if any(value is None for value in values):
        return None
    return max(value for value in values if value is not None)


@dataclass(frozen=True)
class Catalog:
    """Everything ``berth.yaml`` says, checked."""

    source: str
    backend: Backend
    services: Mapping[str, ServiceType]
    profiles: Mapping[str, Profile]
    policy: Policy = field(default_factory=Policy)
    group_policies: Mapping[str, PolicyOverride] = field(default_factory=dict)

    def policy_for(self, service: ServiceType, profile: Profile, groups: Iterable[str]) -> Policy:
        """Defaults, then the service type's, then the profile's, then the user's groups'.

        When several of the user's groups set a field, the most generous value wins
        (no idle timeout beats any; a longer duration beats a shorter one).
        """
        policy = self.policy.with_overrides(service.policy).with_overrides(profile.policy)
        group_values: dict[str, list[timedelta | None]] = {}
        for group in sorted(set(groups)):
            override = self.group_policies.get(group)
            if override is None:
                continue
            for key, value in override.values.items():
                group_values.setdefault(key, []).append(value)
        merged = {key: _most_generous(values) for key, values in group_values.items()}
        return policy.with_overrides(PolicyOverride(merged))

    def may_use(self, allowed_groups: tuple[str, ...], groups: Iterable[str]) -> bool:
        return not allowed_groups or bool(set(allowed_groups) & set(groups))

    def services_for(self, groups: Iterable[str]) -> list[ServiceType]:
        """Service types this user may launch, with at least one profile they may use."""
        groups = set(groups)
        return [
            service
            for service in self.services.values()
            if self.may_use(service.allowed_groups, groups) and self.profiles_for(service, groups)
        ]

    def profiles_for(self, service: ServiceType, groups: Iterable[str]) -> list[Profile]:
        groups = set(groups)
        return [
            self.profiles[name]
            for name in service.profiles
            if self.may_use(self.profiles[name].allowed_groups, groups)
        ]

    @property
    def backends(self) -> frozenset[Backend]:
        return frozenset(profile.backend for profile in self.profiles.values())
