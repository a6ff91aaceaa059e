"""The stand-in's object store: namespaced core/v1 objects, resource versions, watch history.

It behaves like the API server where kubespawner can tell: the server fills ``uid``,
``resourceVersion``, ``creationTimestamp`` and ``namespace``; names are unique per kind and
namespace (409); a missing object or namespace is a 404 Status; every change is an event that
watches replay from a resourceVersion (410 Gone when it is older than the kept history); deleting an
object deletes everything that names it as an owner (background cascading deletion).
"""

from __future__ import annotations

import asyncio
import copy
import re
import secrets
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

KINDS = {
    "pods": "Pod",
    "services": "Service",
    "secrets": "Secret",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "events": "Event",
    "configmaps": "ConfigMap",
    "namespaces": "Namespace",
}
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_HISTORY = 20_000


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An error the API answers with a ``Status`` object."""

    def __init__(self, code: int, reason: str, message: str, **details: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def not_found(kind: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind} "{name}" not found', name=name, kind=kind)


# ---- selectors -------------------------------------------------------------------------------

_SET = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def label_matcher(selector: str | None) -> Callable[[dict[str, str]], bool]:
    """Equality (``=``, ``==``, ``!=``), set (``in``, ``notin``) and existence (``k``, ``!k``)."""
    tests: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_selector(selector or ""):
        if m := _SET.match(term):
            key, op, values = m[1], m[2], {v.strip() for v in m[3].split(",")}
            if op == "in":
                tests.append(lambda ls, k=key, vs=values: ls.get(k) in vs)
            else:
                tests.append(lambda ls, k=key, vs=values: ls.get(k) not in vs)
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            tests.append(lambda ls, k=key, v=value: ls.get(k) != v)
        elif "=" in term:
            key, value = (s.strip() for s in re.split("==?", term, maxsplit=1))
            tests.append(lambda ls, k=key, v=value: ls.get(k) == v)
        elif term.startswith("!"):
            absent = term[1:].strip()
            tests.append(lambda ls, k=absent: k not in ls)
        else:
            tests.append(lambda ls, k=term: k in ls)
    return lambda labels: all(test(labels) for test in tests)


def _field(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def field_matcher(selector: str | None) -> Callable[[Obj], bool]:
    """Field selectors such as ``metadata.name=x``, ``involvedObject.kind=Pod``, ``a.b!=c``."""
    tests: list[Callable[[Obj], bool]] = []
    for term in _split_selector(selector or ""):
        negated = "!=" in term
        path, value = (s.strip() for s in re.split("!=|==?", term, maxsplit=1))
        if negated:
            tests.append(lambda o, p=path, v=value: _field(o, p) != v)
        else:
            tests.append(lambda o, p=path, v=value: _field(o, p) == v)
    return lambda obj: all(test(obj) for test in tests)


# ---- patches ---------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, path: str) -> tuple[Any, str]:
    parts = _pointer(path)
    if not parts:
        raise ApiError(422, "Invalid", "cannot patch the whole object")
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, parts[-1]


def json_patch(doc: Any, operations: list[Obj]) -> Any:
    """RFC 6902 JSON patch: add, remove, replace, move, copy, test."""
    doc = copy.deepcopy(doc)
    for op in operations:
        try:
            kind = op["op"]
            if kind in ("move", "copy"):
                src_parent, src_key = _parent(doc, op["from"])
                if isinstance(src_parent, list):
                    value = src_parent[int(src_key)]
                else:
                    value = src_parent[src_key]
                if kind == "move":
                    json_patch_remove(src_parent, src_key)
                op = {"op": "add", "path": op["path"], "value": copy.deepcopy(value)}
                kind = "add"
            parent, key = _parent(doc, op["path"])
            if kind == "test":
                current = parent[int(key)] if isinstance(parent, list) else parent[key]
                if current != op["value"]:
                    raise ApiError(422, "Invalid", f"test operation failed at {op['path']}")
            elif kind == "remove":
                json_patch_remove(parent, key)
            elif kind == "add":
                if isinstance(parent, list):
                    parent.insert(len(parent) if key == "-" else int(key), op["value"])
                else:
                    parent[key] = op["value"]
            elif kind == "replace":
                if isinstance(parent, list):
                    parent[int(key)] = op["value"]
                elif key not in parent:
                    raise ApiError(422, "Invalid", f"replace of missing path {op['path']}")
                else:
                    parent[key] = op["value"]
            else:
                raise ApiError(400, "BadRequest", f"unknown JSON patch operation {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as e:
            raise ApiError(422, "Invalid", f"JSON patch failed: {e!r}") from None
    return doc


def json_patch_remove(parent: Any, key: str) -> None:
    if isinstance(parent, list):
        del parent[int(key)]
    else:
        del parent[key]


# ---- the store -------------------------------------------------------------------------------


@dataclass
class Change:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    kind: str
    obj: Obj


@dataclass
class Watcher:
    kind: str
    namespace: str | None
    matches: Callable[[Obj], bool]
    queue: asyncio.Queue[Change | None] = field(default_factory=asyncio.Queue)


class Store:
    def __init__(self) -> None:
        self.rv = 1
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.history: deque[Change] = deque(maxlen=_HISTORY)
        self.watchers: list[Watcher] = []
        #: called after every change, e.g. by the kubelet
        self.listeners: list[Callable[[Change], None]] = []
        self.create("namespaces", "", {"metadata": {"name": "default"}})

    def _key(self, kind: str, namespace: str, name: str) -> tuple[str, str, str]:
        return (kind, "" if kind == "namespaces" else namespace, name)

    def _record(self, change_type: str, kind: str, obj: Obj) -> None:
        change = Change(self.rv, change_type, kind, copy.deepcopy(obj))
        self.history.append(change)
        for watcher in self.watchers:
            if watcher.kind == kind and self._visible(watcher, change.obj):
                watcher.queue.put_nowait(change)
        for listener in self.listeners:
            listener(change)

    @staticmethod
    def _visible(watcher: Watcher, obj: Obj) -> bool:
        ns = obj["metadata"].get("namespace")
        return (watcher.namespace is None or ns == watcher.namespace) and watcher.matches(obj)

    def check_namespace(self, namespace: str) -> None:
        if ("namespaces", "", namespace) not in self.objects:
            raise not_found("namespaces", namespace)

    def get(self, kind: str, namespace: str, name: str) -> Obj:
        obj = self.objects.get(self._key(kind, namespace, name))
        if obj is None:
            raise not_found(kind, name)
        return obj

    def list(self, kind: str, namespace: str | None, matches: Callable[[Obj], bool]) -> list[Obj]:
        found = [
            (key, obj)
            for key, obj in self.objects.items()
            if key[0] == kind and (namespace is None or key[1] == namespace) and matches(obj)
        ]
        return [obj for _, obj in sorted(found, key=lambda item: item[0])]

    def create(self, kind: str, namespace: str, body: Obj) -> Obj:
        body = copy.deepcopy(body)
        meta = body.setdefault("metadata", {})
        if kind != "namespaces":
            self.check_namespace(namespace)
            meta["namespace"] = namespace
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        name = meta.get("name") or ""
        valid = _DNS_LABEL if kind in ("namespaces", "services") else _DNS_SUBDOMAIN
        limit = 63 if kind in ("namespaces", "services") else 253
        if not valid.match(name) or len(name) > limit:
            raise ApiError(
                422, "Invalid", f'{KINDS[kind]} "{name}" is invalid: metadata.name: Invalid value',
                name=name, kind=kind,
            )  # fmt: skip
        key = self._key(kind, namespace, name)
        if key in self.objects:
            raise ApiError(
                409, "AlreadyExists", f'{kind} "{name}" already exists', name=name, kind=kind
            )
        self.rv += 1
        meta.update(uid=str(uuid.uuid4()), resourceVersion=str(self.rv), creationTimestamp=now())
        body["apiVersion"], body["kind"] = "v1", KINDS[kind]
        if kind == "namespaces":
            body["status"] = {"phase": "Active"}
        if kind == "pods":
            body.setdefault("status", {})["phase"] = "Pending"
            body["status"]["qosClass"] = "Burstable"
        if kind == "services" and body.get("spec", {}).get("clusterIP") is None:
            body.setdefault("spec", {})["clusterIP"] = (
                f"10.96.{self.rv // 256 % 256}.{self.rv % 256}"
            )
        self.objects[key] = body
        self._record("ADDED", kind, body)
        return body

    def replace(self, kind: str, namespace: str, name: str, body: Obj) -> Obj:
        old = self.get(kind, namespace, name)
        body = copy.deepcopy(body)
        meta = body.setdefault("metadata", {})
        for fixed in ("uid", "creationTimestamp", "namespace", "name"):
            if fixed in old["metadata"]:
                meta[fixed] = old["metadata"][fixed]
        body["apiVersion"], body["kind"] = old["apiVersion"], old["kind"]
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        self.objects[self._key(kind, namespace, name)] = body
        self._record("MODIFIED", kind, body)
        return body

    def patch(self, kind: str, namespace: str, name: str, content_type: str, patch: Any) -> Obj:
        old = self.get(kind, namespace, name)
        if content_type.startswith("application/json-patch+json"):
            if not isinstance(patch, list):
                raise ApiError(400, "BadRequest", "a JSON patch is a list of operations")
            new = json_patch(old, patch)
        elif isinstance(patch, dict):
            new = merge_patch(old, patch)
        else:
            raise ApiError(400, "BadRequest", "a merge patch is an object")
        return self.replace(kind, namespace, name, new)

    def delete(self, kind: str, namespace: str, name: str) -> Obj:
        key = self._key(kind, namespace, name)
        obj = self.objects.pop(key, None)
        if obj is None:
            raise not_found(kind, name)
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self._record("DELETED", kind, obj)
        self._collect_garbage(obj["metadata"]["uid"])
        if kind == "namespaces":
            for k, ns, n in [k for k in self.objects if k[1] == name]:
                self.delete(k, ns, n)
        return obj

    def _collect_garbage(self, owner_uid: str) -> None:
        owned = [
            key
            for key, obj in self.objects.items()
            if any(
                ref.get("uid") == owner_uid for ref in obj["metadata"].get("ownerReferences", [])
            )
        ]
        for kind, namespace, name in owned:
            if (kind, namespace, name) in self.objects:
                self.delete(kind, namespace, name)

    def changes_since(self, rv: int) -> Iterator[Change]:
        if self.history and rv < self.history[0].rv - 1:
            raise ApiError(410, "Expired", f"too old resource version: {rv} ({self.rv})")
        return (change for change in list(self.history) if change.rv > rv)

    def watch(self, kind: str, namespace: str | None, matches: Callable[[Obj], bool]) -> Watcher:
        watcher = Watcher(kind, namespace, matches)
        self.watchers.append(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        if watcher in self.watchers:
            self.watchers.remove(watcher)
