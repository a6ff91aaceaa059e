"""The launch spec: a pure function of the checked selection, compared with literal output."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from berth.hub_config.catalog import Catalog
from berth.hub_config.loader import parse_catalog
from berth.hub_config.placeholders import PlaceholderError, fill, names_in, render
from berth.hub_config.units import format_duration, format_memory, parse_duration, parse_memory
from berth.spawners.options import validate_user_options
from berth.spawners.spec import LaunchSpec, PortRule, Resources, build_launch_spec


def spec_for(catalog: Catalog, options: dict[str, object], session: str = "s") -> LaunchSpec:
    return build_launch_spec(validate_user_options(catalog, options), "alice", session)


def test_jupyter_runs_singleuser_natively(example_catalog: Catalog) -> None:
    spec = spec_for(example_catalog, {"service": "jupyter", "profile": "cpu-large", "hours": 3})
    assert spec.argv == ("jupyterhub-singleuser",)
    assert spec.kind == "jupyter"
    assert spec.url_path == "/lab"
    assert spec.resources == Resources(cpus=8, memory=32 * 1024**3, gpus=0, gpu_type=None)
    assert spec.time_limit == timedelta(hours=3)
    assert spec.hard_limit == timedelta(hours=7)  # plus the 4h extension cap
    assert spec.environment == {
        "BERTH_SERVICE": "jupyter",
        "BERTH_PROFILE": "cpu-large",
        "BERTH_SESSION_HOURS": "3",
    }
    assert spec.labels == {
        "berth.jupyter.org/user": "alice",
        "berth.jupyter.org/session": "s",
        "berth.jupyter.org/service": "jupyter",
        "berth.jupyter.org/profile": "cpu-large",
    }
    assert spec.image == "quay.io/jupyter/scipy-notebook:2024-10-07"


def test_vllm_runs_behind_the_gate_with_inputs_filled(example_catalog: Catalog) -> None:
    spec = spec_for(
        example_catalog,
        {"service": "vllm", "profile": "gpu-1", "inputs": {"model": "org/m-7B"}},
        session="llm",
    )
    assert spec.argv == (
        "berth-gate",
        "--ready-path", "/health",
        "--ready-timeout", "1200",
        "--prefix", "strip",
        "--transport", "tcp",
        "--",
        "vllm", "serve", "org/m-7B",
        "--host=127.0.0.1",
        "--port={port}",
        "--root-path={base_url}",
        "--tensor-parallel-size=1",
        "--max-model-len=8192",
    )  # fmt: skip
    assert spec.port == PortRule("tcp")
    assert spec.resources.gpus == 1 and spec.resources.gpu_type == "a100"
    assert spec.ready_timeout == timedelta(minutes=20)


def test_environment_with_runtime_placeholders_is_left_for_the_gate(
    example_catalog: Catalog,
) -> None:
    spec = spec_for(example_catalog, {"service": "ollama"})
    assert spec.argv[-5:] == ("--env", "OLLAMA_HOST", "--", "ollama", "serve")
    assert spec.environment["OLLAMA_HOST"] == "127.0.0.1:{port}"
    assert spec.environment["OLLAMA_KEEP_ALIVE"] == "30m"


def test_user_braces_cannot_become_placeholders() -> None:
    catalog = parse_catalog(
        """
profiles:
  p: {cpus: 1, memory: 1G}
services:
  web:
    kind: gated
    command: [serve, --port, "{port}", --title, "{input.title}", "{{literal}}"]
    environment: {TITLE: "{input.title} on {port}", PLAIN: "{input.title}"}
    inputs:
      title: {type: string}
    profiles: [p]
"""
    )
    spec = spec_for(catalog, {"service": "web", "inputs": {"title": "{port} {base_url}"}})
    # escaped for the gate, so the gate's render() gives the user's text back verbatim
    assert spec.argv[-6:] == (
        "serve", "--port", "{port}", "--title", "{{port}} {{base_url}}", "{{literal}}",
    )  # fmt: skip
    assert render(spec.argv[-2], {"port": "9", "base_url": "/x/"}) == "{port} {base_url}"
    assert render(spec.argv[-1], {}) == "{literal}"
    # a variable without runtime placeholders is final already
    assert spec.environment["PLAIN"] == "{port} {base_url}"
    assert spec.environment["TITLE"] == "{{port}} {{base_url}} on {port}"
    assert "--env" in spec.argv and spec.argv[spec.argv.index("--env") + 1] == "TITLE"


def test_placeholders() -> None:
    assert names_in("--port={port} {{x}} {input.model}") == ["port", "input.model"]
    assert fill("{a}-{b}", {"a": "1"}) == "1-{b}"
    assert render("{a}-{{b}}", {"a": "1"}) == "1-{b}"
    with pytest.raises(PlaceholderError, match=re.escape("no value for placeholder '{b}'")):
        render("{b}", {})
    with pytest.raises(PlaceholderError, match="is not a placeholder name"):
        names_in("{Not Valid}")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("8h", 28800), ("1d", 86400), ("1h30m", 5400), (45, 45)],
)
def test_durations(text: object, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["soon", "-1", "1x", True, None, "h"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [("512M", 512 * 1024**2), ("4G", 4 * 1024**3), ("16Gi", 16 * 1024**3), (1024, 1024)],
)
def test_memory(text: object, size: int) -> None:
    assert parse_memory(text) == size


def test_formatting_round_trips() -> None:
    assert format_duration(timedelta(hours=1, minutes=30)) == "1h30m"
    assert format_memory(1536 * 1024**2) == "1536M"
    assert format_memory(64 * 1024**3) == "64G"
