"""The hub's progress events: parsing the stream, naming the phase, showing it as it changes.

JupyterHub streams ``GET /hub/api/users/<u>/servers/<s>/progress`` as server-sent events, each a
JSON object: ``{"progress": 0-100, "message": "...", "ready": true, "failed": true, "url": ...}``.
Berth's backends put the scheduler's words in ``message``: the Slurm backend says
``Job 42 is queued in partition gpu: waiting for GPUs (Resources); expected start 14:05 (in 12
minutes)``, the Kubernetes backend says why the pod waits and keeps the scheduler's event in
``raw_event``.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, Literal, TextIO

__all__ = ["Display", "Phase", "format_elapsed", "parse_sse", "phase_of"]

Phase = Literal["queued", "starting", "ready", "failed"]
_QUEUED = re.compile(r"\bqueued\b", re.IGNORECASE)


def parse_sse(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Events from the lines of a ``text/event-stream``; comments, keep-alives and anything that
    is not a JSON object are skipped."""
    data: list[str] = []
    for line in itertools.chain(lines, [""]):
        line = line.rstrip("\r\n")
        if not line:
            if data:
                try:
                    event = json.loads("\n".join(data))
                except ValueError:
                    event = None
                if isinstance(event, dict):
                    yield event
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)


def phase_of(event: dict[str, Any]) -> Phase:
    """Where a session is, from one progress event."""
    if event.get("ready"):
        return "ready"
    if event.get("failed"):
        return "failed"
    raw = event.get("raw_event")
    if isinstance(raw, dict) and raw.get("reason") == "FailedScheduling":
        return "queued"
    message = event.get("message")
    if isinstance(message, str) and _QUEUED.search(message):
        return "queued"
    return "starting"


def format_elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Display:
    """Progress on a terminal (or a log): one line per new message, and on a terminal a live
    status line below them with a spinner and the time spent so far."""

    _FRAMES = "|/-\\"

    def __init__(self, out: TextIO, *, live: bool, width: int = 100) -> None:
        self.out = out
        self.live = live
        self.width = width
        self.started = time.monotonic()
        self.phase: Phase = "starting"
        self.message = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Display:
        if self.live:
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._clear()
            self.out.flush()

    def note(self, text: str) -> None:
        """A line of its own (above the status line)."""
        with self._lock:
            self._clear()
            self.out.write(text + "\n")
            self._draw()

    def event(self, event: dict[str, Any]) -> Phase:
        phase = phase_of(event)
        message = event.get("message")
        text = message if isinstance(message, str) else ""
        if (phase, text) != (self.phase, self.message):
            self.phase, self.message = phase, text
            stamp = format_elapsed(time.monotonic() - self.started)
            self.note(f"[{stamp}] {phase:<8} {text}".rstrip())
        return phase

    # -- the live line --------------------------------------------------------------------------

    def _clear(self) -> None:
        if self.live:
            self.out.write("\r\x1b[2K")

    def _draw(self, frame: int = 0) -> None:
        if not self.live or self._stop.is_set():
            return
        elapsed = format_elapsed(time.monotonic() - self.started)
        line = f"{self._FRAMES[frame % len(self._FRAMES)]} {self.phase} for {elapsed}"
        self.out.write(line[: self.width - 1])
        self.out.flush()

    def _spin(self) -> None:
        for frame in itertools.count():
            if self._stop.wait(0.2):
                return
            with self._lock:
                self._clear()
                self._draw(frame)
