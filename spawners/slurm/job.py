"""``berth-slurm-job``: what a session's batch script runs on the compute node.

    berth-slurm-job [--ip ADDRESS] -- COMMAND [ARG...]

It picks a free port on ADDRESS, tells the hub (``POST .../api/berth/slurm/port/<user>/<server>``
with the session's own API token and ``{"port": N}``), points ``JUPYTERHUB_SERVICE_URL`` at that
address and port, and replaces itself with COMMAND (jupyterhub-singleuser, or berth-gate and the
service), which listens there. If the hub is restarting, the report is retried for a while; if the
hub refuses it, the job ends with the hub's answer in its log.

Only the standard library is used: compute nodes need Berth installed, nothing more.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence

__all__ = ["main", "pick_port", "report_port", "service_url"]


def pick_port(ip: str) -> int:
    """A port free on ``ip`` now (the service binds it a moment later)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        return int(sock.getsockname()[1])


def service_url(current: str, ip: str, port: int) -> str:
    """``JUPYTERHUB_SERVICE_URL`` with its host and port replaced (path and scheme kept)."""
    parts = urllib.parse.urlsplit(current or "http://127.0.0.1:0/")
    host = f"[{ip}]" if ":" in ip else ip
    return urllib.parse.urlunsplit(
        (parts.scheme or "http", f"{host}:{port}", parts.path or "/", "", "")
    )


def _ssl_context(env: Mapping[str, str]) -> ssl.SSLContext | None:
    cafile = env.get("JUPYTERHUB_SSL_CLIENT_CA")
    if not cafile:
        return None
    context = ssl.create_default_context(cafile=cafile)
    certfile, keyfile = env.get("JUPYTERHUB_SSL_CERTFILE"), env.get("JUPYTERHUB_SSL_KEYFILE")
    if certfile:
        context.load_cert_chain(certfile, keyfile)
    return context


def report_port(env: Mapping[str, str], port: int, *, patience: float = 900.0) -> None:
    """Tell the hub the port; retry while the hub is unreachable or restarting (up to
    ``patience`` seconds); raise RuntimeError with the hub's answer if it refuses."""
    api = env["JUPYTERHUB_API_URL"].rstrip("/")
    if urllib.parse.urlsplit(api).scheme not in ("http", "https"):
        raise RuntimeError(f"JUPYTERHUB_API_URL must be an http(s) URL, not {api!r}")
    user = urllib.parse.quote(env["JUPYTERHUB_USER"], safe="")
    server = urllib.parse.quote(env.get("JUPYTERHUB_SERVER_NAME", ""), safe="")
    request = urllib.request.Request(  # noqa: S310 (an http(s) URL, checked above)
        f"{api}/berth/slurm/port/{user}/{server}",
        data=json.dumps({"port": port}).encode(),
        headers={
            "Authorization": f"token {env['JUPYTERHUB_API_TOKEN']}",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    context = _ssl_context(env)
    deadline = time.monotonic() + patience
    delay = 0.5
    while True:
        try:
            with urllib.request.urlopen(request, timeout=30, context=context):  # noqa: S310 (checked)
                return
        except urllib.error.HTTPError as e:
            answer = e.read().decode(errors="replace")[:500]
            if e.code < 500:
                raise RuntimeError(f"the hub refused the port report: {e.code} {answer}") from None
            problem = f"{e.code} {answer}"
        except (urllib.error.URLError, OSError) as e:
            problem = str(e)
        if time.monotonic() > deadline:
            raise RuntimeError(f"could not reach the hub at {api} ({problem})")
        print(f"berth-slurm-job: hub not answering ({problem}); retrying", file=sys.stderr)
        time.sleep(delay)
        delay = min(delay * 2, 15)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="berth-slurm-job",
        description="Report this session's port to the hub, then run the session's command.",
    )
    parser.add_argument("--ip", default="0.0.0.0", help="address the session listens on")  # noqa: S104
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the session's command after --")
    env = dict(os.environ)
    port = pick_port(args.ip)
    try:
        report_port(env, port)
    except (RuntimeError, KeyError) as e:
        print(f"berth-slurm-job: {e}", file=sys.stderr)
        sys.exit(1)
    env["JUPYTERHUB_SERVICE_URL"] = service_url(
        env.get("JUPYTERHUB_SERVICE_URL", ""), args.ip, port
    )
    message = f"berth-slurm-job: session listens on {args.ip}:{port}; starting {command[0]}"
    print(message, file=sys.stderr, flush=True)
    try:
        # the session's own argv, from the launch spec: replace this process, no shell
        os.execvpe(command[0], command, env)  # noqa: S606
    except OSError as e:
        print(f"berth-slurm-job: cannot run {command[0]}: {e}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main()
