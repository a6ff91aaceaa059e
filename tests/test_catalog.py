"""The catalog loader: the example loads, and every mistake is named precisely."""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from berth.hub_config.catalog import Catalog
from berth.hub_config.loader import CatalogError, catalog_from_dict, load_catalog, parse_catalog

MINIMAL = """\
profiles:
  small: {cpus: 1, memory: 1G}
services:
  notebook:
    kind: jupyter
    profiles: [small]
"""


def problems(text: str) -> list[str]:
    with pytest.raises(CatalogError) as info:
        parse_catalog(textwrap.dedent(text), "berth.yaml")
    return str(info.value).splitlines()[1:]


def test_example_catalog_offers_every_service_type(example_catalog: Catalog) -> None:
    assert set(example_catalog.services) >= {
        "jupyter", "code-server", "rstudio", "vllm", "ollama", "terminal",
    }  # fmt: skip
    gpu = [p for p in example_catalog.profiles.values() if p.gpus]
    cpu = [p for p in example_catalog.profiles.values() if not p.gpus]
    assert gpu and cpu
    assert example_catalog.services["jupyter"].kind == "jupyter"
    assert all(
        s.kind == "gated" for name, s in example_catalog.services.items() if name != "jupyter"
    )
    vllm = example_catalog.services["vllm"]
    model = vllm.input("model")
    assert model is not None and model.required and model.pattern


def test_minimal_catalog_gets_documented_defaults() -> None:
    catalog = parse_catalog(MINIMAL)
    assert catalog.backend == "local"
    assert catalog.policy.max_duration == timedelta(hours=8)
    notebook = catalog.services["notebook"]
    assert notebook.command == ("jupyterhub-singleuser",)
    assert catalog.profiles["small"].memory == 1024**3
    assert catalog.profiles["small"].description == "1 CPU, 1 GiB"


def test_plain_traitlets_dict_is_checked_the_same_way() -> None:
    catalog = catalog_from_dict(
        {
            "profiles": {"small": {"cpus": 1, "memory": "1G"}},
            "services": {"notebook": {"kind": "jupyter", "profiles": ["small"]}},
        }
    )
    assert list(catalog.services) == ["notebook"]
    with pytest.raises(CatalogError, match=r"c\.BerthSpawner\.catalog: profiles\.small\.cpus"):
        catalog_from_dict({"profiles": {"small": {"cpus": -1, "memory": "1G"}}, "services": {}})


def test_error_names_file_line_key_value_and_what_is_allowed() -> None:
    lines = problems(
        """\
        profiles:
          small: {cpus: 1, memory: 1G}
        services:
          notebook:
            kind: jupyter
            profiles: [small, huge]
        """
    )
    assert lines == [
        "  berth.yaml:6: services.notebook.profiles[1]: 'huge' is not a profile of this"
        " catalog; known profiles: small"
    ]


def test_all_problems_are_reported_at_once() -> None:
    lines = problems(
        """\
        backend: cloud
        profiles:
          small: {cpus: 0, memory: lots, gpus: -1}
        services:
          notebook:
            kind: notebook
            profiles: [small]
        """
    )
    text = "\n".join(lines)
    assert "berth.yaml:1: backend: 'cloud' is not one of: local, slurm, kubernetes" in text
    assert "profiles.small.cpus: 0 is too small; the minimum is 0.001" in text
    assert "profiles.small.memory: 'lots': expected a memory size such as 512M" in text
    assert "profiles.small.gpus: -1 is too small; the minimum is 0" in text
    assert "services.notebook.kind: 'notebook' is not one of: jupyter, gated" in text
    assert len(lines) == 5


def test_malformed_yaml_is_refused_with_its_line() -> None:
    lines = problems("profiles:\n  small: {cpus: 1\nservices: []\n")
    assert len(lines) == 1
    assert lines[0].startswith("  berth.yaml:3: not valid YAML:")


def test_unknown_key_suggests_the_right_one() -> None:
    lines = problems(MINIMAL.replace("kind: jupyter", "kind: jupyter\n    readyness_path: /"))
    assert lines == [
        "  berth.yaml:6: services.notebook.readyness_path: unknown key 'readyness_path'"
        " (did you mean 'readiness_path'?); allowed here: display_name, description, kind,"
        " command, environment, url_path, readiness_path, ready_timeout, prefix, transport,"
        " profiles, inputs, image, slurm, policy, allowed_groups"
    ]


def test_duplicate_keys_are_refused_not_silently_overwritten() -> None:
    lines = problems(MINIMAL + "  notebook:\n    kind: jupyter\n    profiles: [small]\n")
    assert lines == ["  berth.yaml:7: services.notebook: 'notebook' appears twice; keep one"]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        (
            "  Bad_Name:\n    kind: jupyter\n    profiles: [small]\n",
            "services.Bad_Name: 'Bad_Name' is not a valid service name",
        ),
        (
            "  web:\n    kind: gated\n    command: [server, --port, '{prot}']\n"
            "    profiles: [small]\n",
            "services.web.command[2]: unknown placeholder '{prot}'; allowed here:",
        ),
        (
            "  web:\n    kind: gated\n    command: [server]\n    profiles: [small]\n",
            "a gated service with transport 'tcp' must receive {port}",
        ),
        (
            "  web:\n    kind: gated\n    command: ['server {']\n    profiles: [small]\n",
            "services.web.command[0]: a lone '{' at position 7",
        ),
        (
            "  lab:\n    kind: jupyter\n    command: [bash, -c, evil]\n    profiles: [small]\n",
            "a jupyter service runs jupyterhub-singleuser, not 'bash'",
        ),
        (
            "  lab:\n    kind: jupyter\n    command: [jupyterhub-singleuser, '--port={port}']\n"
            "    profiles: [small]\n",
            "unknown placeholder '{port}'",
        ),
        (
            "  web:\n    kind: gated\n    command: [s, '{port}', '{input.model}']\n"
            "    profiles: [small]\n",
            "unknown placeholder '{input.model}'",
        ),
        (
            "  web:\n    kind: gated\n    command: [s, '{port}']\n    profiles: [small]\n"
            "    inputs:\n      model: {type: string, pattern: '(unclosed'}\n",
            "services.web.inputs.model.pattern: '(unclosed' is not a regular expression",
        ),
        (
            "  web:\n    kind: gated\n    command: [s, '{port}']\n    profiles: [small]\n"
            "    inputs:\n      size: {type: integer, default: 99, maximum: 10}\n",
            "services.web.inputs.size.default: the default does not pass its own rules: 99 is"
            " above the maximum of 10",
        ),
        (
            "  web:\n    kind: gated\n    command: [s, '{port}']\n    profiles: [small]\n"
            "    environment: {'BAD-NAME': x}\n",
            "services.web.environment.BAD-NAME: 'BAD-NAME' is not a variable name",
        ),
        (
            "  web:\n    kind: gated\n    command: [s, '{port}']\n    profiles: [small]\n"
            "    readiness_path: health\n",
            "services.web.readiness_path: 'health' is not allowed; use an absolute URL path",
        ),
        (
            "  web:\n    kind: gated\n    command: [s, '{port}']\n    profiles: []\n",
            "services.web.profiles: list at least one profile",
        ),
        (
            "  web:\n    kind: gated\n    command: [s, '{port}']\n    profiles: [small]\n"
            "    policy: {max_duration: forever}\n",
            "services.web.policy.max_duration: 'forever': expected a duration",
        ),
    ],
)
def test_service_mistakes(snippet: str, expected: str) -> None:
    text = "profiles:\n  small: {cpus: 1, memory: 1G}\nservices:\n" + snippet
    assert expected in "\n".join(problems(text))


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("{cpus: 1, memory: 1G, gpu_type: a100}", "a gpu_type needs gpus of 1 or more"),
        (
            '{cpus: 1, memory: 1G, slurm: {partition: "gpu\\n#SBATCH --x"}}',
            "profiles.p.slurm.partition: 'gpu\\n#SBATCH --x' contains a control character",
        ),
        (
            "{cpus: 1, memory: 1G, slurm: {account: 'a b'}}",
            "profiles.p.slurm.account: 'a b' is not allowed",
        ),
        ("{cpus: 1, memory: 1K}", "profiles.p.memory: '1K' is less than the 16M minimum"),
        ("{memory: 1G}", "profiles.p: 'cpus' is required"),
        (
            "{cpus: 1, memory: 1G, kubernetes: {gpu_resource: gpu}}",
            "use an extended resource name such as nvidia.com/gpu",
        ),
    ],
)
def test_profile_mistakes(profile: str, expected: str) -> None:
    text = f"profiles:\n  p: {profile}\nservices:\n  s:\n    kind: jupyter\n    profiles: [p]\n"
    assert expected in "\n".join(problems(text))


def test_policy_default_longer_than_max_is_refused() -> None:
    lines = problems("policy: {default_duration: 9h, max_duration: 2h}\n" + MINIMAL)
    assert lines == ["  berth.yaml:1: policy.default_duration: 9h is longer than max_duration (2h)"]


def test_empty_and_unreadable_files(tmp_path: Path) -> None:
    empty = tmp_path / "berth.yaml"
    empty.write_text("")
    with pytest.raises(CatalogError, match="the file is empty"):
        load_catalog(empty)
    with pytest.raises(CatalogError, match="cannot read the catalog: No such file"):
        load_catalog(tmp_path / "missing.yaml")


def test_policy_precedence_and_most_generous_group() -> None:
    catalog = parse_catalog(
        textwrap.dedent(
            """\
            policy: {idle_timeout: 1h, max_duration: 8h, extension_cap: 4h}
            groups:
              night: {max_duration: 24h}
              forever: {idle_timeout: never}
              short: {max_duration: 1h}
            profiles:
              gpu: {cpus: 1, memory: 1G, gpus: 1, policy: {idle_timeout: 30m, max_duration: 4h}}
            services:
              lab:
                kind: jupyter
                profiles: [gpu]
                policy: {idle_timeout: 2h, extension_cap: 1h}
            """
        )
    )
    lab, gpu = catalog.services["lab"], catalog.profiles["gpu"]
    base = catalog.policy_for(lab, gpu, [])
    # the profile beats the service type, which beats the defaults
    assert base.idle_timeout == timedelta(minutes=30)
    assert base.max_duration == timedelta(hours=4)
    assert base.extension_cap == timedelta(hours=1)
    # groups beat both; among groups, the most generous value wins
    grouped = catalog.policy_for(lab, gpu, ["night", "short", "forever"])
    assert grouped.max_duration == timedelta(hours=24)
    assert grouped.idle_timeout is None
