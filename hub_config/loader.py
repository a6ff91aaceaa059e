"""Load ``berth.yaml`` into a :class:`~berth.hub_config.catalog.Catalog`, or say what is wrong.

Every problem is reported at once, each with the file, the line, the key path, the bad value and
what is allowed, e.g.::

    berth.yaml:31: services.vllm.profiles[1]: 'gpu-9' is not a profile of this catalog;
    known profiles: cpu-small, gpu-1
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml

from .catalog import (
    BACKENDS,
    INPUT_TYPES,
    PREFIX_MODES,
    SERVICE_KINDS,
    TRANSPORTS,
    Backend,
    Catalog,
    InputSpec,
    KubernetesProfile,
    Policy,
    PolicyOverride,
    Profile,
    ServiceType,
    SlurmProfile,
    SlurmService,
)
from .inputs import InputError, check_input
from .patterns import CONSTRAINT as _CONSTRAINT
from .patterns import CONTROL as _CONTROL
from .patterns import ENV_NAME as _ENV_NAME
from .patterns import SCHEDULER_NAME as _SCHEDULER_NAME
from .placeholders import INPUT_PREFIX, RESOURCE_NAMES, RUNTIME_NAMES, PlaceholderError, names_in
from .units import format_duration, parse_duration, parse_memory

__all__ = [
    "NAME_PATTERN",
    "CatalogError",
    "CatalogIssue",
    "catalog_from_dict",
    "load_catalog",
    "parse_catalog",
]

#: Service, profile and input names: they appear in URLs, job names and labels.
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,30}[a-z0-9]$|^[a-z]$")
_INPUT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_URL_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$")
_IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")
_RESOURCE_NAME = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?/[A-Za-z0-9._-]+$")
_PARENT = re.compile(r"(\.[^.\[]*|\[\d+\])$")

_POLICY_KEYS = ("idle_timeout", "max_duration", "default_duration", "extension_cap", "warn_before")


@dataclass(frozen=True)
class CatalogIssue:
    """One problem in a catalog."""

    path: str
    message: str
    line: int | None = None


class CatalogError(ValueError):
    """A catalog that cannot be used, with every problem found."""

    def __init__(self, source: str, issues: list[CatalogIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__(str(self))

    def __str__(self) -> str:
        count = len(self.issues)
        head = f"{self.source} is not a valid Berth catalog ({count} problem{'s' * (count != 1)}):"
        lines = []
        for issue in self.issues:
            where = f"{self.source}:{issue.line}" if issue.line else self.source
            path = f" {issue.path}:" if issue.path else ""
            lines.append(f"  {where}:{path} {issue.message}")
        return "\n".join([head, *lines])


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


T = TypeVar("T")


class _Reader:
    """Walks the parsed YAML, records problems, and returns ``None`` for a bad value."""

    def __init__(self, lines: Mapping[str, int]) -> None:
        self.lines = lines
        self.issues: list[CatalogIssue] = []

    def error(self, path: str, message: str) -> None:
        probe = path
        while probe and probe not in self.lines:
            parent = _PARENT.sub("", probe)
            probe = "" if parent == probe else parent
        self.issues.append(CatalogIssue(path, message, self.lines.get(probe)))

    # -- containers -----------------------------------------------------------------------------

    def mapping(
        self,
        value: object,
        path: str,
        allowed: tuple[str, ...],
        required: tuple[str, ...] = (),
    ) -> dict[str, Any] | None:
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping of keys to values, got {_show(value)}")
            return None
        for key in value:
            if not isinstance(key, str):
                self.error(path, f"keys must be text, got {_show(key)}")
            elif key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                self.error(
                    _path(path, key),
                    f"unknown key '{key}'{suggestion}; allowed here: {', '.join(allowed)}",
                )
        for key in required:
            if key not in value:
                self.error(path or "(top level)", f"'{key}' is required")
        return cast(dict[str, Any], value)

    def named_mapping(self, value: object, path: str, what: str) -> dict[str, Any]:
        """A mapping whose keys are names the user will see in URLs (services, profiles)."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping of {what} names to {what} settings")
            return {}
        good = {}
        for key, item in value.items():
            if not isinstance(key, str) or not NAME_PATTERN.match(key):
                self.error(
                    _path(path, str(key)),
                    f"{_show(key)} is not a valid {what} name; use 1-32 lower-case letters,"
                    " digits and '-', starting with a letter",
                )
                continue
            good[key] = item
        return good

    def string_list(
        self, value: object, path: str, check: Callable[[str, str], str | None] | None = None
    ) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            self.error(path, f"expected a list of text, got {_show(value)}")
            return ()
        out = []
        for index, item in enumerate(value):
            checked = self.text(item, _path(path, index))
            if checked is not None and check is not None:
                checked = check(checked, _path(path, index))
            if checked is not None:
                out.append(checked)
        return tuple(out)

    # -- scalars ----------------------------------------------------------------------------------

    def text(
        self,
        value: object,
        path: str,
        pattern: re.Pattern[str] | None = None,
        allowed: str = "",
        multiline: bool = False,
    ) -> str | None:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            self.error(path, f"expected text, got {_show(value)}")
            return None
        text = str(value)
        if not multiline and _CONTROL.search(text):
            self.error(path, f"{_show(text)} contains a control character such as a newline")
            return None
        if pattern is not None and not pattern.match(text):
            self.error(path, f"{_show(text)} is not allowed; {allowed}")
            return None
        return text

    def choice(self, value: object, path: str, choices: tuple[T, ...]) -> T | None:
        if value not in choices:
            self.error(path, f"{_show(value)} is not one of: {', '.join(str(c) for c in choices)}")
            return None
        return next(choice for choice in choices if choice == value)

    def boolean(self, value: object, path: str) -> bool | None:
        if not isinstance(value, bool):
            self.error(path, f"expected true or false, got {_show(value)}")
            return None
        return value

    def number(
        self,
        value: object,
        path: str,
        minimum: float | None = None,
        maximum: float | None = None,
        integer: bool = False,
    ) -> float | None:
        kind = "a whole number" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(path, f"expected {kind}, got {_show(value)}")
            return None
        if integer and not isinstance(value, int):
            self.error(path, f"expected {kind}, got {_show(value)}")
            return None
        if minimum is not None and value < minimum:
            self.error(path, f"{value} is too small; the minimum is {minimum:g}")
            return None
        if maximum is not None and value > maximum:
            self.error(path, f"{value} is too large; the maximum is {maximum:g}")
            return None
        return value

    def duration(self, value: object, path: str, allow_never: bool = False) -> timedelta | None:
        if allow_never and value in (None, "never"):
            return None
        try:
            return parse_duration(value)
        except ValueError as e:
            never = " (or 'never')" if allow_never else ""
            self.error(path, f"{_show(value)}: {e}{never}")
            return None

    def memory(self, value: object, path: str) -> int | None:
        try:
            size = parse_memory(value)
        except ValueError as e:
            self.error(path, f"{_show(value)}: {e}")
            return None
        if size < 16 * 1024**2:
            self.error(path, f"{_show(value)} is less than the 16M minimum")
            return None
        return size

    def template(self, value: object, path: str, known: frozenset[str]) -> str | None:
        text = self.text(value, path)
        if text is None:
            return None
        try:
            names = names_in(text)
        except PlaceholderError as e:
            self.error(path, str(e))
            return None
        for name in names:
            if name not in known:
                allowed = ", ".join("{" + k + "}" for k in sorted(known))
                self.error(path, f"unknown placeholder '{{{name}}}'; allowed here: {allowed}")
                return None
        return text


# -- sections -------------------------------------------------------------------------------------


def _policy_override(reader: _Reader, value: object, path: str) -> PolicyOverride:
    data = reader.mapping(value, path, _POLICY_KEYS)
    if data is None:
        return PolicyOverride()
    values: dict[str, timedelta | None] = {}
    for key, raw in data.items():
        if key not in _POLICY_KEYS:
            continue
        parsed = reader.duration(raw, _path(path, key), allow_never=key == "idle_timeout")
        if parsed is None and not (key == "idle_timeout" and raw in (None, "never")):
            continue
        if parsed is not None and parsed <= timedelta(0) and key != "warn_before":
            reader.error(_path(path, key), f"{_show(raw)} must be longer than zero")
            continue
        values[key] = parsed
    return PolicyOverride(values)


def _input(reader: _Reader, name: str, value: object, path: str) -> InputSpec | None:
    if not _INPUT_NAME.match(name):
        reader.error(
            path,
            f"'{name}' is not a valid input name; use lower-case letters, digits and '_',"
            " starting with a letter",
        )
        return None
    keys = (
        "type", "display_name", "description", "required", "default", "pattern", "min_length",
        "max_length", "minimum", "maximum", "choices", "placeholder",
    )  # fmt: skip
    data = reader.mapping(value, path, keys)
    if data is None:
        return None
    before = len(reader.issues)
    input_type = reader.choice(data.get("type", "string"), _path(path, "type"), INPUT_TYPES)
    pattern = data.get("pattern")
    if pattern is not None:
        pattern = reader.text(pattern, _path(path, "pattern"))
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as e:
                reader.error(
                    _path(path, "pattern"), f"{_show(pattern)} is not a regular expression: {e}"
                )
    max_length = reader.number(
        data.get("max_length", 256), _path(path, "max_length"), 1, 4096, integer=True
    )
    min_length = reader.number(data.get("min_length", 0), _path(path, "min_length"), 0, 4096, True)
    minimum = data.get("minimum")
    maximum = data.get("maximum")
    if minimum is not None:
        minimum = reader.number(minimum, _path(path, "minimum"))
    if maximum is not None:
        maximum = reader.number(maximum, _path(path, "maximum"))
    choices = reader.string_list(data.get("choices"), _path(path, "choices"))
    if input_type == "choice" and not choices:
        reader.error(path, "an input of type 'choice' needs a non-empty 'choices' list")
    if input_type != "choice" and choices:
        reader.error(_path(path, "choices"), "'choices' only applies to inputs of type 'choice'")
    if len(reader.issues) > before or input_type is None:
        return None
    spec = InputSpec(
        name=name,
        type=input_type,
        display_name=reader.text(data.get("display_name", ""), _path(path, "display_name")) or "",
        description=reader.text(data.get("description", ""), _path(path, "description")) or "",
        required=bool(reader.boolean(data.get("required", False), _path(path, "required"))),
        pattern=pattern,
        min_length=int(min_length or 0),
        max_length=int(max_length or 256),
        minimum=minimum,
        maximum=maximum,
        choices=choices,
        placeholder=reader.text(data.get("placeholder", ""), _path(path, "placeholder")) or "",
    )
    if "default" in data and data["default"] is not None:
        try:
            default = check_input(spec, data["default"])
        except InputError as e:
            reader.error(_path(path, "default"), f"the default does not pass its own rules: {e}")
            return None
        spec = dataclasses.replace(spec, default=default)
    return spec


def _profile(
    reader: _Reader, name: str, value: object, path: str, backend: Backend
) -> Profile | None:
    keys = (
        "display_name", "description", "cpus", "memory", "gpus", "gpu_type", "backend", "slurm",
        "kubernetes", "policy", "allowed_groups",
    )  # fmt: skip
    data = reader.mapping(value, path, keys, required=("cpus", "memory"))
    if data is None:
        return None
    before = len(reader.issues)
    cpus = reader.number(data.get("cpus"), _path(path, "cpus"), minimum=0.001, maximum=4096)
    memory = reader.memory(data.get("memory"), _path(path, "memory"))
    gpus = reader.number(data.get("gpus", 0), _path(path, "gpus"), 0, 64, integer=True)
    gpu_type = data.get("gpu_type")
    if gpu_type is not None:
        gpu_type = reader.text(
            gpu_type, _path(path, "gpu_type"), _SCHEDULER_NAME, "use letters, digits, '_', '.', '-'"
        )
        if gpus == 0:
            reader.error(_path(path, "gpu_type"), "a gpu_type needs gpus of 1 or more")
    profile_backend = reader.choice(data.get("backend", backend), _path(path, "backend"), BACKENDS)

    slurm_path = _path(path, "slurm")
    slurm_keys = ("partition", "account", "qos", "constraint", "reservation")
    slurm_data = reader.mapping(data.get("slurm"), slurm_path, slurm_keys) or {}
    slurm_values: dict[str, str | None] = {}
    for key in slurm_keys:
        if slurm_data.get(key) is not None:
            pattern, allowed = (
                (_CONSTRAINT, "use a Slurm constraint expression")
                if key == "constraint"
                else (_SCHEDULER_NAME, "use letters, digits, '_', '.', ':', '+', '-'")
            )
            slurm_values[key] = reader.text(
                slurm_data[key], _path(slurm_path, key), pattern, allowed
            )

    kube_path = _path(path, "kubernetes")
    kube_keys = ("node_selector", "tolerations", "affinity", "gpu_resource", "image")
    kube_data = reader.mapping(data.get("kubernetes"), kube_path, kube_keys) or {}
    node_selector = kube_data.get("node_selector") or {}
    if not isinstance(node_selector, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in node_selector.items()
    ):
        reader.error(_path(kube_path, "node_selector"), "expected a mapping of label to text")
        node_selector = {}
    tolerations = kube_data.get("tolerations") or []
    if not isinstance(tolerations, list) or not all(isinstance(t, dict) for t in tolerations):
        reader.error(_path(kube_path, "tolerations"), "expected a list of toleration mappings")
        tolerations = []
    affinity = kube_data.get("affinity")
    if affinity is not None and not isinstance(affinity, dict):
        reader.error(_path(kube_path, "affinity"), "expected a Kubernetes affinity mapping")
        affinity = None
    gpu_resource = reader.text(
        kube_data.get("gpu_resource", "nvidia.com/gpu"),
        _path(kube_path, "gpu_resource"),
        _RESOURCE_NAME,
        "use an extended resource name such as nvidia.com/gpu or amd.com/gpu",
    )
    image = kube_data.get("image")
    if image is not None:
        image = reader.text(image, _path(kube_path, "image"), _IMAGE, "use an image reference")

    policy = _policy_override(reader, data.get("policy"), _path(path, "policy"))
    groups = reader.string_list(data.get("allowed_groups"), _path(path, "allowed_groups"))
    if len(reader.issues) > before or cpus is None or memory is None or profile_backend is None:
        return None
    cpu_text = f"{cpus:g} CPU{'s' * (cpus != 1)}, {memory / 1024**3:g} GiB"
    gpu_text = f", {int(gpus or 0)} x {gpu_type or 'GPU'}" if gpus else ""
    return Profile(
        name=name,
        display_name=reader.text(data.get("display_name", name), _path(path, "display_name"))
        or name,
        description=reader.text(data.get("description", ""), _path(path, "description"))
        or cpu_text + gpu_text,
        cpus=cpus,
        memory=memory,
        gpus=int(gpus or 0),
        gpu_type=gpu_type,
        backend=profile_backend,
        slurm=SlurmProfile(**slurm_values),
        kubernetes=KubernetesProfile(
            node_selector=dict(node_selector),
            tolerations=tuple(tolerations),
            affinity=affinity,
            gpu_resource=gpu_resource or "nvidia.com/gpu",
            image=image,
        ),
        policy=policy,
        allowed_groups=groups,
    )


def _service(
    reader: _Reader, name: str, value: object, path: str, profiles: Mapping[str, Profile]
) -> ServiceType | None:
    keys = (
        "display_name", "description", "kind", "command", "environment", "url_path",
        "readiness_path", "ready_timeout", "prefix", "transport", "profiles", "inputs", "image",
        "slurm", "policy", "allowed_groups",
    )  # fmt: skip
    data = reader.mapping(value, path, keys, required=("kind", "profiles"))
    if data is None:
        return None
    before = len(reader.issues)
    kind = reader.choice(data.get("kind"), _path(path, "kind"), SERVICE_KINDS)

    inputs: list[InputSpec] = []
    inputs_path = _path(path, "inputs")
    raw_inputs = reader.mapping(data.get("inputs"), inputs_path, tuple(data.get("inputs") or {}))
    for input_name, input_value in (raw_inputs or {}).items():
        spec = _input(reader, str(input_name), input_value, _path(inputs_path, str(input_name)))
        if spec is not None:
            inputs.append(spec)
    input_names = {INPUT_PREFIX + spec.name for spec in inputs}
    known = frozenset(RESOURCE_NAMES | input_names)
    if kind == "gated":
        known = known | RUNTIME_NAMES

    command_path = _path(path, "command")
    raw_command = data.get("command", ["jupyterhub-singleuser"] if kind != "gated" else None)
    if raw_command is None:
        reader.error(path, "'command' is required for a gated service")
        raw_command = []
    elif not isinstance(raw_command, list) or not raw_command:
        reader.error(command_path, "expected a non-empty list of arguments (no shell is used)")
        raw_command = []
    command = []
    for index, arg in enumerate(raw_command):
        checked = reader.template(arg, _path(command_path, index), known)
        if checked is not None:
            command.append(checked)
    if kind == "jupyter" and command and os.path.basename(command[0]) != "jupyterhub-singleuser":
        reader.error(
            _path(command_path, 0),
            f"a jupyter service runs jupyterhub-singleuser, not {_show(command[0])};"
            " use kind: gated for other programs",
        )
    transport = reader.choice(data.get("transport", "tcp"), _path(path, "transport"), TRANSPORTS)
    env_path = _path(path, "environment")
    environment: dict[str, str] = {}
    env_data = data.get("environment") or {}
    if not isinstance(env_data, dict):
        reader.error(env_path, "expected a mapping of variable names to text")
        env_data = {}
    for env_name, env_value in env_data.items():
        if not isinstance(env_name, str) or not _ENV_NAME.match(env_name):
            reader.error(
                _path(env_path, str(env_name)), f"{_show(env_name)} is not a variable name"
            )
            continue
        checked = reader.template(env_value, _path(env_path, env_name), known)
        if checked is not None:
            environment[env_name] = checked

    if kind == "gated" and command and transport is not None:
        used = {n for arg in [*command, *environment.values()] for n in names_in(arg)}
        wanted = "port" if transport == "tcp" else "unix_socket"
        if wanted not in used:
            reader.error(
                command_path,
                f"a gated service with transport '{transport}' must receive {{{wanted}}} in its"
                " command or environment so it listens where berth-gate expects it",
            )

    allowed_paths = "use an absolute URL path such as /lab or /health"
    url_path = reader.text(
        data.get("url_path", "/"), _path(path, "url_path"), _URL_PATH, allowed_paths
    )
    readiness_path = reader.text(
        data.get("readiness_path", "/"), _path(path, "readiness_path"), _URL_PATH, allowed_paths
    )
    ready_timeout = reader.duration(data.get("ready_timeout", "5m"), _path(path, "ready_timeout"))
    prefix = reader.choice(data.get("prefix", "strip"), _path(path, "prefix"), PREFIX_MODES)

    profiles_path = _path(path, "profiles")

    def known_profile(profile: str, item_path: str) -> str | None:
        if profile not in profiles:
            reader.error(
                item_path,
                f"'{profile}' is not a profile of this catalog; known profiles:"
                f" {', '.join(profiles) or '(none)'}",
            )
            return None
        return profile

    service_profiles = reader.string_list(data.get("profiles"), profiles_path, known_profile)
    if not service_profiles and "profiles" in data and not isinstance(data.get("profiles"), str):
        if isinstance(data.get("profiles"), list) and not data["profiles"]:
            reader.error(profiles_path, "list at least one profile this service may run on")
    image = data.get("image")
    if image is not None:
        image = reader.text(image, _path(path, "image"), _IMAGE, "use an image reference")
    slurm_data = reader.mapping(data.get("slurm"), _path(path, "slurm"), ("setup",)) or {}
    setup = reader.string_list(slurm_data.get("setup"), _path(_path(path, "slurm"), "setup"))
    policy = _policy_override(reader, data.get("policy"), _path(path, "policy"))
    groups = reader.string_list(data.get("allowed_groups"), _path(path, "allowed_groups"))
    if len(reader.issues) > before or kind is None:
        return None
    return ServiceType(
        name=name,
        display_name=reader.text(data.get("display_name", name), _path(path, "display_name"))
        or name,
        description=reader.text(data.get("description", ""), _path(path, "description")) or "",
        kind=kind,
        command=tuple(command),
        environment=environment,
        url_path=url_path or "/",
        readiness_path=readiness_path or "/",
        ready_timeout=ready_timeout or timedelta(minutes=5),
        prefix=prefix or "strip",
        transport=transport or "tcp",
        profiles=service_profiles,
        inputs=tuple(inputs),
        image=image,
        slurm=SlurmService(setup=setup),
        policy=policy,
        allowed_groups=groups,
    )


# -- YAML with line numbers -----------------------------------------------------------------------


def _line_map(node: yaml.Node, path: str, lines: dict[str, int], reader: _Reader) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = _path(path, key)
            lines[child] = key_node.start_mark.line + 1
            if key in seen:
                reader.error(child, f"'{key}' appears twice; keep one")
            seen.add(key)
            _line_map(value_node, child, lines, reader)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _line_map(item, _path(path, index), lines, reader)


def parse_catalog(text: str, source: str = "berth.yaml", *, with_lines: bool = True) -> Catalog:
    """Parse and check catalog text; raise :class:`CatalogError` listing every problem."""
    reader = _Reader({})
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(e, "problem", None) or str(e)
        raise CatalogError(source, [CatalogIssue("", f"not valid YAML: {problem}", line)]) from None
    lines: dict[str, int] = {}
    reader.lines = lines
    if node is not None:
        _line_map(node, "", lines, reader)
    if not with_lines:
        lines.clear()
    return _build(reader, data, source)


def _build(reader: _Reader, data: object, source: str) -> Catalog:
    if data is None:
        raise CatalogError(source, [CatalogIssue("", "the file is empty; see the example catalog")])
    top = reader.mapping(
        data,
        "",
        ("version", "backend", "policy", "groups", "profiles", "services"),
        required=("profiles", "services"),
    )
    if top is None:
        raise CatalogError(source, reader.issues)
    if "version" in top and top["version"] != 1:
        reader.error(
            "version", f"{_show(top['version'])} is not a catalog version Berth reads; use 1"
        )
    backend = reader.choice(top.get("backend", "local"), "backend", BACKENDS) or "local"

    policy_override = _policy_override(reader, top.get("policy"), "policy")
    policy = Policy().with_overrides(policy_override)
    chosen_default = policy_override.values.get("default_duration")
    if chosen_default is not None and chosen_default > policy.max_duration:
        reader.error(
            "policy.default_duration",
            f"{format_duration(chosen_default)} is longer than max_duration"
            f" ({format_duration(policy.max_duration)})",
        )

    group_policies: dict[str, PolicyOverride] = {}
    groups = reader.mapping(top.get("groups"), "groups", tuple(top.get("groups") or {})) or {}
    for group, value in groups.items():
        group_policies[str(group)] = _policy_override(reader, value, _path("groups", str(group)))

    profiles: dict[str, Profile] = {}
    raw_profiles = reader.named_mapping(top.get("profiles"), "profiles", "profile")
    for name, value in raw_profiles.items():
        profile = _profile(reader, name, value, _path("profiles", name), backend)
        if profile is not None:
            profiles[name] = profile
    if not raw_profiles and "profiles" in top:
        reader.error("profiles", "define at least one profile")

    services: dict[str, ServiceType] = {}
    raw_services = reader.named_mapping(top.get("services"), "services", "service")
    for name, value in raw_services.items():
        service = _service(reader, name, value, _path("services", name), raw_profiles)
        if service is not None:
            services[name] = service
    if not raw_services and "services" in top:
        reader.error("services", "define at least one service type")

    if reader.issues:
        raise CatalogError(source, reader.issues)
    return Catalog(
        source=source,
        backend=backend,
        services=services,
        profiles=profiles,
        policy=policy,
        group_policies=group_policies,
    )


def catalog_from_dict(data: Mapping[str, Any], source: str = "c.BerthSpawner.catalog") -> Catalog:
    """Check a catalog given as a Python mapping (plain traitlets config)."""
    text = yaml.safe_dump(dict(data), sort_keys=False)
    return parse_catalog(text, source, with_lines=False)


def load_catalog(path: str | os.PathLike[str]) -> Catalog:
    """Read and check ``berth.yaml``; raise :class:`CatalogError` listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise CatalogError(
            str(path), [CatalogIssue("", f"cannot read the catalog: {e.strerror}")]
        ) from None
    except UnicodeDecodeError:
        raise CatalogError(str(path), [CatalogIssue("", "the catalog is not UTF-8 text")]) from None
    return parse_catalog(text, str(path))
