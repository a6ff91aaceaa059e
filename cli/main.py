"""``berth``: launch, watch, reach, extend and stop Berth sessions from a terminal."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .commands import COMMANDS, Context
from .errors import CliError, ExitCode

__all__ = ["build_parser", "main"]

EXIT_CODES = """\
exit codes:
  0  done
  1  something else failed (the hub failed or answered oddly, or does not run Berth)
  2  the command line is wrong, or the hub refused a value (e.g. more hours than allowed)
  3  not logged in, or the token is wrong, expired, revoked or lacks a permission
  4  no such service, profile or session
  5  the hub cannot be reached
  6  the session's state does not allow it (already running, not running, cap reached)
  7  the session failed to start, or stopped while being waited for
  8  gave up waiting (--timeout); the session goes on
  130  interrupted (Ctrl-C); the session goes on

The hub and token come from BERTH_URL/BERTH_TOKEN, else `berth login`, else the
JUPYTERHUB_API_URL/JUPYTERHUB_API_TOKEN a session has.
"""


class _Parser(argparse.ArgumentParser):
    """Command-line mistakes in one line, with where to look, and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"berth: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(ExitCode.USAGE)


def _positive_hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of hours (e.g. 2 or 0.5)"
        ) from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: hours must be more than 0")
    return value


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("the timeout must be more than 0 seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="berth",
        description="Launch, watch, reach, extend and stop interactive sessions on a Berth hub.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"berth {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help: str, *, reads: bool = False, session: bool = False) -> _Parser:
        sub: _Parser = commands.add_parser(name, help=help, description=help)
        if reads:
            sub.add_argument("--json", action="store_true", help="print JSON for programs")
        if session:
            sub.add_argument("name", help="the session's name (see `berth list`)")
        if name not in ("login", "logout"):
            sub.add_argument(
                "--user", metavar="NAME", help="act on this user's sessions (admins only)"
            )
        return sub

    login = command("login", "store the hub's address and your API token (file mode 0600)")
    login.add_argument("--url", help="the hub's address, e.g. https://hub.example.org")
    login.add_argument(
        "--token-stdin",
        action="store_true",
        help="read the token from standard input (else JUPYTERHUB_API_TOKEN, else a prompt)",
    )
    command("logout", "forget the stored login")

    services = command(
        "services", "what you may launch: service types, profiles, resources, limits", reads=True
    )
    services.add_argument("service", nargs="?", help="show only this service type")

    launch = command(
        "launch", "start a session (a service on a profile, for some hours)", reads=True
    )
    launch.add_argument("service", help="the service type (see `berth services`)")
    launch.add_argument("--profile", "-p", help="the profile to run on")
    launch.add_argument("--gpus", type=_count, metavar="N", help="pick the profile with N GPUs")
    launch.add_argument("--gpu-type", metavar="T", help="...of this type (e.g. a100)")
    launch.add_argument("--hours", type=_positive_hours, metavar="H", help="how long it may run")
    launch.add_argument("--name", "-n", help="the session's name (default: the service's)")
    launch.add_argument(
        "--input",
        "-i",
        action="append",
        metavar="KEY=VALUE",
        help="a value the service asks for, e.g. --input model=org/name (repeatable)",
    )
    launch.add_argument(
        "--wait", "-w", action="store_true", help="follow its progress until it is ready"
    )
    launch.add_argument("--timeout", type=_seconds, metavar="S", help="give up waiting after S s")

    listing = command("list", "your sessions: state, time left, URL", reads=True)
    listing.add_argument("--all", "-a", action="store_true", help="include stopped sessions")

    command("describe", "everything about one session", reads=True, session=True)
    url = command("url", "print a running session's URL", reads=True, session=True)
    url.add_argument("--open", action="store_true", help="also open it in a browser")
    wait = command("wait", "follow a starting session until it is ready", reads=True, session=True)
    wait.add_argument("--timeout", type=_seconds, metavar="S", help="give up after S seconds")

    extend = command(
        "extend", "give a session more time (within the cap)", reads=True, session=True
    )
    extend.add_argument("--hours", type=_positive_hours, default=1.0, metavar="H",
                        help="how much more (default 1)")  # fmt: skip
    extend.add_argument("--reason", help="one line, kept in the hub's ledger")

    stop = command("stop", "stop a session", session=True)
    stop.add_argument("--remove", action="store_true", help="also forget it (its name and options)")
    stop.add_argument("--no-wait", action="store_true", help="return once the stop is asked")
    stop.add_argument("--timeout", type=_seconds, default=120.0, metavar="S",
                      help="give up waiting for it after S seconds (default 120)")  # fmt: skip

    logs = command("logs", "a session's own output", reads=True, session=True)
    logs.add_argument("--lines", "-n", type=_count, default=200, metavar="N",
                      help="how many of the last lines (default 200, at most 10000)")  # fmt: skip
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("jupyterhub-berth")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return ExitCode.USAGE
    ctx = Context(args)
    try:
        return COMMANDS[args.command](ctx)
    except CliError as e:
        sys.stderr.write(f"berth: {e.message}\n")
        return e.code
    except KeyboardInterrupt:
        sys.stderr.write("berth: interrupted\n")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # `berth list | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.OK
    except Exception as e:
        if os.environ.get("BERTH_DEBUG"):
            raise
        sys.stderr.write(
            f"berth: unexpected error ({type(e).__name__}: {e}); please report it, with the"
            " output of the same command run with BERTH_DEBUG=1\n"
        )
        return ExitCode.FAILED
    finally:
        ctx.close()


if __name__ == "__main__":
    raise SystemExit(main())
