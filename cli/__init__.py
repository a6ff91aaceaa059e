"""The ``berth`` command: launch, list, describe, url, wait, extend, stop and logs of sessions.

See cli/README.md. ``main`` is the console script's entry point.
"""

from .errors import CliError, ExitCode
from .main import main

__all__ = ["CliError", "ExitCode", "main"]
