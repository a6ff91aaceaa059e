"""Where ``berth`` finds the hub and the token.

``berth login`` writes ``$XDG_CONFIG_HOME/berth/config.json`` (``~/.config/berth/config.json``),
readable by its owner only (0600, in a 0700 folder). Each value is looked up in this order:

1. ``BERTH_URL`` / ``BERTH_TOKEN`` (for scripts and CI);
2. the file written by ``berth login``;
3. what JupyterHub gives every session: ``JUPYTERHUB_PUBLIC_HUB_URL`` or ``JUPYTERHUB_API_URL``,
   and ``JUPYTERHUB_API_TOKEN`` — so ``berth`` works in a session's terminal without a login.

A login beats the session's variables because the session's own token is usually narrower than a
personal one (it may reach its own server, not start others).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .errors import CliError, ExitCode

__all__ = ["Login", "config_path", "find_login", "normalize_url", "remove_login", "save_login"]


_SESSION = "the session's JUPYTERHUB_* variables"


@dataclass(frozen=True)
class Login:
    """A hub and a token. ``url`` is the hub's public address (what a browser opens, without
    ``/hub``); ``api_url`` the REST API, which inside a session may be an internal address."""

    url: str
    token: str
    api_url: str
    source: str

    @property
    def token_page(self) -> str:
        return f"{self.url}/hub/token"


def config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(base) / "berth" / "config.json"


def normalize_url(text: str) -> str:
    """The hub's public root from what a person types: ``hub.example.org``,
    ``https://hub.example.org/``, ``https://host/jhub/hub/api``, ``http://127.0.0.1:8000/hub/``."""
    text = text.strip()
    if not text:
        raise CliError(
            "the hub's address is empty; give it as https://hub.example.org", ExitCode.USAGE
        )
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(
            f"{text!r} is not a hub address; give it as https://hub.example.org", ExitCode.USAGE
        )
    path = parts.path.rstrip("/")
    marker = path.find("/hub/")
    if path.endswith("/hub"):
        path = path[: -len("/hub")]
    elif marker >= 0:
        path = path[:marker]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def _read_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}; run `berth login` again") from None
    try:
        data = json.loads(text)
    except ValueError:
        raise CliError(f"{path} is not valid JSON; run `berth login` again") from None
    if not isinstance(data, dict):
        raise CliError(f"{path} is not a berth login; run `berth login` again")
    return {key: value for key, value in data.items() if isinstance(value, str)}


def find_login(env: Mapping[str, str] | None = None) -> Login | None:
    """The login to use, or None when nothing says which hub."""
    env = os.environ if env is None else env
    path = config_path(env)
    saved = _read_file(path)
    session_url = env.get("JUPYTERHUB_PUBLIC_HUB_URL") or env.get("JUPYTERHUB_API_URL")
    url, token, source = "", "", ""
    for candidate_url, candidate_token, where in (
        (env.get("BERTH_URL"), env.get("BERTH_TOKEN"), "BERTH_URL/BERTH_TOKEN"),
        (saved.get("url"), saved.get("token"), str(path)),
        (session_url, env.get("JUPYTERHUB_API_TOKEN"), _SESSION),
    ):
        if candidate_url and not url:
            url = normalize_url(candidate_url)
            source = where
        if candidate_token and not token:
            token = candidate_token
    if not url:
        return None
    api_url = f"{url}/hub/api"
    if source == _SESSION and env.get("JUPYTERHUB_API_URL"):
        # inside a session the hub's API may be reachable only at its internal address
        api_url = env["JUPYTERHUB_API_URL"].rstrip("/")
    return Login(url=url, token=token, api_url=api_url, source=source)


def save_login(url: str, token: str, env: Mapping[str, str] | None = None) -> Path:
    """Write the login where only its owner can read it; replace any previous one at once."""
    path = config_path(env)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".config-", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"url": url, "token": token}, out, indent=2)
            out.write("\n")
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def remove_login(env: Mapping[str, str] | None = None) -> Path | None:
    path = config_path(env)
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path
