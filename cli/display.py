"""Text for people: tables, durations, times. Pure (``now`` is passed in)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "describe_text",
    "duration",
    "ends_text",
    "list_table",
    "parse_time",
    "resources_text",
    "services_text",
    "table",
    "when",
]


def duration(seconds: float | None) -> str:
    """``5400`` -> ``1h30m``; whole minutes above an hour, seconds only under a minute."""
    if seconds is None:
        return "-"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
    ]
    return "".join(parts) or "0m"


def parse_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def when(text: object, now: datetime) -> str:
    """A moment in local time with how far it is: ``15:02 (in 48m)``, ``14:02 (12m ago)``."""
    moment = parse_time(text)
    if moment is None:
        return "-"
    local = moment.astimezone(now.tzinfo)
    clock = local.strftime("%H:%M") if local.date() == now.date() else local.strftime("%b %d %H:%M")
    delta = (moment - now).total_seconds()
    return f"{clock} (in {duration(delta)})" if delta >= 0 else f"{clock} ({duration(-delta)} ago)"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in [headers, *rows]]  # fmt: skip
    return "\n".join(lines)


def resources_text(resources: Mapping[str, Any] | None) -> str:
    if not resources:
        return "-"
    cpus = resources["cpus"]
    text = f"{cpus:g} CPU" if isinstance(cpus, float) else f"{cpus} CPU"
    text += f", {resources['memory']}"
    if resources.get("gpus"):
        kind = f" {str(resources['gpu_type']).upper()}" if resources.get("gpu_type") else ""
        text += f", {resources['gpus']} x{kind} GPU"
    return text


def _hours(seconds: int | None) -> str:
    return "never" if seconds is None else duration(seconds)


def services_text(catalog: Mapping[str, Any], only: str | None = None) -> str:
    blocks = []
    for service in catalog.get("services", []):
        if only is not None and service["name"] != only:
            continue
        head = f"{service['name']}: {service['display_name']}"
        if service.get("description"):
            head += f". {service['description'].rstrip('.')}."
        if service["name"] == catalog.get("default_service"):
            head += " (default)"
        rows = []
        for profile in service["profiles"]:
            policy = profile["policy"]
            name = profile["name"] + (" *" if profile["name"] == service["default_profile"] else "")
            if not profile["available"]:
                rows.append([name, "-", "-", "-", "-", "-", "-", "-",
                             f"not on this hub: {profile['unavailable_reason']}"])  # fmt: skip
                continue
            gpus = "-"
            if profile["gpus"]:
                kind = f" {str(profile['gpu_type']).upper()}" if profile.get("gpu_type") else ""
                gpus = f"{profile['gpus']} x{kind}"
            rows.append(
                [
                    name,
                    f"{profile['cpus']}",
                    profile["memory"],
                    gpus,
                    duration(policy["default_seconds"]),
                    duration(policy["max_seconds"]),
                    "+" + duration(policy["extension_cap_seconds"]),
                    _hours(policy["idle_timeout_seconds"]),
                    profile.get("description", ""),
                ]
            )
        headers = ["PROFILE", "CPUS", "MEMORY", "GPUS", "DEFAULT", "MAX", "EXTEND", "IDLE", ""]
        block = head + "\n" + _indent(table(headers, rows))
        inputs = service.get("inputs", [])
        if inputs:
            block += "\n  inputs: " + "; ".join(_input_text(spec) for spec in inputs)
        blocks.append(block)
    note = "* the profile a launch uses unless told (--profile P, or --gpus N [--gpu-type T])"
    return "\n\n".join(blocks) + ("\n\n" + note if blocks else "")


def _input_text(spec: Mapping[str, Any]) -> str:
    text = f"--input {spec['name']}=<{spec['type']}>"
    if spec.get("choices"):
        text = f"--input {spec['name']}={'|'.join(spec['choices'])}"
    if spec["required"] and spec["default"] is None:
        text += " (required)"
    elif spec["default"] is not None:
        text += f" (default {spec['default']})"
    return text


def _indent(text: str) -> str:
    return "\n".join("  " + line if line else line for line in text.splitlines())


def ends_text(deadlines: Mapping[str, Any] | None, now: datetime) -> str:
    if not deadlines:
        return "-"
    why = "idle" if deadlines.get("ends_because") == "idle" else "limit"
    return f"{duration(deadlines.get('seconds_left'))} ({why})"


def list_table(sessions: Sequence[Mapping[str, Any]], now: datetime) -> str:
    rows = []
    for view in sessions:
        rows.append(
            [
                view["name"],
                view["service"] or "-",
                f"{view['profile'] or '-'} ({resources_text(view['resources'])})",
                view["state"],
                ends_text(view["deadlines"], now) if view["state"] == "running" else "-",
                view["url"] or "-",
            ]
        )
    return table(["NAME", "SERVICE", "PROFILE", "STATE", "TIME LEFT", "URL"], rows)


def describe_text(view: Mapping[str, Any], now: datetime) -> str:
    lines: list[tuple[str, str]] = [("Session", f"{view['user']}/{view['name']}")]
    service = view["service"] or "-"
    if view.get("service_display_name"):
        service = f"{view['service_display_name']} ({view['service']})"
    lines.append(("Service", service))
    profile = view["profile"] or "-"
    if view.get("profile_display_name"):
        profile = f"{view['profile_display_name']} ({view['profile']})"
    lines.append(("Profile", f"{profile}: {resources_text(view['resources'])}"))
    state = view["state"]
    if state == "running" and view.get("started"):
        state += f" since {when(view['started'], now)}"
    lines.append(("State", state))
    progress = view.get("progress")
    if progress and progress.get("message"):
        lines.append(("Progress", str(progress["message"])))
    if view.get("url"):
        lines.append(("URL", view["url"]))
    if view.get("open_url") and view["open_url"] != view.get("url"):
        lines.append(("Open", view["open_url"]))
    if view.get("hours") is not None:
        lines.append(("Asked for", duration(float(view["hours"]) * 3600)))
    deadlines = view.get("deadlines")
    if deadlines:
        because = deadlines.get("ends_because")
        lines.append(("Ends", f"{when(deadlines.get('ends_at'), now)}, "
                      + ("idle limit" if because == "idle" else "end of its time")))  # fmt: skip
        lines.append(("Time limit", when(deadlines.get("hard_deadline"), now)))
        if deadlines.get("idle_deadline"):
            lines.append(("Idle limit", f"{when(deadlines['idle_deadline'], now)} unless used"))
        else:
            lines.append(("Idle limit", "none (never ended for idleness)"))
        extension = deadlines.get("extension") or {}
        if extension:
            lines.append(
                (
                    "Extension",
                    f"{duration(extension.get('used_seconds'))} used of"
                    f" {duration(extension.get('cap_seconds'))},"
                    f" {duration(extension.get('left_seconds'))} left",
                )
            )
        warning = deadlines.get("warning")
        if isinstance(warning, dict) and warning.get("message"):
            lines.append(("Warning", str(warning["message"])))
    elif view["state"] == "running":
        lines.append(("Ends", "unknown: this hub runs no berth-culler"))
    if view.get("last_activity"):
        lines.append(("Last active", when(view["last_activity"], now)))
    if view.get("inputs"):
        pairs = ", ".join(f"{k}={v}" for k, v in view["inputs"].items())
        lines.append(("Inputs", pairs))
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in lines)
