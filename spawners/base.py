"""What every Berth spawner shares, whatever the backend.

:class:`BerthSpawner` is a mixin placed before the backend's JupyterHub spawner::

    class BerthLocalSpawner(BerthSpawner, LocalProcessSpawner): ...

It serves the spawn form, turns form fields and query strings into ``user_options``, checks
``user_options`` against the catalog (HTTP 400 before anything starts), and builds the
:class:`~berth.spawners.spec.LaunchSpec` the backend renders. A backend must:

- call :meth:`BerthSpawner.prepare_launch` at the start of ``start()`` and run ``launch_spec.argv``
  with ``get_env()`` (which already includes the spec's environment);
- optionally override :meth:`BerthSpawner.profile_unavailable` to say which profiles it cannot run
  (they are hidden from the form and refused with a reason).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.orm import object_session
from traitlets import Dict, Unicode, default

from berth.hub_config.catalog import Catalog, Profile
from berth.hub_config.loader import CatalogError, catalog_from_dict, load_catalog
from berth.hub_config.units import format_duration, format_memory

from .options import (
    OptionsError,
    Selection,
    check_session_name,
    describe_limits,
    options_from_form,
    validate_user_options,
)
from .progress import ProgressLog
from .schema import service_options_schema
from .spec import LaunchSpec, build_launch_spec

if TYPE_CHECKING:
    # A mixin: at run time it sits before a real Spawner in the MRO.
    from jupyterhub.spawner import Spawner as _Base
else:
    from traitlets.config import LoggingConfigurable as _Base

__all__ = ["BerthSpawner", "CatalogCache"]


@dataclass
class _CacheEntry:
    mtime: float
    catalog: Catalog


class CatalogCache:
    """One parsed catalog per file, re-read when the file changes.

    A running hub keeps serving the last good catalog if an admin saves a broken one; the error
    is logged each time the file changes, and the hub refuses to *start* on it.
    """

    _entries: ClassVar[dict[str, _CacheEntry]] = {}

    @classmethod
    def get(cls, path: str, log: Any) -> Catalog:
        path = os.path.abspath(path)
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            entry = cls._entries.get(path)
            if entry is not None:
                log.error("Catalog %s is gone; still serving its last good version", path)
                return entry.catalog
            raise
        entry = cls._entries.get(path)
        if entry is not None and entry.mtime == mtime:
            return entry.catalog
        try:
            catalog = load_catalog(path)
        except CatalogError as e:
            if entry is None:
                raise
            log.error("%s\nStill serving the last good catalog.", e)
            entry.mtime = mtime
            return entry.catalog
        cls._entries[path] = _CacheEntry(mtime, catalog)
        return catalog


_templates = Environment(
    loader=PackageLoader("berth.hub_config", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


class BerthSpawner(_Base):
    """The catalog-driven part of every Berth spawner (configure as ``c.BerthSpawner``)."""

    catalog_path = Unicode(
        "berth.yaml",
        help="""
        Path of the catalog (berth.yaml) listing service types, profiles and policies.

        Relative paths are relative to the hub's working directory. The file is re-read when it
        changes; if a running hub finds it broken, it logs why and keeps the last good version.
        Ignored when `catalog` is set.
        """,
    ).tag(config=True)

    catalog = Dict(
        help="""
        The catalog itself, as a dict with the same structure as berth.yaml, for admins who
        prefer to keep everything in jupyterhub_config.py. When set, `catalog_path` is ignored.
        """,
    ).tag(config=True)

    if TYPE_CHECKING:
        user_options: Any  # a trait of Spawner

    #: Set by :meth:`prepare_launch`.
    selection: Selection | None = None
    launch_spec: LaunchSpec | None = None

    _inline_catalog: Catalog | None = None
    #: The last form a user submitted that was refused, to fill the form again (by user name).
    _refused_forms: ClassVar[dict[str, dict[str, Any]]] = {}

    # -- the catalog --------------------------------------------------------------------------

    @property
    def berth_catalog(self) -> Catalog:
        if self.catalog:
            if self._inline_catalog is None:
                self._inline_catalog = catalog_from_dict(self.catalog)
            return self._inline_catalog
        return CatalogCache.get(self.catalog_path, self.log)

    def user_groups(self) -> list[str]:
        return sorted(group.name for group in self.user.groups)

    @property
    def progress_log(self) -> ProgressLog:
        """This session's start, step by step; backends emit, :meth:`progress` follows."""
        log = self.__dict__.get("_berth_progress")
        if log is None:
            log = self.__dict__["_berth_progress"] = ProgressLog()
        return log

    def report(self, message: str, progress: int) -> None:
        """Tell the user (progress API, pending page, ``berth launch``) and the log."""
        self.progress_log.emit(message, progress)
        self.log.info("%s: %s", self._log_name, message)

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        async for event in self.progress_log.follow():
            yield event

    def persist_state(self) -> None:
        """Write the spawner's state to the hub's database now, mid-start: a hub killed
        before start() returns finds the session (job, process, pod) again on restart."""
        if self.orm_spawner is None:
            return
        # a backend's spawner inside `berth` (several backends) saves its parent's state
        owner = self.__dict__.get("_berth_parent", self)
        self.orm_spawner.state = owner.get_state()
        session = object_session(self.orm_spawner)
        if session is not None:
            session.commit()

    @property
    def backend_spawner(self) -> BerthSpawner:
        """The spawner that runs the session (itself, except inside `berth`)."""
        return self

    def profile_unavailable(self, profile: Profile) -> str | None:
        """Why this backend cannot run ``profile`` now, or None. Backends override."""
        return None

    async def session_logs(self, lines: int) -> list[str] | None:
        """The last ``lines`` lines the session itself printed (process, job or pod output),
        or None if this backend keeps none. Backends override; ``berth logs`` reads it."""
        return None

    # -- choosing -----------------------------------------------------------------------------

    def check_user_options(self, user_options: object) -> Selection:
        """Validate against the catalog, the user's groups and what this backend can run."""
        check_session_name(self.name)
        selection = validate_user_options(self.berth_catalog, user_options, self.user_groups())
        reason = self.profile_unavailable(selection.profile)
        if reason:
            raise OptionsError(f"profile '{selection.profile.name}' cannot run here: {reason}")
        return selection

    def options_from_form(self, formdata: dict[str, list[Any]]) -> dict[str, Any]:
        try:
            options = options_from_form(self.berth_catalog, formdata)
            # Refuse here, so the page shows the reason beside the form the user filled in.
            selection = self.check_user_options(options)
        except OptionsError:
            fields = {k: v[-1] for k, v in formdata.items() if v and isinstance(v[-1], str)}
            # JupyterHub redraws the form from the user's default spawner: remember the session.
            self._refused_forms[self.user.name] = {"session": self.name, "fields": fields}
            raise
        self._refused_forms.pop(self.user.name, None)
        return selection.to_user_options()

    def options_from_query(self, query_data: dict[str, list[str]]) -> dict[str, Any]:
        options = options_from_form(self.berth_catalog, query_data)
        return self.check_user_options(options).to_user_options()

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Any:
        def apply(spawner: BerthSpawner, user_options: dict[str, Any]) -> None:
            spawner.prepare_launch(user_options)

        return apply

    def prepare_launch(self, user_options: object | None = None) -> LaunchSpec:
        """Check ``user_options`` and build the launch spec; set the hub's matching traits."""
        options: object = self.user_options if user_options is None else user_options
        selection = self.check_user_options(options)
        spec = build_launch_spec(selection, self.user.name, self.name)
        self.selection, self.launch_spec = selection, spec
        # The canonical form, so the hub, the culler and the CLI read typed values with every
        # default filled in (the hub's API shows it at once; start() stores it).
        self.user_options = selection.to_user_options()
        self.http_timeout = int(spec.ready_timeout.total_seconds())
        self.default_url = spec.url_path if spec.url_path != "/" else ""
        self.cpu_limit = float(spec.resources.cpus)
        self.cpu_guarantee = float(spec.resources.cpus)
        self.mem_limit = spec.resources.memory
        self.mem_guarantee = spec.resources.memory
        self.log.info(
            "%s: %s on %s for %s (%s)",
            self._log_name,
            selection.service.name,
            selection.profile.name,
            format_duration(selection.duration),
            describe_limits(selection.policy),
        )
        return spec

    def get_state(self) -> dict[str, Any]:
        """The backend's state; and the canonical options go to the database with it.

        The hub stores a spawner's state, and commits, right after start() returns: saving the
        checked options then costs no database commit of their own (SQLite syncs the disk on
        every commit), where saving them when they are checked would add one to every spawn.
        """
        state: dict[str, Any] = super().get_state()
        if (
            self.selection is not None
            and self.orm_spawner is not None
            and self.orm_spawner.user_options != self.user_options
        ):
            self.orm_spawner.user_options = self.user_options
        return state

    def get_env(self) -> dict[str, str]:
        env: dict[str, str] = super().get_env()
        if self.launch_spec is not None:
            env.update(self.launch_spec.environment)
        return env

    # -- the form -----------------------------------------------------------------------------

    @default("options_form")
    def _default_options_form(self) -> Any:
        return lambda spawner: spawner.render_options_form()

    def render_options_form(self) -> str:
        catalog = self.berth_catalog
        groups = self.user_groups()
        refused = self._refused_forms.pop(self.user.name, None)
        previous: dict[str, str] = refused["fields"] if refused else {}
        session = refused["session"] if refused else self.name
        chosen: dict[str, Any] = {}
        if not refused and isinstance(self.user_options, dict):
            chosen = self.user_options
        services = []
        for service in catalog.services_for(groups):
            profiles = []
            for profile in catalog.profiles_for(service, groups):
                unavailable = self.profile_unavailable(profile)
                if unavailable:
                    continue
                policy = catalog.policy_for(service, profile, groups)
                profiles.append(
                    {
                        "profile": profile,
                        "memory": format_memory(profile.memory),
                        "max_hours": f"{policy.max_duration.total_seconds() / 3600:g}",
                        "default_hours": f"{policy.default_duration.total_seconds() / 3600:g}",
                        "limits": describe_limits(policy),
                    }
                )
            if profiles:
                services.append({"service": service, "profiles": profiles})
        # The same rules as check_user_options, for the page's inline messages.
        cannot_run = {p.name for p in catalog.profiles.values() if self.profile_unavailable(p)}
        schemas = {
            service.name: service_options_schema(catalog, service, groups, cannot_run)
            for service in catalog.services_for(groups)
        }
        return _templates.get_template("spawn_form.html").render(
            services=services,
            chosen=chosen,
            previous=previous,
            session=session,
            schemas=schemas,
        )
