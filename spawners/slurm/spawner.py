"""``berth-slurm``: Berth sessions as Slurm jobs.

:class:`BerthSlurmSpawner` extends batchspawner's SlurmSpawner and replaces the parts that paste
text into shells and poll once per session:

- the job is rendered from the launch spec by :func:`~berth.spawners.slurm.render.render_batch_job`
  (pure, every value checked and quoted) and submitted with sbatch, run as the user, no shell;
- one :class:`~berth.spawners.slurm.queue.SlurmQueue` per hub lists every Berth job with one
  squeue call per interval; start, poll and stop all read that listing;
- the job reports its port to :mod:`berth.spawners.slurm.api` with the session's own token;
- the state keeps the job id, the deterministic job name and the token's digest, so a restarted
  hub finds queued and running sessions again (even a job submitted just before it was killed).

batchspawner's templated settings (``batch_script``, ``batch_*_cmd``, ``exec_prefix``, ``req_*``)
are not used: the catalog says what a session gets, and the settings below say how jobs run.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import pwd
import time
from datetime import datetime
from typing import Any

from traitlets import Dict, Enum, Float, Integer, List, Unicode, default

from berth.spawners.base import BerthSpawner
from berth.spawners.spec import LaunchSpec

from ._batchspawner import SlurmSpawner, batchspawner_api_loaded
from .api import PortRefused
from .commands import RunAs, RunAsMode, SlurmError, SlurmRefused, SlurmUnavailable, run_command
from .names import JOB_NAME_PREFIX_PATTERN, session_job_name
from .queue import Listing, QueueSettings, SlurmQueue
from .reasons import queued_message
from .render import JobSettings, RenderError, render_batch_job
from .status import JobInfo, Phase

__all__ = ["BerthSlurmSpawner", "SlurmSpawnError"]

_LOG_LINES = 20


class SlurmSpawnError(Exception):
    """A session that could not start; the message is shown to the user as it is.
    ``maybe_submitted``: sbatch did not answer, so a job may exist (found later by its name)."""

    def __init__(self, message: str, *, maybe_submitted: bool = False) -> None:
        super().__init__(message)
        self.jupyterhub_message = message
        self.maybe_submitted = maybe_submitted


def _read_tail(path: str, size: int = 16384) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - size))
        return f.read().decode(errors="replace")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _unavailable(error: SlurmError | None) -> str:
    return (
        f"Cannot start the session now: {error}. Running sessions are kept and the hub keeps"
        " serving; try again later, or tell the cluster's administrators if it goes on."
    )


def _exit_status(job: JobInfo) -> int:
    code = job.exit_code.split(":", 1)[0]
    if code.isdigit() and int(code):
        return int(code)
    return 0 if job.state.startswith("COMPLETED") else 1


class BerthSlurmSpawner(BerthSpawner, SlurmSpawner):
    """Run each Berth session as a Slurm job (configure as ``c.BerthSlurmSpawner``)."""

    # -- configuration ----------------------------------------------------------------------------
    slurm_bin_dir = Unicode(
        "",
        help="""
        Directory holding Slurm's commands (sbatch, squeue, scancel, sacct, scontrol) on the hub
        machine. Empty: find them on the hub's PATH.
        """,
    ).tag(config=True)

    run_as = Enum(
        ["auto", "setuid", "sudo", "none"],
        "auto",
        help="""
        How sbatch and scancel run as the session's user (the system user named like the hub
        user): "setuid" (the hub runs as root), "sudo" (`sudo -n -u USER`, for a hub running as a
        service account; see deploy/slurm/README.md for the sudoers rule), or "none" (the hub
        runs as the jobs' user). "auto" is "setuid" for a root hub and "sudo" otherwise.
        squeue, sacct and scontrol always run as the hub's own user.
        """,
    ).tag(config=True)

    job_name_prefix = Unicode(
        "berth",
        help="""
        First part of every job name (`<prefix>.<user>.<session>`). Hubs sharing a cluster need
        different prefixes: a hub lists, adopts and cancels only jobs with its own prefix.
        Letters, digits and '-', up to 32 characters.
        """,
    ).tag(config=True)

    job_log_dir = Unicode(
        "{home}/.berth/slurm",
        help="""
        Directory of the per-session job logs (`<session>-<job id>.log`), on the filesystem the
        hub and the compute nodes share. `{home}` is the user's home directory and `{user}` the
        user name. The hub creates it as the user before submitting; it reads a job's last lines
        from there when the job fails before its service is up.
        """,
    ).tag(config=True)

    job_workdir = Unicode(
        "{home}",
        help="Working directory of the job (`{home}` and `{user}` as in job_log_dir).",
    ).tag(config=True)

    job_setup = List(
        Unicode(),
        help="""
        Lines run at the top of every batch script, before the service's own `slurm.setup`
        lines from the catalog, e.g. `["module load python/3.11",
        "source /opt/berth/venv/bin/activate"]`. Trusted admin text: written as is.
        """,
    ).tag(config=True)

    job_extra_options = List(
        Unicode(),
        help="""
        More sbatch options for every job, each as `--name=value` (e.g. `--mail-type=NONE`).
        Options Berth sets from the catalog (partition, account, qos, gres, time, mem...)
        are refused here: set them on the profiles.
        """,
    ).tag(config=True)

    job_launcher = List(
        Unicode(),
        ["berth-slurm-job"],
        help="""
        The command that starts a session on the compute node: it reports the port to the hub,
        then runs the session. Must be on the job's PATH (Berth installed where jobs run), or
        give a full path, e.g. `["/opt/berth/venv/bin/berth-slurm-job"]`.
        """,
    ).tag(config=True)

    job_bind_ip = Unicode(
        "0.0.0.0",  # noqa: S104
        help="""
        Address sessions listen on, on the compute node. The default listens on every address
        (the hub's proxy must reach the node); use the node's cluster-network address where
        nodes have several.
        """,
    ).tag(config=True)

    node_addresses = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        help="""
        Where the hub and its proxy reach a compute node, by Slurm node name, e.g.
        `{"gpu-node-01": "10.1.0.11"}`. Nodes not listed are reached by their node name.
        """,
    ).tag(config=True)

    queue_interval = Float(
        30.0,
        help="""
        Seconds between squeue listings while every session is steady (queued or running, no
        one waiting). One listing serves all sessions of the hub.
        """,
    ).tag(config=True)

    queue_fast_interval = Float(
        1.0,
        help="""
        Seconds between squeue listings while any session waits for its job to change (starting,
        stopping). Still one listing for all sessions.
        """,
    ).tag(config=True)

    queue_max_backoff = Float(
        60.0,
        help="""
        Longest wait, in seconds, between retries while Slurm does not answer (command missing,
        time-out, controller down). Sessions are kept meanwhile.
        """,
    ).tag(config=True)

    command_timeout = Float(
        30.0, help="Seconds a Slurm command may take before it counts as not answering."
    ).tag(config=True)

    stop_timeout = Integer(
        60,
        help="""
        Seconds stop() waits for Slurm to confirm that a cancelled job is gone. After that the
        hub logs a warning and keeps cancelling in the background.
        """,
    ).tag(config=True)

    @default("start_timeout")
    def _default_start_timeout(self) -> int:
        # A job may queue for a long time; the user sees why on the pending page.
        return 3600

    # -- runtime state ----------------------------------------------------------------------------
    job_name: str = ""
    job_port: int = 0
    job_node: str = ""
    job_log: str = ""
    token_digest: str = ""
    _needs_resume = False
    _loaded_at = 0.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._port_received = asyncio.Event()
        if batchspawner_api_loaded():
            self.log.error(
                "batchspawner's /hub/api/batchspawner handler is loaded (something imported"
                " batchspawner before Berth); it lets a job set any spawner attribute."
            )

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def queue(self) -> SlurmQueue:
        settings = QueueSettings(
            squeue=self._command("squeue"),
            sacct=self._command("sacct"),
            scontrol=self._command("scontrol"),
            interval=self.queue_interval,
            fast_interval=self.queue_fast_interval,
            max_backoff=self.queue_max_backoff,
            command_timeout=self.command_timeout,
        )
        return SlurmQueue.shared(settings, self.log)

    def _command(self, name: str) -> str:
        return os.path.join(self.slurm_bin_dir, name) if self.slurm_bin_dir else name

    @property
    def system_user(self) -> str:
        return str(self.user.name)

    def _run_as(self) -> RunAs:
        modes: dict[str, RunAsMode] = {"setuid": "setuid", "sudo": "sudo", "none": "none"}
        default: RunAsMode = "setuid" if os.geteuid() == 0 else "sudo"
        return RunAs(modes.get(self.run_as, default), self.system_user)

    def _home(self) -> str:
        try:
            return pwd.getpwnam(self.system_user).pw_dir
        except KeyError:
            raise SlurmSpawnError(
                f"there is no system user {self.system_user!r} on the hub machine; Slurm jobs"
                " run as the system user of the same name"
            ) from None

    def _expand(self, template: str) -> str:
        path = template.format(home=self._home(), user=self.system_user)
        return os.path.normpath(path)

    def _session_label(self) -> str:
        return self.name or "default"

    def _job_settings(self) -> JobSettings:
        if not JOB_NAME_PREFIX_PATTERN.match(self.job_name_prefix):
            raise SlurmSpawnError(
                f"BerthSlurmSpawner.job_name_prefix {self.job_name_prefix!r} is not valid;"
                " use letters, digits and '-'"
            )
        log_dir = self._expand(self.job_log_dir).replace("%", "%%")
        return JobSettings(
            job_name=session_job_name(self.job_name_prefix, self.user.name, self.name),
            output=f"{log_dir}/{self._session_label()}-%j.log",
            workdir=self._expand(self.job_workdir),
            launcher=tuple(self.job_launcher),
            bind_ip=self.job_bind_ip,
            setup=tuple(self.job_setup),
            extra_options=tuple(self.job_extra_options),
        )

    # -- state --------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        state: dict[str, Any] = super().get_state()
        state.pop("job_status", None)
        for key, value in (
            ("job_name", self.job_name),
            ("port", self.job_port),
            ("node", self.job_node),
            ("log", self.job_log),
            ("token_sha256", self.token_digest),
        ):
            if value:
                state[key] = value
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.job_status = ""
        self.job_name = str(state.get("job_name", ""))
        port = state.get("port", 0)
        self.job_port = port if isinstance(port, int) else 0
        self.job_node = str(state.get("node", ""))
        self.job_log = str(state.get("log", ""))
        self.token_digest = str(state.get("token_sha256", ""))
        self._needs_resume = bool(self.job_name)
        self._loaded_at = time.monotonic()
        if self.job_name:
            self.queue.watch(self.job_name)

    def clear_state(self) -> None:
        super().clear_state()
        self._forget_job()

    def _forget_job(self) -> None:
        if self.job_name:
            self.queue.unwatch(self.job_name)
        self.job_id = ""
        self.job_status = ""
        self.job_name = ""
        self.job_port = 0
        self.job_node = ""
        self.job_log = ""
        self.token_digest = ""
        self._needs_resume = False
        self._port_received.clear()

    # -- the port report (see api.py) ---------------------------------------------------------
    def check_report_token(self, token: str) -> bool:
        return bool(self.token_digest) and hmac.compare_digest(_digest(token), self.token_digest)

    def receive_port(self, port: int) -> None:
        if not self.job_name:
            raise PortRefused(409, "this session has no job waiting for a port")
        if self.job_port:
            if self.job_port == port:
                return
            raise PortRefused(409, f"this session's job already reported port {self.job_port}")
        self.job_port = port
        self.persist_state()
        self._port_received.set()
        self.queue.wake()

    # -- start --------------------------------------------------------------------------------
    async def start(self) -> tuple[str, int]:
        self.progress_log.begin()
        try:
            spec = self.prepare_launch()
            settings = self._job_settings()
            job = render_batch_job(spec, settings)
            self._forget_job()  # not clear_state(): that also drops the hub's API token
            self.job_name = settings.job_name
            self.token_digest = _digest(self.api_token)
            self.queue.watch(self.job_name)
            self.persist_state()  # before sbatch: a restarted hub can find and verify the job
            with self.queue.urgent():
                try:
                    await self._cancel_leftovers()
                    await self._make_log_dir(settings)
                    self.job_id = await self._submit(spec, job.argv, job.script)
                except SlurmSpawnError as e:
                    if not e.maybe_submitted:
                        self._forget_job()  # nothing to find or cancel later
                        self.persist_state()
                    raise
                self.job_log = settings.output.replace("%j", self.job_id).replace("%%", "%")
                self.persist_state()
                self.report(
                    f"Submitted Slurm job {self.job_id} ({spec.service.display_name} on"
                    f" {spec.profile.display_name})",
                    10,
                )
                return await self._wait_until_up(spec)
        except RenderError as e:
            raise SlurmSpawnError(f"This session cannot be submitted to Slurm: {e}") from None
        finally:
            self.progress_log.end()

    async def _cancel_leftovers(self) -> None:
        """Cancel live jobs of this session the hub lost track of (no duplicates, no orphans)."""
        listing = await self.queue.fresh_listing(time.monotonic())
        if listing is None:
            raise SlurmSpawnError(_unavailable(self.queue.error))
        for job in listing.named(self.job_name):
            if job.user == self.system_user and job.phase in (Phase.QUEUED, Phase.RUNNING):
                self.log.warning(
                    "Cancelling leftover Slurm job %s of %s", job.job_id, self._log_name
                )
                await self._scancel(job.job_id)

    async def _make_log_dir(self, settings: JobSettings) -> None:
        log_dir = os.path.dirname(settings.output).replace("%%", "%")
        try:
            await run_command(
                ["mkdir", "-p", "-m", "0700", log_dir],
                limit=self.command_timeout,
                run_as=self._run_as(),
            )
        except SlurmError as e:
            raise SlurmSpawnError(f"Cannot create the job log directory {log_dir}: {e}") from None

    def _sbatch_env(self) -> dict[str, str]:
        env = self.get_env()
        env.setdefault("PATH", os.environ.get("PATH", os.defpath))
        env["HOME"] = self._home()
        env["USER"] = env["LOGNAME"] = self.system_user
        return env

    async def _submit(self, spec: LaunchSpec, argv: tuple[str, ...], script: str) -> str:
        self.log.debug("Submitting for %s: sbatch %s\n%s", self._log_name, " ".join(argv), script)
        try:
            out = await run_command(
                [self._command("sbatch"), *argv],
                input=script,
                env=self._sbatch_env(),
                limit=self.command_timeout,
                run_as=self._run_as(),
            )
        except SlurmUnavailable as e:
            raise SlurmSpawnError(_unavailable(e), maybe_submitted=True) from None
        except SlurmRefused as e:
            raise SlurmSpawnError(f"Slurm refused the job: {e}") from None
        job_id = out.strip().splitlines()[-1].split(";")[0] if out.strip() else ""
        if not job_id.isdigit():
            raise SlurmSpawnError(f"sbatch did not print a job id (it printed {out.strip()!r})")
        return job_id

    def _address(self, node: str) -> str:
        return str(self.node_addresses.get(node, node))

    async def _job(self) -> tuple[JobInfo | None, Listing | None]:
        """This job in the latest listing, or its confirmed end; (None, None) if unknown now."""
        listing = self.queue.listing
        if listing is None:
            return None, None
        job = listing.jobs.get(self.job_id)
        if job is None:
            job = self.queue.ended(self.job_id)
        if job is None and listing.started > self._submitted_at:
            job = await self.queue.confirm_ended(self.job_id)
        return job, listing

    _submitted_at = 0.0

    async def _wait_until_up(self, spec: LaunchSpec | None, probe: bool = True) -> tuple[str, int]:
        """Follow the job until it runs and has reported its port, then (``probe``) until the
        port answers; raise SlurmSpawnError with the job's last lines if it ends first."""
        self._submitted_at = time.monotonic() if spec is not None else self._loaded_at
        said = ""
        queue = self.queue
        while True:
            job, _ = await self._job()
            if job is not None and job.phase in (Phase.ENDED, Phase.ENDING):
                raise SlurmSpawnError(await self._failure_message(job))
            if queue.error is not None:
                message = f"{queue.error}"
                progress = 15
            elif job is None:
                message, progress = f"Waiting for Slurm to list job {self.job_id}", 15
            elif job.phase is Phase.QUEUED:
                partition = spec.profile.slurm.partition if spec is not None else None
                message = queued_message(
                    self.job_id, partition, job.reason, job.start, datetime.now()
                )
                progress = 30
            elif not self.job_port:
                message = f"Job {self.job_id} is running on {job.host}; starting the session"
                progress = 60
            else:
                self.job_node = job.host
                self.persist_state()
                break
            if message != said:
                self.report(message, progress)
                said = message
            waiters = [
                asyncio.ensure_future(self._port_received.wait()),
                asyncio.ensure_future(queue.next_round()),
            ]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
        address = self._address(self.job_node)
        if not probe:
            return address, self.job_port
        self.report(
            f"Job {self.job_id} listens on {self.job_node}:{self.job_port}; waiting for"
            " it to answer",
            80,
        )
        while not await self._answers(address, self.job_port):
            job, _ = await self._job()
            if job is not None and job.phase in (Phase.ENDED, Phase.ENDING):
                raise SlurmSpawnError(await self._failure_message(job))
            await asyncio.sleep(0.2)
        return address, self.job_port

    @staticmethod
    async def _answers(address: str, port: int) -> bool:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), 2)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    async def _failure_message(self, job: JobInfo) -> str:
        lines = await self._log_tail()
        state = job.state.split(" ", 1)[0]
        text = f"Slurm job {self.job_id} ended ({state}) before the session was up."
        if lines:
            text += " Its last lines:\n" + "\n".join(lines)
        elif self.job_log:
            text += f" Its log, {self.job_log}, is empty."
        return text

    async def session_logs(self, lines: int) -> list[str] | None:
        """The last ``lines`` lines of the job's log (its own output), for ``berth logs``."""
        if not self.job_log:
            return None
        return await self._log_tail(lines)

    async def _log_tail(self, lines: int = _LOG_LINES) -> list[str]:
        if not self.job_log:
            return []
        try:
            text = await asyncio.to_thread(_read_tail, self.job_log, 200 * lines + 4096)
        except PermissionError:
            try:
                text = await run_command(
                    ["tail", "-n", str(lines), self.job_log],
                    limit=self.command_timeout,
                    run_as=self._run_as(),
                )
            except SlurmError:
                return []
        except OSError:
            return []
        return [line for line in text.splitlines() if line.strip()][-lines:]

    # -- poll ---------------------------------------------------------------------------------
    async def poll(self) -> int | None:
        if not self.job_name:
            return 0
        if self.progress_log.active:
            return None
        listing = self.queue.listing
        if listing is None or listing.started < self._loaded_at:
            listing = await self.queue.fresh_listing(self._loaded_at)
            if listing is None:
                return None  # Slurm is not answering: never drop a session on that
        if not self.job_id and not await self._adopt(listing):
            return 0
        if self._needs_resume:
            # the first poll after the hub (re)loaded this session: JupyterHub's start-up check
            self._needs_resume = False
            return await self._resume()
        self._submitted_at = self._loaded_at
        job, _ = await self._job()
        if job is None or job.phase in (Phase.QUEUED, Phase.RUNNING):
            return None
        return _exit_status(job)

    async def _adopt(self, listing: Listing) -> bool:
        """Find the job a killed hub submitted but did not record, by its deterministic name."""
        for job in listing.named(self.job_name):
            if job.user == self.system_user and job.phase in (Phase.QUEUED, Phase.RUNNING):
                self.log.info("%s: found its Slurm job %s by name", self._log_name, job.job_id)
                self.job_id = job.job_id
                log_dir = self._job_settings().output
                self.job_log = log_dir.replace("%j", job.job_id).replace("%%", "%")
                self.persist_state()
                return True
        return False

    async def _resume(self) -> int | None:
        """After a hub restart: wait for a queued job to run and report its port, and make sure
        the hub's record of the session's address matches the job's."""
        self.log.info("%s: following Slurm job %s again", self._log_name, self.job_id)
        with self.queue.urgent():
            try:
                address, port = await self._wait_until_up(None, probe=False)
            except SlurmSpawnError as e:
                self.log.warning("%s: %s", self._log_name, e)
                job, _ = await self._job()
                return _exit_status(job) if job is not None else 1
        if self.server is not None and (self.server.ip, self.server.port) != (address, port):
            self.server.ip = address
            self.server.port = port
            self.persist_state()
        _keep(asyncio.ensure_future(self._route_when_ready()))
        return None

    async def _route_when_ready(self) -> None:
        """JupyterHub adds routes for servers found at start-up only after every check ends;
        add this one as soon as its own check is done."""
        proxy = self.user.settings.get("proxy")
        for _ in range(600):
            if self.ready:
                if proxy is not None:
                    await proxy.add_user(self.user, self.name)
                return
            if not self.active:
                return
            await asyncio.sleep(0.5)

    # -- stop ---------------------------------------------------------------------------------
    async def _scancel(self, job_id: str) -> None:
        try:
            await run_command(
                [self._command("scancel"), job_id],
                limit=self.command_timeout,
                run_as=self._run_as(),
            )
        except SlurmRefused as e:
            if "Invalid job id" in e.stderr or "already completing or completed" in e.stderr:
                return
            raise

    async def stop(self, now: bool = False) -> None:
        if not self.job_name:
            return
        if not self.job_id:
            listing = await self.queue.fresh_listing(time.monotonic())
            if listing is None or not await self._adopt(listing):
                return
        job_id = self.job_id
        self.log.info("%s: cancelling Slurm job %s", self._log_name, job_id)
        deadline = time.monotonic() + self.stop_timeout
        with self.queue.urgent():
            while True:
                try:
                    await self._scancel(job_id)
                    break
                except SlurmUnavailable as e:
                    if time.monotonic() > deadline:
                        self.log.error(
                            "%s: could not cancel job %s (%s); retrying in the background",
                            self._log_name,
                            job_id,
                            e,
                        )
                        _keep_cancelling(self, job_id)
                        return
                    await self.queue.next_round()
            if now:
                return
            since = time.monotonic()
            while time.monotonic() < deadline:
                listing = await self.queue.fresh_listing(since)
                job = listing.jobs.get(job_id) if listing is not None else None
                if listing is not None and job is None:
                    job = await self.queue.confirm_ended(job_id)
                    if job is not None:
                        return
                elif job is not None and job.phase is Phase.ENDED:
                    return
                since = time.monotonic()
        self.log.warning("%s: Slurm has not confirmed that job %s ended", self._log_name, job_id)


_background: set[asyncio.Future[None]] = set()


def _keep(task: asyncio.Future[None]) -> None:
    """Hold a reference to a background task until it ends."""
    _background.add(task)
    task.add_done_callback(_background.discard)


def _keep_cancelling(spawner: BerthSlurmSpawner, job_id: str) -> None:
    """Retry scancel until Slurm takes it, so a stop during an outage leaves no job behind."""

    async def retry() -> None:
        delay = 5.0
        while True:
            await asyncio.sleep(delay)
            try:
                await spawner._scancel(job_id)
                spawner.log.info("Cancelled Slurm job %s after the outage", job_id)
                return
            except SlurmUnavailable:
                delay = min(delay * 2, 300)
            except SlurmRefused as e:
                spawner.log.error("Could not cancel Slurm job %s: %s", job_id, e)
                return

    _keep(asyncio.ensure_future(retry()))
