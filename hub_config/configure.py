"""``configure(c, "berth.yaml")``: the one line an admin's jupyterhub_config.py needs.

It checks the catalog (the hub refuses to start on a bad one, saying why), picks the spawner for
the catalog's backend, turns on named servers (one per session) and Berth's pages. Everything it
sets is plain traitlets config, so later lines of jupyterhub_config.py can override any of it.
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import Any

from .catalog import Catalog
from .loader import CatalogError, load_catalog

__all__ = ["MULTI_SPAWNER", "SPAWNERS", "TEMPLATES", "configure", "resolve_catalog_path"]

#: Entry points (group ``jupyterhub.spawners``) per backend.
SPAWNERS = {
    "local": "berth-local",
    "slurm": "berth-slurm",
    "kubernetes": "berth-kubernetes",
}
#: For catalogs whose profiles use several backends.
MULTI_SPAWNER = "berth"
TEMPLATES = str(Path(__file__).parent / "templates")


def resolve_catalog_path(path: str | os.PathLike[str], config_file: str | None) -> Path:
    """Relative paths are read beside jupyterhub_config.py when it is known, else the cwd."""
    candidate = Path(path).expanduser()
    if candidate.is_absolute():
        return candidate
    if config_file:
        beside = Path(config_file).resolve().parent / candidate
        if beside.exists() or not candidate.exists():
            return beside
    return candidate.resolve()


def _caller_file() -> str | None:
    frame = inspect.currentframe()
    try:
        caller = frame.f_back.f_back if frame and frame.f_back else None
        name = caller.f_globals.get("__file__") if caller else None
        return str(name) if name else None
    finally:
        del frame


def configure(
    c: Any, path: str | os.PathLike[str] = "berth.yaml", *, culler: bool = True
) -> Catalog:
    """Set up a JupyterHub config object ``c`` for the catalog at ``path``; return the catalog.

    ``culler=True`` (the default) registers berth-culler, the hub-managed service that ends idle
    and expired sessions and serves the deadlines and extend API (:mod:`berth.services`).
    """
    catalog_path = resolve_catalog_path(path, _caller_file())
    try:
        catalog = load_catalog(catalog_path)
    except CatalogError as e:
        # A clean message and a non-zero exit instead of a traceback in the middle of the log.
        print(f"[Berth] The hub will not start: {e}", file=sys.stderr)
        raise SystemExit(2) from None

    # One backend: its own spawner. Several: `berth`, which runs each session on its profile's.
    (only,) = catalog.backends if len(catalog.backends) == 1 else (None,)
    c.JupyterHub.spawner_class = SPAWNERS[only] if only else MULTI_SPAWNER
    c.BerthSpawner.catalog_path = str(catalog_path)
    # Each session is a named server; a user may run several at once.
    c.JupyterHub.allow_named_servers = True
    c.JupyterHub.default_url = "/hub/home"
    # Berth's endpoints in the hub (session logs...): JupyterHub 6 still serves extra_handlers,
    # with a deprecation notice in its log.
    from .api import handlers

    ours = handlers()
    if "slurm" in catalog.backends:
        # where a session's job reports its port (authenticated with that session's token)
        from berth.spawners.slurm.api import slurm_handlers

        ours += slurm_handlers()
    existing = list(c.JupyterHub.extra_handlers) if "extra_handlers" in c.JupyterHub else []
    c.JupyterHub.extra_handlers = existing + [h for h in ours if h not in existing]
    templates = list(c.JupyterHub.template_paths) if "template_paths" in c.JupyterHub else []
    if TEMPLATES not in templates:
        c.JupyterHub.template_paths = [*templates, TEMPLATES]
    # The pages' view of the viewer's sessions, as `berth` in the templates.
    from .pages import page_data

    template_vars = c.JupyterHub.template_vars if "template_vars" in c.JupyterHub else {}
    if isinstance(template_vars, dict):
        c.JupyterHub.template_vars = {**template_vars, "berth": page_data}
    if culler:
        from berth.services import register_culler

        register_culler(c, catalog_path)
    return catalog
