"""The user_options JSON Schema and the validator accept and refuse the same requests.

Hypothesis generates requests (mostly near-valid ones: known names, durations at the limits,
inputs that match or just miss their patterns and bounds, plus arbitrary JSON) and checks that
``jsonschema`` with the generated schema and ``validate_user_options`` (with the backend's
unavailable profiles, as ``BerthSpawner.check_user_options``) agree on every one.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from berth.hub_config.catalog import Catalog, InputSpec
from berth.hub_config.loader import catalog_from_dict, load_catalog
from berth.spawners.options import MIN_HOURS, OptionsError, validate_user_options
from berth.spawners.schema import service_options_schema, user_options_schema

from .hubtest import EXAMPLE_CATALOG

ODD = catalog_from_dict(
    {
        "policy": {"max_duration": "8h", "default_duration": "1h", "idle_timeout": "1h"},
        "groups": {"long": {"max_duration": "30h"}, "short": {"max_duration": "20m"}},
        "profiles": {
            "tiny": {"cpus": 1, "memory": "1G", "policy": {"max_duration": "90m"}},
            "small": {"cpus": 2, "memory": "4G"},
            "gpu": {"cpus": 4, "memory": "16G", "gpus": 1, "gpu_type": "l4"},
            "vip": {"cpus": 8, "memory": "32G", "allowed_groups": ["staff"]},
        },
        "services": {
            "lab": {
                "kind": "jupyter",
                "profiles": ["tiny", "small", "gpu", "vip"],
                "inputs": {
                    "flavour": {"type": "choice", "choices": ["plain", "dark"]},
                    "debug": {"type": "boolean", "default": False},
                    "ratio": {"type": "number", "minimum": 0.25, "maximum": 2.5},
                },
            },
            "tool": {
                "kind": "gated",
                "command": ["tool", "--port={port}", "{input.tag}"],
                "profiles": ["gpu", "small"],
                "inputs": {
                    "tag": {
                        "type": "string",
                        "required": True,
                        "pattern": "[a-z]+-[0-9]",
                        "min_length": 3,
                        "max_length": 12,
                    },
                    "note": {"type": "string", "min_length": 2, "max_length": 5},
                    "workers": {
                        "type": "integer",
                        "required": True,
                        "default": 2,
                        "minimum": 1,
                        "maximum": 64,
                    },
                },
            },
            "secret": {
                "kind": "gated",
                "command": ["secret", "{port}"],
                "profiles": ["vip"],
                "allowed_groups": ["staff"],
            },
        },
    }
)
EXAMPLE = load_catalog(EXAMPLE_CATALOG)
GROUPS = ("long", "short", "staff", "gpu-large", "long-runs")


def server_accepts(
    catalog: Catalog, options: Any, groups: tuple[str, ...], unavailable: frozenset[str]
) -> str | None:
    """The service the hub would launch, or None if it refuses (as check_user_options)."""
    try:
        selection = validate_user_options(catalog, options, groups)
    except OptionsError:
        return None
    if selection.profile.name in unavailable:
        return None
    return selection.service.name


json_scalar = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=4,
)


def near(value: float) -> st.SearchStrategy[float]:
    """A number and its immediate neighbours: where < and <= differ."""
    return st.sampled_from(
        [value, math.nextafter(value, -math.inf), math.nextafter(value, math.inf)]
    )


def hours_values(catalog: Catalog) -> st.SearchStrategy[Any]:
    limits = {MIN_HOURS, 0.0}
    for service in catalog.services.values():
        for name in service.profiles:
            for groups in ((), *((group,) for group in GROUPS)):
                policy = catalog.policy_for(service, catalog.profiles[name], groups)
                limits.add(policy.max_duration.total_seconds() / 3600)
    return (
        st.sampled_from(sorted(limits)).flatmap(near)
        | st.floats(min_value=-2, max_value=40, allow_nan=False)
        | st.integers(min_value=-2, max_value=40)
        | json_value
    )


def valid_input(spec: InputSpec) -> st.SearchStrategy[Any]:
    """Values the validator takes for this input (most of the time: patterns may say more)."""
    if spec.type == "choice":
        return st.sampled_from(spec.choices)
    if spec.type == "boolean":
        return st.booleans()
    if spec.type == "integer":
        low = None if spec.minimum is None else math.ceil(spec.minimum)
        high = None if spec.maximum is None else math.floor(spec.maximum)
        return st.integers(low, high)
    if spec.type == "number":
        return st.floats(spec.minimum, spec.maximum, allow_nan=False, allow_infinity=False)
    if spec.pattern:
        return st.from_regex(spec.pattern, fullmatch=True).filter(
            lambda text: spec.min_length <= len(text) <= spec.max_length and text.isprintable()
        )
    return st.text(
        st.characters(codec="utf-8", categories=["L", "N", "P"]),
        min_size=spec.min_length,
        max_size=spec.max_length,
    )


def _resized(text: str, length: int) -> str:
    """``text`` grown or shrunk at the front to ``length`` (repeating its first character keeps
    the catalogs' patterns matching)."""
    if not text or length < 0:
        return text
    return text[0] * (length - len(text)) + text if length >= len(text) else text[-length:]


def invalid_input(spec: InputSpec) -> st.SearchStrategy[Any]:
    """Values at and just past the input's limits, and anything at all."""
    edges: list[Any] = []
    for bound in (spec.minimum, spec.maximum):
        if bound is not None:
            edges += [bound, math.nextafter(bound, -math.inf), math.nextafter(bound, math.inf)]
            edges += [math.floor(bound) - 1, math.ceil(bound) + 1, float(math.floor(bound))]
    if spec.choices:
        edges += [choice.upper() for choice in spec.choices]
    values: list[st.SearchStrategy[Any]] = [st.sampled_from(edges)] if edges else []
    if spec.type == "string":
        lengths = sorted(
            {spec.min_length - 1, spec.min_length, spec.max_length, spec.max_length + 1}
        )
        values.append(
            st.tuples(valid_input(spec), st.sampled_from(lengths)).map(lambda t: _resized(*t))
        )
        values.append(valid_input(spec).map(lambda text: text + "\n"))
        values.append(valid_input(spec).map(lambda text: "\x7f" + text))
    return st.one_of(*values, json_value)


@functools.cache
def _hours(name: str) -> st.SearchStrategy[Any]:
    return hours_values(ODD if name == "odd" else EXAMPLE)


@st.composite
def requests(draw: st.DrawFn, catalog: Catalog) -> Any:
    """A valid request for some service, then up to three changes that may break it."""
    if draw(st.integers(0, 30)) == 0:
        # The hub itself refuses user_options that are not an object (or null: "as last time").
        return draw(st.dictionaries(st.text(max_size=8), json_value, max_size=3))
    service = catalog.services[draw(st.sampled_from(sorted(catalog.services)))]
    hours = _hours("odd" if catalog is ODD else "example")
    options: dict[str, Any] = {
        "service": service.name,
        "profile": draw(st.sampled_from(service.profiles)),
        "hours": draw(st.floats(MIN_HOURS, 1 / 3) | hours),  # 20 minutes: within every policy
        "inputs": {
            spec.name: draw(valid_input(spec))
            for spec in service.inputs
            if spec.required or draw(st.booleans())
        },
    }
    other_inputs = sorted({spec.name for s in catalog.services.values() for spec in s.inputs})
    changes = ["drop", "null", "service", "profile", "hours", "input", "input", "input",
               "drop-input", "foreign-input", "inputs", "extra"]  # fmt: skip
    for change in draw(st.lists(st.sampled_from(changes), max_size=3)):
        key = draw(st.sampled_from(["service", "profile", "hours", "inputs"]))
        if change == "drop":
            options.pop(key, None)
        elif change == "null":
            options[key] = None
        elif change == "service":
            options["service"] = draw(st.sampled_from([*catalog.services, "nope"]) | json_value)
        elif change == "profile":
            options["profile"] = draw(st.sampled_from([*catalog.profiles, "huge"]) | json_value)
        elif change == "hours":
            options["hours"] = draw(hours)
        elif not isinstance(options.get("inputs"), dict):
            continue
        elif change == "input" and service.inputs:
            spec = draw(st.sampled_from(service.inputs))
            options["inputs"][spec.name] = draw(invalid_input(spec))
        elif change == "drop-input" and options["inputs"]:
            options["inputs"].pop(draw(st.sampled_from(sorted(options["inputs"]))))
        elif change == "foreign-input":
            options["inputs"][draw(st.sampled_from([*other_inputs, "extra"]))] = draw(json_value)
        elif change == "inputs":
            options["inputs"] = draw(json_value)
        elif change == "extra":
            options[draw(st.sampled_from(["cmd", "image", "Service"]))] = draw(json_value)
    return options


_compiled: dict[tuple[int, frozenset[str], frozenset[str]], Any] = {}


def validators(
    catalog: Catalog, groups: frozenset[str], unavailable: frozenset[str]
) -> tuple[Draft202012Validator, dict[str, Draft202012Validator]]:
    """The schema for all services and the schema of each, checked as JSON Schemas."""
    key = (id(catalog), groups, unavailable)
    if key in _compiled:
        return _compiled[key]  # type: ignore[no-any-return]

    def compile(schema: dict[str, Any] | bool) -> Draft202012Validator:
        Draft202012Validator.check_schema(schema)  # type: ignore[arg-type]
        return Draft202012Validator(schema)

    whole = compile(user_options_schema(catalog, groups, unavailable))
    each = {
        service.name: compile(service_options_schema(catalog, service, groups, unavailable))
        for service in catalog.services.values()
    }
    _compiled[key] = (whole, each)
    return whole, each


def check_agreement(
    catalog: Catalog, options: Any, groups: tuple[str, ...], unavailable: frozenset[str]
) -> None:
    launched = server_accepts(catalog, options, groups, unavailable)
    whole, each = validators(catalog, frozenset(groups), unavailable)
    assert whole.is_valid(options) == (launched is not None), (options, launched)
    for name, validator in each.items():
        assert validator.is_valid(options) == (launched == name), (name, options, launched)


catalogs = st.sampled_from(["example", "odd"])
group_sets = st.lists(st.sampled_from(GROUPS), max_size=3, unique=True).map(tuple)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), groups=group_sets)
def test_the_schema_accepts_exactly_what_the_validator_accepts(
    data: st.DataObject, groups: tuple[str, ...]
) -> None:
    catalog = EXAMPLE if data.draw(catalogs) == "example" else ODD
    unavailable = data.draw(
        st.just(frozenset()) | st.frozensets(st.sampled_from(sorted(catalog.profiles)), max_size=2)
    )
    options = data.draw(requests(catalog))
    check_agreement(catalog, options, groups, unavailable)


#: A value each patterned input takes, to build valid requests around the one being varied.
EXAMPLES = {"model": "org/model", "tag": "abc-1"}


def example_value(spec: InputSpec) -> Any:
    if spec.name in EXAMPLES:
        return EXAMPLES[spec.name]
    if spec.type == "choice":
        return spec.choices[0]
    if spec.type == "boolean":
        return True
    if spec.type in ("integer", "number"):
        value = spec.minimum if spec.minimum is not None else 1
        return math.ceil(value) if spec.type == "integer" else value
    return "x" * max(1, spec.min_length)


def edge_values(spec: InputSpec) -> list[Any]:
    example = example_value(spec)
    values: list[Any] = [None, example, True, 0, "", [], {}]
    for bound in (spec.minimum, spec.maximum):
        if bound is not None:
            values += [bound, math.nextafter(bound, -math.inf), math.nextafter(bound, math.inf)]
            values += [math.floor(bound) - 1, math.ceil(bound) + 1, float(math.floor(bound))]
            values += [str(bound)]
    if spec.type == "string":
        for length in (spec.min_length - 1, spec.min_length, spec.max_length, spec.max_length + 1):
            values.append(_resized(example, length))
        values += [example + "\n", "\x00" + example, example + " ", example.upper()]
    values += [choice.upper() for choice in spec.choices] + list(spec.choices)
    return values


def limit_cases() -> list[Any]:
    cases = []
    for name, catalog in (("example", EXAMPLE), ("odd", ODD)):
        for service in catalog.services.values():
            groups = tuple(
                sorted(set().union(*(p.allowed_groups for p in catalog.profiles.values())))
            )
            base_inputs = {spec.name: example_value(spec) for spec in service.inputs}
            for spec in service.inputs:
                for value in [*edge_values(spec), "absent"]:
                    inputs = dict(base_inputs)
                    if value == "absent":
                        del inputs[spec.name]
                    else:
                        inputs[spec.name] = value
                    options = {"service": service.name, "inputs": inputs}
                    cases.append(
                        pytest.param(
                            catalog,
                            options,
                            groups,
                            id=f"{name}-{service.name}-{spec.name}-{value!r}",
                        )
                    )
            for profile in service.profiles:
                for group_set in ((), *((g,) for g in GROUPS)):
                    policy = catalog.policy_for(service, catalog.profiles[profile], group_set)
                    top = policy.max_duration.total_seconds() / 3600
                    for hours in (top, math.nextafter(top, 0), math.nextafter(top, math.inf)):
                        options = {"service": service.name, "profile": profile, "hours": hours,
                                   "inputs": base_inputs}  # fmt: skip
                        cases.append(
                            pytest.param(
                                catalog,
                                options,
                                (*group_set, *groups),
                                id=f"{name}-{service.name}-{profile}-{group_set}-{hours!r}",
                            )
                        )
    return cases


@pytest.mark.parametrize(("catalog", "options", "groups"), limit_cases())
def test_every_limit_agrees(catalog: Catalog, options: Any, groups: tuple[str, ...]) -> None:
    for unavailable in (frozenset(), frozenset({options.get("profile", "")})):
        check_agreement(catalog, options, groups, unavailable)


@pytest.mark.parametrize(
    ("options", "groups", "unavailable", "launched"),
    [
        ({}, (), (), "jupyter"),
        # the first profile is the default: when the backend cannot run it, a profile must be named
        ({}, (), ("cpu-small",), None),
        ({"profile": "cpu-large"}, (), ("cpu-small",), "jupyter"),
        ({"hours": MIN_HOURS}, (), (), "jupyter"),
        ({"hours": math.nextafter(MIN_HOURS, 0)}, (), (), None),
        ({"hours": 8}, (), (), "jupyter"),
        ({"hours": math.nextafter(8, 9)}, (), (), None),
        ({"hours": 24, "service": "terminal"}, ("long-runs",), (), "terminal"),
        (
            {"hours": 5, "service": "vllm", "profile": "gpu-4", "inputs": {"model": "a/b"}},
            ("gpu-large", "long-runs"),
            (),
            "vllm",
        ),  # the group's 24h overrides gpu-4's own 4h
        (
            {"hours": 5, "service": "vllm", "profile": "gpu-4", "inputs": {"model": "a/b"}},
            ("gpu-large",),
            (),
            None,
        ),
        ({"service": "vllm", "profile": "gpu-1", "inputs": {"model": "a/b"}}, (), (), "vllm"),
        ({"service": "vllm", "profile": "gpu-1"}, (), (), None),
        ({"service": "vllm", "inputs": {"model": "a/b", "max_model_len": 1024.0}}, (), (), "vllm"),
        ({"service": "vllm", "inputs": {"model": "a/b", "max_model_len": 1024.5}}, (), (), None),
        ({"service": "vllm", "inputs": {"model": "a/b\n"}}, (), (), None),
        ({"service": "vllm", "inputs": {"model": None}}, (), (), None),
        ({"service": "jupyter", "inputs": None, "hours": None, "profile": None}, (), (), "jupyter"),
        ({"hours": True}, (), (), None),
        ({"service": "vllm", "inputs": {"model": "a/b"}}, (), ("gpu-1", "gpu-4"), None),
    ],
)
def test_edges(
    example_catalog: Catalog,
    options: Any,
    groups: tuple[str, ...],
    unavailable: tuple[str, ...],
    launched: str | None,
) -> None:
    assert server_accepts(example_catalog, options, groups, frozenset(unavailable)) == launched
    check_agreement(example_catalog, options, groups, frozenset(unavailable))


def test_a_schema_is_false_when_nothing_can_run(example_catalog: Catalog) -> None:
    vllm = example_catalog.services["vllm"]
    assert service_options_schema(example_catalog, vllm, (), {"gpu-1", "gpu-4"}) is False
    everything = frozenset(example_catalog.profiles)
    assert user_options_schema(example_catalog, (), everything) is False


def test_the_schema_of_a_service_reads_as_its_rules(example_catalog: Catalog) -> None:
    schema = service_options_schema(example_catalog, example_catalog.services["vllm"], ())
    assert schema == {
        "title": "vLLM inference server (vllm)",
        "description": example_catalog.services["vllm"].description,
        "type": "object",
        "properties": {
            "service": {"const": "vllm"},
            "profile": {"enum": ["gpu-1", None]},
            "hours": {
                "type": ["number", "null"],
                "minimum": MIN_HOURS,
                "maximum": 8.0,
                "description": (
                    "how long the session may run, in hours (null: the policy's default)"
                ),
            },
            "inputs": {
                "type": "object",
                "properties": {
                    "model": {
                        "title": "Model",
                        "description": (
                            "Hugging Face model id (organisation/name) or a path under /models"
                        ),
                        "type": "string",
                        "maxLength": 200,
                        "not": {"type": "string", "pattern": "[\\u0000-\\u001f\\u007f]"},
                        "pattern": "^(?:^([A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*"
                        "|/models/[A-Za-z0-9._/-]+)$)$",
                    },
                    "max_model_len": {
                        "title": "Context length",
                        "description": "Longest prompt plus answer, in tokens",
                        "type": ["integer", "null"],
                        "minimum": 512,
                        "maximum": 131072,
                        "default": 8192,
                    },
                },
                "additionalProperties": False,
                "required": ["model"],
            },
        },
        "additionalProperties": False,
        "required": ["service", "inputs"],
    }
