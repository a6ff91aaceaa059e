"""batchspawner's SlurmSpawner, imported without batchspawner's hub API module.

``import batchspawner`` runs the package's ``__init__``, which imports ``batchspawner.api``; that
module appends a handler to ``jupyterhub.apihandlers.default_handlers`` as it is imported, and the
handler sets *any* attribute of a spawner from request JSON. Berth's hubs must not serve it. So,
before batchspawner is first imported, an empty module is registered under the name
``batchspawner.api``: the package's ``from . import api`` finds it and adds nothing. If something
imported batchspawner earlier, its handler is already there; :func:`batchspawner_api_loaded` says
so and the spawner logs it as an error.
"""

from __future__ import annotations

import sys
import types

from jupyterhub import apihandlers

if "batchspawner" not in sys.modules:
    sys.modules.setdefault(
        "batchspawner.api",
        types.ModuleType(
            "batchspawner.api",
            "Left empty by Berth: batchspawner's /api/batchspawner handler is not loaded.",
        ),
    )

from batchspawner import SlurmSpawner

__all__ = ["SlurmSpawner", "batchspawner_api_loaded"]


def batchspawner_api_loaded() -> bool:
    """Whether batchspawner's own setattr endpoint is among the hub's handlers."""
    return any(pattern == r"/api/batchspawner" for pattern, *_ in apihandlers.default_handlers)
