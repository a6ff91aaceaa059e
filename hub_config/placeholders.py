"""``{name}`` placeholders in catalog commands and environment values.

A template is substituted in two stages, each by name and never by a shell:

1. the spawner fills what it knows (``{input.model}``, ``{gpus}``...) with :func:`fill`, which keeps
   the result a template: literal braces in a value are escaped as ``{{``/``}}`` and names it does
   not know yet (``{port}``, ``{base_url}``, ``{unix_socket}``) stay as they are;
2. the process that knows the runtime values (berth-gate beside the service) finishes it with
   :func:`render`, which turns ``{{``/``}}`` into literal braces.

So a user's value can never introduce a placeholder of its own.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = [
    "INPUT_PREFIX",
    "RESOURCE_NAMES",
    "RUNTIME_NAMES",
    "PlaceholderError",
    "fill",
    "names_in",
    "render",
]

INPUT_PREFIX = "input."
#: Known only where the service runs; berth-gate fills them. ``os_user`` is the account the
#: service runs as there (not the hub user's name, which may not be an account at all).
RUNTIME_NAMES = frozenset({"port", "unix_socket", "base_url", "os_user"})
#: Known when the session is chosen; the spawner fills them.
RESOURCE_NAMES = frozenset({"cpus", "memory_mb", "gpus", "hours", "user", "session"})

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)?$")


class PlaceholderError(ValueError):
    """A template that is not well formed."""


def names_in(template: str) -> list[str]:
    """The placeholder names in ``template``, in order; raise on stray braces or bad names."""
    names = []
    for match in _TOKEN.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        name = match.group(1)
        if name is None:
            raise PlaceholderError(
                f"a lone '{token}' at position {match.start()}; write '{token}{token}' for a"
                " literal brace"
            )
        if not _NAME.match(name):
            raise PlaceholderError(
                f"'{{{name}}}' is not a placeholder name;"
                " names look like {port} or {input.model}"
            )
        names.append(name)
    return names


def _escape(value: str) -> str:
    return value.replace("{", "{{").replace("}", "}}")


def fill(template: str, values: Mapping[str, str]) -> str:
    """Substitute the names in ``values``; keep other placeholders and escapes as they are."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is not None and name in values:
            return _escape(values[name])
        return match.group(0)

    names_in(template)
    return _TOKEN.sub(replace, template)


def render(template: str, values: Mapping[str, str]) -> str:
    """Substitute every placeholder and unescape braces; raise if a name has no value."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        name = match.group(1)
        if name not in values:
            raise PlaceholderError(f"no value for placeholder '{{{name}}}'")
        return values[name]

    names_in(template)
    return _TOKEN.sub(replace, template)
