"""``berth``: one hub, several backends; each session runs on its profile's backend.

A catalog may put CPU profiles on the hub's own machine and GPU profiles on Slurm, say. JupyterHub
has one spawner class per hub, so this one chooses, per session, the backend's own spawner
(``berth-local``, ``berth-slurm``, ``berth-kubernetes``) and hands every call to it. A backend that
is down (Slurm's controller, say) fails only the sessions on its profiles, with its own message;
the others keep running and starting.

The backend's spawner is made with the very arguments JupyterHub gave this one (same user, same
database row, same config), so it reads its own traitlets config (``c.BerthSlurmSpawner...``)
as it would on its own. Its state is kept inside this spawner's state, with the backend's name,
so a restarted hub finds every session on its own backend again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from jupyterhub.spawner import Spawner
from traitlets import Dict, Unicode
from traitlets.utils.importstring import import_item

from berth.hub_config.catalog import Backend, Profile

from .base import BerthSpawner
from .spec import LaunchSpec

__all__ = ["BerthMultiSpawner"]

#: What JupyterHub sets on a spawner between making it and starting it; passed on before a start.
_HANDED_ON = ("api_token", "admin_access", "handler", "cert_paths", "user_options")
#: What the backend decides when a session is prepared, which the hub reads from this spawner.
_TAKEN_BACK = (
    "start_timeout",
    "http_timeout",
    "default_url",
    "cpu_limit",
    "cpu_guarantee",
    "mem_limit",
    "mem_guarantee",
    "user_options",
)


def _spawner_class(name: str) -> type[Spawner]:
    """An entry point of ``jupyterhub.spawners`` (``berth-slurm``) or an import path."""
    if "." not in name and ":" not in name:
        (found,) = entry_points(group="jupyterhub.spawners", name=name) or (None,)
        if found is None:
            raise ValueError(f"no JupyterHub spawner is installed as {name!r}")
        cls: type[Spawner] = found.load()
        return cls
    loaded: type[Spawner] = import_item(name.replace(":", "."))
    return loaded


class BerthMultiSpawner(BerthSpawner, Spawner):
    """Run each catalog session on its profile's backend."""

    backend_spawners = Dict(
        Unicode(),
        default_value={
            "local": "berth-local",
            "slurm": "berth-slurm",
            "kubernetes": "berth-kubernetes",
        },
        help="""
        The spawner each backend's sessions run with: an entry point of jupyterhub.spawners or
        an import path. Configure each one as usual (c.BerthSlurmSpawner.*, c.KubeSpawner.*...).
        """,
    ).tag(config=True)

    if TYPE_CHECKING:
        user_options: Any
        start_timeout: int

    def __init__(self, **kwargs: Any) -> None:
        # JupyterHub's arguments, for the backend spawners made later
        self._made_with = dict(kwargs)
        super().__init__(**kwargs)
        self._backends: dict[str, BerthSpawner] = {}
        self.backend: str | None = None

    # -- the backend's spawner ----------------------------------------------------------------

    def _spawner_for(self, backend: Backend | str) -> BerthSpawner:
        spawner = self._backends.get(backend)
        if spawner is None:
            name = self.backend_spawners.get(backend)
            if name is None:
                raise ValueError(f"no spawner is configured for the {backend!r} backend")
            made = _spawner_class(name)(**{**self._made_with, "user_options": self.user_options})
            if not isinstance(made, BerthSpawner):
                raise TypeError(f"{name} is not a Berth spawner")
            made.__dict__["_berth_parent"] = self
            spawner = self._backends[backend] = made
        return spawner

    @property
    def active(self) -> BerthSpawner | None:
        """The spawner of this session's backend, once the session has one."""
        return self._backends.get(self.backend) if self.backend else None

    @property
    def backend_spawner(self) -> BerthSpawner:
        return self.active or self

    def profile_unavailable(self, profile: Profile) -> str | None:
        return self._spawner_for(profile.backend).profile_unavailable(profile)

    def prepare_launch(self, user_options: object | None = None) -> LaunchSpec:
        options = self.user_options if user_options is None else user_options
        selection = self.check_user_options(options)
        spawner = self._spawner_for(selection.profile.backend)
        self.backend = selection.profile.backend
        spec = spawner.prepare_launch(options)
        self.selection, self.launch_spec = spawner.selection, spawner.launch_spec
        for name in _TAKEN_BACK:
            setattr(self, name, getattr(spawner, name))
        return spec

    # -- lifecycle, handed on ------------------------------------------------------------------

    async def start(self) -> Any:
        if self.active is None:
            self.prepare_launch()
        spawner = self.active
        assert spawner is not None
        for name in _HANDED_ON:
            setattr(spawner, name, getattr(self, name))
        return await spawner.start()

    async def poll(self) -> int | None:
        spawner = self.active
        if spawner is None:
            return 0
        status: int | None = await spawner.poll()
        return status

    async def stop(self, now: bool = False) -> None:
        spawner = self.active
        if spawner is not None:
            await spawner.stop(now=now)

    async def progress(self) -> AsyncIterator[dict[str, Any]]:
        spawner = self.active
        if spawner is None:
            return
        async for event in spawner.progress():
            yield event

    async def session_logs(self, lines: int) -> list[str] | None:
        spawner = self.active
        return None if spawner is None else await spawner.session_logs(lines)

    # -- state ----------------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        spawner = self.active
        if spawner is not None:
            state["berth_backend"] = self.backend
            state["berth_backend_state"] = spawner.get_state()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        backend = state.get("berth_backend")
        if backend in self.backend_spawners:
            self.backend = backend
            self._spawner_for(backend).load_state(state.get("berth_backend_state") or {})

    def clear_state(self) -> None:
        super().clear_state()
        for spawner in self._backends.values():
            spawner.clear_state()
        self.backend = None
