"""What names and values in the catalog may look like, in one place.

The catalog loader checks them when it reads berth.yaml; renderers (the Slurm batch script, say)
check them again at the last moment, against the same patterns.
"""

from __future__ import annotations

import re

__all__ = ["CONSTRAINT", "CONTROL", "ENV_NAME", "SCHEDULER_NAME"]

#: Scheduler names (partition, account, qos, reservation, gpu type): what Slurm itself accepts,
#: nothing a shell reads.
SCHEDULER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,63}$")
#: A Slurm --constraint expression.
CONSTRAINT = re.compile(r"^[A-Za-z0-9_.:+&|()\[\]*-]{1,128}$")
#: An environment variable's name.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Control characters (newlines among them): never in a value that reaches a script or argv.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
