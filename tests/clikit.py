"""Running the installed ``berth`` command in tests, with a home (and so a login) of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .hubtest import Hub

__all__ = ["BERTH", "Cli", "one_line_error"]

BERTH = str(Path(sys.executable).parent / "berth")


@dataclass
class Cli:
    """``berth`` with a home of its own (so its login file is the test's)."""

    home: Path
    hub: Hub

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("JUPYTERHUB_", "BERTH_"))
        }
        env.update(HOME=str(self.home), XDG_CONFIG_HOME=str(self.home / ".config"))
        env.update(extra)
        return env

    def __call__(
        self, *args: str, input: str | None = None, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [BERTH, *args],
            env=self.env(**env),
            input=input,
            capture_output=True,
            text=True,
            timeout=240,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [BERTH, *args],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def one_line_error(result: subprocess.CompletedProcess[str], code: int, fragment: str) -> str:
    """A refusal as the issue asks: one line on stderr, nothing on stdout, the exit code."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("berth: "), lines[0]
    assert fragment in lines[0], lines[0]
    return lines[0]
