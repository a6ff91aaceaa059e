"""Kubernetes events in words a user acts on.

The scheduler says ``0/4 nodes are available: 3 Insufficient nvidia.com/gpu, 1 node(s) had
untolerated taint {...}``; the spawn page says "All GPUs that fit this profile are in use right now.
The session is queued and starts when one is free; stop it to give up." The raw event is kept
beside the sentence for the log and for programs.
"""

from __future__ import annotations

import re
from typing import Any

from ..spec import LaunchSpec

__all__ = ["describe_event"]

_INSUFFICIENT = re.compile(r"Insufficient ([A-Za-z0-9./_-]*[A-Za-z0-9])")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' * (count != 1)}"


def _scheduling(message: str, spec: LaunchSpec) -> str:
    short = sorted(set(_INSUFFICIENT.findall(message)))
    profile = spec.profile
    gpu_resource = profile.kubernetes.gpu_resource
    queued = "The session is queued and starts when they are free; stop it to give up."
    if gpu_resource in short:
        kind = f" {profile.gpu_type}" if profile.gpu_type else ""
        return (
            f"Waiting for {_plural(profile.gpus, f'free{kind} GPU')}: every node that fits"
            f" profile '{profile.display_name}' has its GPUs in use. {queued}"
        )
    if short:
        wanted = {
            "cpu": f"{profile.cpus:g} CPUs",
            "memory": f"{profile.memory / 2**30:g} GiB of memory",
        }
        what = " and ".join(wanted.get(name, name) for name in short)
        return f"Waiting for {what}: no node has that much free right now. {queued}"
    if "didn't match Pod's node affinity/selector" in message or "untolerated taint" in message:
        return (
            f"No node in the cluster matches profile '{profile.display_name}' (its node selector,"
            " affinity or tolerations). The session stays queued; ask an admin to check the"
            " profile or the nodes."
        )
    return f"Waiting for the scheduler: {message}"


def describe_event(event: dict[str, Any], spec: LaunchSpec) -> str:
    """One sentence for one core/v1 Event about the session's pod."""
    reason = event.get("reason") or ""
    message = event.get("message") or ""
    service = spec.service.display_name
    if reason == "FailedScheduling":
        return _scheduling(message, spec)
    if reason == "Scheduled":
        node = message.rsplit(" to ", 1)[-1] if " to " in message else "a node"
        return f"Placed on node {node}."
    if reason == "Pulling":
        return f"Downloading the {service} image (first use on this node can take minutes)."
    if reason == "Pulled":
        return f"The {service} image is on the node."
    if reason in ("Created", "Started"):
        return f"{service} is starting; waiting for it to answer."
    if reason == "TriggeredScaleUp":
        return "The cluster is adding a node for this session; this can take several minutes."
    if reason in ("Failed", "BackOff", "ErrImagePull", "ImagePullBackOff"):
        return f"{service} could not start: {message}"
    kind = event.get("type") or "Normal"
    return f"{reason}: {message}" if kind == "Normal" else f"Warning ({reason}): {message}"
