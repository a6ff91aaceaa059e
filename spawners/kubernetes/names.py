"""Kubernetes names for hub users and sessions: valid DNS labels that never collide.

Hub user names may hold capitals, dots, ``@`` and any Unicode; session names capitals, dots and
underscores. Kubernetes object names (and label values) allow far less, so each name is a readable
slug of the original *plus a short hash of the exact original text*: ``Alice`` and ``alice``, or
``a.b`` and ``a-b``, read alike but hash apart, so they never share a pod, a service or a volume.
The same input always gives the same name, which is how a restarted hub finds its pods again.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

__all__ = ["KubeNames", "dns_label", "kube_names", "label_value"]

_HASH_LENGTH = 8  # 32 bits of sha256, per (user, session) pair
_NOT_SAFE = re.compile(r"[^a-z0-9]+")


def _slug(text: str, room: int) -> str:
    slug = _NOT_SAFE.sub("-", text.lower()).strip("-")
    return slug[:room].strip("-")


def _digest(*parts: str) -> str:
    # JSON keeps ("a-b", "c") and ("a", "b-c") apart.
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:_HASH_LENGTH]


def dns_label(prefix: str, *parts: str, max_length: int = 63) -> str:
    """``prefix-slug(part)-...-hash``: an RFC 1123 (and 1035) label of at most ``max_length``.

    ``prefix`` must already be a label starting with a letter; each part gets an equal share of
    what is left, and the hash covers the exact parts, so distinct inputs give distinct labels.
    """
    digest = _digest(*parts)
    room = max_length - len(prefix) - len(digest) - 1 - len(parts)
    share = max(room // max(len(parts), 1), 0)
    slugs = [s for s in (_slug(part, share) for part in parts) if s]
    return "-".join([prefix, *slugs, digest])


def label_value(text: str) -> str:
    """A label value (at most 63 of ``[a-z0-9-]``) for any text.

    The exact text goes in an annotation beside it."""
    return dns_label("v", text)[2:]


@dataclass(frozen=True)
class KubeNames:
    """Every name one session uses."""

    pod: str
    #: the per-user volume, shared by all of a user's sessions
    pvc: str
    user_label: str
    session_label: str


def kube_names(user: str, session: str) -> KubeNames:
    return KubeNames(
        pod=dns_label("berth", user, session),
        pvc=dns_label("berth-home", user),
        user_label=label_value(user),
        session_label=label_value(session),
    )
