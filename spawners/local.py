"""The local backend: sessions as processes on the hub's own machine (``berth-local``).

The embedded default for a laptop or a single box. By default every session runs as the hub's own
OS user in a per-user working directory (no isolation between hub users; fit for one person or a
trusted group). Set ``c.BerthLocalSpawner.system_users = True`` to run each session as the
matching system user, as JupyterHub's LocalProcessSpawner does (the hub must run as root).

CPU and memory are passed to the service as ``CPU_LIMIT``/``MEM_LIMIT`` (JupyterHub's convention)
but not enforced: there is no scheduler here. GPUs are handed out exclusively from ``gpu_ids``
through ``CUDA_VISIBLE_DEVICES``; a profile asking for more GPUs than the machine offers is hidden
from the form and refused.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

from jupyterhub.spawner import LocalProcessSpawner, SpawnException
from tornado import web
from tornado.httpclient import AsyncHTTPClient
from traitlets import Bool, List, Unicode

from berth.hub_config.catalog import Profile
from berth.hub_config.units import format_duration

from .base import BerthSpawner
from .spec import LaunchSpec

__all__ = ["BerthLocalSpawner"]


def _resolve_executable(name: str) -> str:
    """A bare command name, or the copy installed beside the hub's Python if PATH lacks it."""
    if os.sep in name or shutil.which(name):
        return name
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def _tail(path: Path, lines: int) -> list[str] | None:
    try:
        with open(path, "rb") as log:
            tail = deque(log, maxlen=lines)
    except FileNotFoundError:
        return None
    return [line.decode("utf-8", "replace").rstrip("\n") for line in tail]


class BerthLocalSpawner(BerthSpawner, LocalProcessSpawner):
    """Run catalog sessions as local processes."""

    system_users = Bool(
        False,
        help="""
        Run each session as the system user with the hub user's name (requires running the
        hub as root and the users to exist), like JupyterHub's LocalProcessSpawner.

        When False (the default), sessions run as the hub's own OS user, each hub user in their
        own working directory (see `work_dir_template`). There is no isolation between hub
        users then: use it on a laptop or a box shared by people who trust each other.
        """,
    ).tag(config=True)

    run_as = Unicode(
        "",
        help="""
        An unprivileged OS account every session runs as when `system_users` is False, e.g.
        "berth". Empty means the hub's own account. A hub running as root must set this (or
        `system_users`): Berth will not start sessions as root, where a terminal or notebook
        would hand every hub user the machine. deploy/local/start-hub creates "berth" for this.
        """,
    ).tag(config=True)

    work_dir_template = Unicode(
        "~/berth-sessions/{username}",
        help="""
        Working directory (and HOME) of a session when `system_users` is False.
        `{username}` is the hub user's name; `~` is the hub's own home directory.
        Created on first use.
        """,
    ).tag(config=True)

    log_dir = Unicode(
        "berth-logs",
        help="""
        Where the hub keeps each session's output (stdout and stderr), as
        `<log_dir>/<user>/<session>.log`, for `berth logs` and the session page. Relative to the
        hub's working directory. Each start of a session replaces its previous log.
        """,
    ).tag(config=True)

    gpu_ids = List(
        Unicode(),
        help="""
        GPU device ids on this machine that sessions may use, e.g. ["0", "1"] (as
        CUDA_VISIBLE_DEVICES counts them). Each GPU goes to one session at a time. Empty (the
        default) means this machine offers no GPUs: GPU profiles are hidden and refused.
        """,
    ).tag(config=True)

    if TYPE_CHECKING:
        popen_kwargs: dict[str, Any]  # a trait of LocalProcessSpawner

    #: device id -> the session holding it ("user/session"), across all spawners of this hub
    _gpus_in_use: ClassVar[dict[str, str]] = {}
    _gpus: list[str]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._gpus = []

    @property
    def _holder(self) -> str:
        return f"{self.user.name}/{self.name}"

    def profile_unavailable(self, profile: Profile) -> str | None:
        if profile.gpus > len(self.gpu_ids):
            offered = len(self.gpu_ids)
            return (
                f"it needs {profile.gpus} GPU{'s' * (profile.gpus != 1)} and this machine offers"
                f" {offered} to sessions (an admin sets c.BerthLocalSpawner.gpu_ids)"
            )
        return None

    def _take_gpus(self, count: int) -> list[str]:
        free = [gpu for gpu in self.gpu_ids if gpu not in self._gpus_in_use]
        if len(free) < count:
            busy = len(self.gpu_ids) - len(free)
            raise web.HTTPError(
                503,
                f"{busy} of this machine's {len(self.gpu_ids)} GPUs are in use by other sessions;"
                f" this profile needs {count}. Try again later or choose a smaller profile.",
            )
        taken = free[:count]
        for gpu in taken:
            self._gpus_in_use[gpu] = self._holder
        return taken

    def _release_gpus(self) -> None:
        for gpu in self._gpus:
            if self._gpus_in_use.get(gpu) == self._holder:
                del self._gpus_in_use[gpu]
        self._gpus = []

    # -- process ------------------------------------------------------------------------------

    @property
    def work_dir(self) -> str:
        return os.path.expanduser(self.work_dir_template.format(username=self.user.name))

    def _session_account(self) -> pwd.struct_passwd | None:
        """The account sessions run as when not `system_users`; None for the hub's own."""
        if self.run_as:
            try:
                return pwd.getpwnam(self.run_as)
            except KeyError:
                raise web.HTTPError(
                    500,
                    f"c.BerthLocalSpawner.run_as names {self.run_as!r}, which is not an OS user",
                ) from None
        if os.geteuid() == 0:
            raise web.HTTPError(
                500,
                "The hub runs as root, so sessions would too. An admin must set"
                " c.BerthLocalSpawner.run_as to an unprivileged account (or system_users = True).",
            )
        return None

    def _make_work_dir(self, account: pwd.struct_passwd | None) -> None:
        work_dir = Path(self.work_dir)
        work_dir.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        work_dir.mkdir(mode=0o700, exist_ok=True)
        if account is None:
            return
        if work_dir.stat().st_uid != account.pw_uid:
            os.chown(work_dir, account.pw_uid, account.pw_gid)
        for parent in work_dir.parents:
            info = parent.stat()
            if not (info.st_mode & 0o001 or info.st_uid == account.pw_uid):
                raise web.HTTPError(
                    500,
                    f"Sessions run as {account.pw_name!r}, which cannot enter {parent} (mode"
                    f" {info.st_mode & 0o777:o}). An admin must make it traversable (chmod o+x)"
                    " or change c.BerthLocalSpawner.work_dir_template.",
                )

    def prepare_launch(self, user_options: object | None = None) -> LaunchSpec:
        spec = super().prepare_launch(user_options)
        # start() itself waits until the service answers (or its process ends), for as long as
        # the service type allows, so the hub's start timeout must cover that wait.
        self.start_timeout = int(spec.ready_timeout.total_seconds()) + 60
        return spec

    async def start(self) -> Any:
        spec = self.launch_spec or self.prepare_launch()
        self.progress_log.begin()
        try:
            address = await self._start_process(spec)
            self.persist_state()  # a hub killed from here on finds the process again
            self.report(
                f"{spec.service.display_name} started (process {self.pid}); waiting for it to"
                " answer",
                50,
            )
            await self._wait_until_answering(address, spec)
            self.report(f"{spec.service.display_name} answers", 90)
            return address
        except BaseException:
            if self.proc is not None and self.proc.poll() is None:
                await super().stop(now=True)
            self._release_gpus()
            raise
        finally:
            self.progress_log.end()

    async def _start_process(self, spec: LaunchSpec) -> Any:
        if not self.system_users:
            self._make_work_dir(self._session_account())
        self._gpus = self._take_gpus(spec.resources.gpus) if spec.resources.gpus else []
        self.cmd = [_resolve_executable(spec.argv[0]), *spec.argv[1:]]
        admin_kwargs: dict[str, Any] = dict(self.popen_kwargs)
        output = self._open_log()
        self.popen_kwargs = {**admin_kwargs, "stdout": output, "stderr": subprocess.STDOUT}
        try:
            return await super().start()
        finally:
            output.close()  # the session's process holds its own copy
            self.popen_kwargs = admin_kwargs

    async def _wait_until_answering(self, address: Any, spec: LaunchSpec) -> None:
        """Until the session answers HTTP (below 500, as the hub counts it), or its process
        ends: then the user sees why, from its own last lines, at once."""
        ip, port = address
        url = f"http://{ip}:{port}{self.server.base_url if self.server else '/'}"
        client = AsyncHTTPClient()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + spec.ready_timeout.total_seconds()
        while True:
            code = self.proc.poll() if self.proc is not None else None
            if code is not None:
                lines = await self.session_logs(15) or []
                last = "\n".join(lines) if lines else "(it printed nothing)"
                raise SpawnException(
                    f"{spec.service.display_name} stopped (exit code {code}) before it"
                    f" answered. Its last lines:\n{last}",
                    reason="exited",
                    status_code=500,
                )
            try:
                response = await client.fetch(
                    url, raise_error=False, follow_redirects=False, request_timeout=5
                )
            except OSError:
                response = None
            if response is not None and response.code < 500:
                return
            if loop.time() > deadline:
                raise SpawnException(
                    f"{spec.service.display_name} did not answer within"
                    f" {format_duration(spec.ready_timeout)}; `berth logs` shows its output.",
                    reason="timeout",
                    status_code=500,
                )
            await asyncio.sleep(0.1)

    def _open_log(self) -> BinaryIO:
        self.log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return open(self.log_path, "wb")

    @property
    def log_path(self) -> Path:
        user: str = self.user.name
        return Path(self.log_dir).absolute() / user / f"{self.name or 'default'}.log"

    async def session_logs(self, lines: int) -> list[str] | None:
        return await asyncio.to_thread(_tail, self.log_path, lines)

    def get_args(self) -> list[str]:
        # Jupyter's own arguments only make sense for jupyterhub-singleuser; berth-gate takes
        # the service's command after "--" and nothing may be appended to it.
        if self.launch_spec is not None and self.launch_spec.kind == "gated":
            return []
        args: list[str] = super().get_args()
        return args

    def get_env(self) -> dict[str, str]:
        env = super().get_env()
        if self._gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self._gpus)
        elif self.launch_spec is not None:
            # no GPU for this session, even if the hub itself can see some
            env["CUDA_VISIBLE_DEVICES"] = ""
        return env

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        if self.system_users:
            result: dict[str, str] = super().user_env(env)
            return result
        env["USER"] = self.user.name
        env["HOME"] = self.work_dir
        env["SHELL"] = "/bin/bash"
        return env

    def make_preexec_fn(self, name: str) -> Callable[[], None]:
        if self.system_users:
            fn: Callable[[], None] = super().make_preexec_fn(name)
            return fn
        work_dir = self.work_dir
        account = self._session_account()

        def preexec() -> None:
            if account is not None:
                os.setgroups([])
                os.setgid(account.pw_gid)
                os.setuid(account.pw_uid)
            os.chdir(work_dir)

        return preexec

    async def stop(self, now: bool = False) -> None:
        try:
            await super().stop(now=now)
        finally:
            self._release_gpus()

    # -- state across hub restarts ------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        if self._gpus:
            state["gpus"] = list(self._gpus)
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        gpus = [str(gpu) for gpu in state.get("gpus", []) if str(gpu) in self.gpu_ids]
        self._gpus = gpus
        for gpu in gpus:
            self._gpus_in_use[gpu] = self._holder

    def clear_state(self) -> None:
        super().clear_state()
        self._release_gpus()
