"""``berth-gate``: the command a backend runs for a gated session.

    berth-gate --ready-path P --ready-timeout SECONDS --prefix strip|keep --transport tcp|unix \\
        [--env NAME ...] -- <service command with {port}/{unix_socket}/{base_url}>

Exit status: the service's own; 2 for a bad command line or environment; 124 when the service
never answered; 126/127 when its program cannot run.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from .config import ConfigError, parse_args, read_environment
from .gate import Gate
from .memory import keep_read_buffers

__all__ = ["main"]

log = logging.getLogger("berth.gate")


async def _run(argv: Sequence[str]) -> int:
    options = parse_args(argv)
    logging.basicConfig(
        level=options.log_level,
        format="[berth-gate %(asctime)s %(levelname)s] %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    hub = read_environment(os.environ)
    gate = Gate(options, hub, dict(os.environ))
    return await gate.run()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    keep_read_buffers(os.environ)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; asyncio works too
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        return runner(_run(args))
    except ConfigError as e:
        print(f"berth-gate: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"berth-gate: cannot listen: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
