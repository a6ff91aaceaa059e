"""Exit codes and the one error the commands raise."""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CliError", "ExitCode"]


class ExitCode(IntEnum):
    """What ``berth`` exits with. Documented in ``berth --help`` and cli/README.md."""

    OK = 0
    #: something failed that no other code names (the hub failed, answered oddly, lacks Berth)
    FAILED = 1
    #: the command line is wrong: unknown option, malformed --input, a value the hub refused
    USAGE = 2
    #: not logged in, or the hub refused the token (wrong, expired, revoked, missing a scope)
    AUTH = 3
    #: no such service, profile or session
    NOT_FOUND = 4
    #: the hub cannot be reached
    UNREACHABLE = 5
    #: the session's state does not allow it: already running, not running, cap reached...
    CONFLICT = 6
    #: the session failed to start, or stopped while being waited for
    SESSION_FAILED = 7
    #: gave up waiting (--timeout); the session goes on
    TIMEOUT = 8
    #: interrupted (Ctrl-C); the session goes on
    INTERRUPTED = 130


class CliError(Exception):
    """One line for the user — what is wrong and how to fix it — and the exit code."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
