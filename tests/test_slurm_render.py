"""The Slurm renderer against literal expected jobs, one per profile of the example catalog."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from berth.hub_config import load_catalog
from berth.hub_config.catalog import Catalog, SlurmProfile
from berth.spawners.options import validate_user_options
from berth.spawners.slurm.names import escape_name, session_job_name
from berth.spawners.slurm.render import (
    BatchJob,
    JobSettings,
    RenderError,
    format_time_limit,
    render_batch_job,
)
from berth.spawners.spec import LaunchSpec, build_launch_spec

EXAMPLE = Path(__file__).parent.parent / "hub_config" / "examples" / "berth.yaml"
SETTINGS = JobSettings(
    job_name="berth.alice.nb",
    output="/home/alice/.berth/slurm/nb-%j.log",
    workdir="/home/alice",
)
HEAD = (
    "--parsable",
    "--job-name=berth.alice.nb",
    "--output=/home/alice/.berth/slurm/nb-%j.log",
    "--chdir=/home/alice",
    "--export=ALL",
    "--no-requeue",
    "--nodes=1",
    "--ntasks=1",
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog(EXAMPLE)


def spec_for(
    catalog: Catalog, options: dict[str, Any], groups: list[str] | None = None
) -> LaunchSpec:
    selection = validate_user_options(catalog, options, groups or [])
    return build_launch_spec(selection, "alice", "nb")


def test_every_example_profile_is_covered_below(catalog: Catalog) -> None:
    assert set(catalog.profiles) == {"cpu-small", "cpu-large", "gpu-1", "gpu-4"}


def test_jupyter_on_cpu_small(catalog: Catalog) -> None:
    job = render_batch_job(
        spec_for(catalog, {"service": "jupyter", "profile": "cpu-small"}), SETTINGS
    )
    assert job == BatchJob(
        argv=(*HEAD, "--cpus-per-task=2", "--mem=4096M", "--time=6:00:00", "--partition=cpu"),
        script="""\
#!/bin/bash
# Berth session berth.alice.nb: jupyter on cpu-small. Written by the hub.
# The scheduler options are on sbatch's command line: scontrol show job $SLURM_JOB_ID
set -e
export BERTH_PROFILE=cpu-small
export BERTH_SERVICE=jupyter
export BERTH_SESSION_HOURS=2
exec berth-slurm-job --ip 0.0.0.0 -- jupyterhub-singleuser
""",
    )


def test_rstudio_on_cpu_large(catalog: Catalog) -> None:
    spec = spec_for(catalog, {"service": "rstudio", "profile": "cpu-large", "hours": 0.5})
    job = render_batch_job(spec, SETTINGS)
    assert job == BatchJob(
        argv=(*HEAD, "--cpus-per-task=8", "--mem=32768M", "--time=4:30:00", "--partition=cpu"),
        script="""\
#!/bin/bash
# Berth session berth.alice.nb: rstudio on cpu-large. Written by the hub.
# The scheduler options are on sbatch's command line: scontrol show job $SLURM_JOB_ID
set -e
export BERTH_PROFILE=cpu-large
export BERTH_SERVICE=rstudio
export BERTH_SESSION_HOURS=0.5
exec berth-slurm-job --ip 0.0.0.0 -- berth-gate --ready-path / --ready-timeout 120 --prefix strip \
--transport tcp -- rserver --www-address=127.0.0.1 '--www-port={port}' \
'--www-root-path={base_url}' --auth-none=1 --www-frame-origin=same --www-verify-user-agent=0 \
'--server-user={os_user}' --server-daemonize=0 --server-data-dir=/tmp/rstudio-alice-nb
""".replace("\\\n", ""),
    )


def test_ollama_on_gpu_1(catalog: Catalog) -> None:
    job = render_batch_job(spec_for(catalog, {"service": "ollama", "profile": "gpu-1"}), SETTINGS)
    assert job == BatchJob(
        argv=(
            *HEAD,
            "--cpus-per-task=8",
            "--mem=65536M",
            "--time=6:00:00",
            "--partition=gpu",
            "--qos=interactive",
            "--gres=gpu:a100:1",
        ),
        script="""\
#!/bin/bash
# Berth session berth.alice.nb: ollama on gpu-1. Written by the hub.
# The scheduler options are on sbatch's command line: scontrol show job $SLURM_JOB_ID
set -e
export BERTH_PROFILE=gpu-1
export BERTH_SERVICE=ollama
export BERTH_SESSION_HOURS=2
export OLLAMA_HOST='127.0.0.1:{port}'
export OLLAMA_KEEP_ALIVE=30m
exec berth-slurm-job --ip 0.0.0.0 -- berth-gate --ready-path / --ready-timeout 120 --prefix strip \
--transport tcp --env OLLAMA_HOST -- ollama serve
""".replace("\\\n", ""),
    )


def test_vllm_on_gpu_4_with_admin_settings(catalog: Catalog) -> None:
    spec = spec_for(
        catalog,
        {
            "service": "vllm",
            "profile": "gpu-4",
            "hours": 3,
            "inputs": {"model": "/models/llama-3.1/8B", "max_model_len": 32768},
        },
        ["gpu-large"],
    )
    settings = dataclasses.replace(
        SETTINGS,
        launcher=("/opt/berth venv/bin/berth-slurm-job",),
        bind_ip="10.1.0.11",
        setup=("source /opt/berth/env.sh",),
        extra_options=("--mail-type=NONE",),
    )
    job = render_batch_job(spec, settings)
    assert job == BatchJob(
        argv=(
            *HEAD,
            "--cpus-per-task=32",
            "--mem=262144M",
            # 3 hours asked + the 4 hour extension cap: the culler ends it at its real deadline
            "--time=7:00:00",
            "--partition=gpu",
            "--qos=interactive",
            "--gres=gpu:a100:4",
            "--mail-type=NONE",
        ),
        script="""\
#!/bin/bash
# Berth session berth.alice.nb: vllm on gpu-4. Written by the hub.
# The scheduler options are on sbatch's command line: scontrol show job $SLURM_JOB_ID
set -e
export BERTH_PROFILE=gpu-4
export BERTH_SERVICE=vllm
export BERTH_SESSION_HOURS=3
export HF_HUB_DISABLE_TELEMETRY=1
# set-up lines from the hub's configuration and the catalog
source /opt/berth/env.sh
module load cuda/12.4
exec '/opt/berth venv/bin/berth-slurm-job' --ip 10.1.0.11 -- berth-gate --ready-path /health \
--ready-timeout 1200 --prefix strip --transport tcp -- vllm serve /models/llama-3.1/8B \
--host=127.0.0.1 '--port={port}' '--root-path={base_url}' --tensor-parallel-size=4 \
--max-model-len=32768
""".replace("\\\n", ""),
    )


def test_profile_account_constraint_reservation_and_untyped_gpus(catalog: Catalog) -> None:
    spec = spec_for(catalog, {"service": "jupyter", "profile": "gpu-1"})
    profile = dataclasses.replace(
        spec.profile,
        gpu_type=None,
        slurm=SlurmProfile(
            partition="gpu", account="proj-42", qos="interactive", constraint="a100&ib",
            reservation="course",
        ),
    )  # fmt: skip
    spec = dataclasses.replace(
        spec,
        profile=profile,
        resources=dataclasses.replace(spec.resources, gpu_type=None, cpus=1.5),
    )
    assert render_batch_job(spec, SETTINGS).argv == (
        *HEAD,
        "--cpus-per-task=2",  # fractional CPUs round up: Slurm counts whole CPUs
        "--mem=65536M",
        "--time=6:00:00",
        "--partition=gpu",
        "--account=proj-42",
        "--qos=interactive",
        "--reservation=course",
        "--constraint=a100&ib",
        "--gres=gpu:1",
    )


def test_values_with_shell_syntax_are_quoted_word_by_word(catalog: Catalog) -> None:
    spec = spec_for(catalog, {"service": "files", "profile": "cpu-small"})
    hostile = ("python3", "-c", "print('$(id)')", "`id`", "a\nb", "; rm -rf ~", '"$HOME"')
    spec = dataclasses.replace(spec, argv=hostile, environment={"GREETING": "it's $(id)"})
    script = render_batch_job(spec, SETTINGS).script
    assert "export GREETING='it'\"'\"'s $(id)'\n" in script
    assert script.endswith(
        "exec berth-slurm-job --ip 0.0.0.0 -- python3 -c 'print('\"'\"'$(id)'\"'\"')' '`id`' 'a\n"
        "b' '; rm -rf ~' '\"$HOME\"'\n"
    )


def test_bash_runs_exactly_the_spec_words(catalog: Catalog, tmp_path: Path) -> None:
    """The rendered script, run by a real bash, hands the launcher the spec's words unchanged."""
    spec = spec_for(catalog, {"service": "files", "profile": "cpu-small"})
    hostile = ("cmd", "$(touch pwned)", "`touch pwned`", "a b\nc", "'\"", "*", "~", "$HOME")
    spec = dataclasses.replace(spec, argv=hostile, environment={"GREETING": "it's $(touch pwned)"})
    show = "import json, os, sys; print(json.dumps([sys.argv[1:], os.environ['GREETING']]))"
    settings = dataclasses.replace(SETTINGS, launcher=(sys.executable, "-c", show))
    script = render_batch_job(spec, settings).script
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert json.loads(out.stdout) == [
        ["--ip", "0.0.0.0", "--", *hostile],
        "it's $(touch pwned)",
    ]
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"job_name": "berth alice"}, "job name"),
        ({"job_name": "x\n#SBATCH --uid=0"}, "job name"),
        ({"output": "relative/log"}, "log path"),
        ({"output": "/tmp/a\n#SBATCH --x"}, "log path"),
        ({"workdir": "/home/a\x00"}, "working directory"),
        ({"bind_ip": "0.0.0.0; id"}, "not an IP address"),
        ({"setup": ("module load x\nid",)}, "control character"),
        ({"extra_options": ("--partition=other",)}, "sets what Berth sets"),
        ({"extra_options": ("--gres=gpu:8",)}, "sets what Berth sets"),
        ({"extra_options": ("-p other",)}, "must look like --name=value"),
        ({"extra_options": ("--comment=a\nb",)}, "must look like --name=value"),
        ({"launcher": ()}, "launcher command is empty"),
    ],
)
def test_refuses_bad_settings(catalog: Catalog, change: dict[str, Any], message: str) -> None:
    spec = spec_for(catalog, {"service": "jupyter", "profile": "cpu-small"})
    with pytest.raises(RenderError, match=message):
        render_batch_job(spec, dataclasses.replace(SETTINGS, **change))


@pytest.mark.parametrize(
    ("field", "value"),
    [("partition", "cpu\n#SBATCH --uid=0"), ("qos", "a b"), ("account", "$(id)"),
     ("constraint", "a;b")],
)  # fmt: skip
def test_refuses_scheduler_names_that_are_not_names(
    catalog: Catalog, field: str, value: str
) -> None:
    spec = spec_for(catalog, {"service": "jupyter", "profile": "cpu-small"})
    profile = dataclasses.replace(spec.profile, slurm=SlurmProfile(**{field: value}))
    with pytest.raises(RenderError, match=field):
        render_batch_job(dataclasses.replace(spec, profile=profile), SETTINGS)


def test_refuses_nul_in_command(catalog: Catalog) -> None:
    spec = spec_for(catalog, {"service": "jupyter", "profile": "cpu-small"})
    with pytest.raises(RenderError, match="NUL"):
        render_batch_job(dataclasses.replace(spec, argv=("a\x00b",)), SETTINGS)


@pytest.mark.parametrize(
    ("limit", "text"),
    [
        (timedelta(minutes=1), "0:01:00"),
        (timedelta(seconds=61), "0:02:00"),
        (timedelta(hours=6), "6:00:00"),
        (timedelta(hours=23, minutes=59), "23:59:00"),
        (timedelta(hours=24), "1-00:00:00"),
        (timedelta(hours=28, minutes=30), "1-04:30:00"),
    ],
)
def test_time_limit_format(limit: timedelta, text: str) -> None:
    assert format_time_limit(limit) == text


def test_time_limit_must_be_positive() -> None:
    with pytest.raises(RenderError):
        format_time_limit(timedelta(0))


def test_job_names_are_deterministic_and_unambiguous() -> None:
    assert session_job_name("berth", "alice", "nb") == "berth.alice.nb"
    assert session_job_name("berth", "alice", "") == "berth.alice."
    assert session_job_name("hub2", "a.b@example.org", "My_nb.1") == (
        "hub2.a_2eb_40example_2eorg.My_5fnb_2e1"
    )
    # escaping keeps different (user, session) pairs apart
    assert session_job_name("b", "a.b", "c") != session_job_name("b", "a", "b.c")
    assert escape_name("é|\n") == "_c3_a9_7c_0a"
    with pytest.raises(ValueError, match="prefix"):
        session_job_name("bad prefix", "a", "b")
