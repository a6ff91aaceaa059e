"""The stand-in's HTTP side: the core/v1 REST paths kubernetes_asyncio calls, over aiohttp.

List and watch honour ``labelSelector``, ``fieldSelector``, ``resourceVersion`` and
``timeoutSeconds``; a watch is a chunked stream of JSON lines, as the API server sends. Each request
is counted by verb and resource (``GET /_standin/requests``) so tests can check RBAC and
benchmarks can count the hub's traffic.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .store import KINDS, ApiError, Change, Obj, Store, field_matcher, label_matcher, now

if TYPE_CHECKING:
    from .kubelet import Kubelet

__all__ = ["make_app"]

KUBE_VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0-berth-standin"}


def _status(error: ApiError) -> web.Response:
    return web.json_response(error.status(), status=error.code)


class Api:
    def __init__(self, store: Store, kubelet: Kubelet | None, validate: str | None) -> None:
        self.store = store
        self.kubelet = kubelet
        self.validate_version = validate
        #: (client, verb, resource) -> count; client is "token" for a client with credentials
        #: (the hub, from its kubeconfig) and "anonymous" for a test peeking at the state
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.timeline: list[tuple[float, str, str, str]] = []

    def count(self, request: web.Request, verb: str, resource: str) -> None:
        client = "token" if request.headers.get("Authorization") else "anonymous"
        self.requests[(client, verb, resource)] += 1
        self.timeline.append((time.time(), client, verb, resource))

    def check_schema(self, body: Obj) -> None:
        if not self.validate_version:
            return
        import kubernetes_validate

        try:
            kubernetes_validate.validate(body, self.validate_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            raise ApiError(
                422, "Invalid", f"{body.get('kind')} is invalid: {path}: {e.message}"
            ) from None

    async def _body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read() or b"null")
        except ValueError:
            raise ApiError(400, "BadRequest", "the request body is not JSON") from None

    # ---- handlers --------------------------------------------------------------------------

    async def collection(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        namespace = request.match_info.get("namespace")
        if kind not in KINDS:
            return _status(ApiError(404, "NotFound", f"the server could not find {kind}"))
        if kind == "namespaces":
            namespace = ""
        try:
            if request.method == "GET":
                query = request.query
                matches_labels = label_matcher(query.get("labelSelector"))
                matches_fields = field_matcher(query.get("fieldSelector"))

                def matches(obj: Obj) -> bool:
                    return matches_labels(obj["metadata"].get("labels") or {}) and matches_fields(
                        obj
                    )

                scope = None if kind == "namespaces" else namespace
                if namespace and kind != "namespaces":
                    self.store.check_namespace(namespace)
                if (query.get("watch") or "").lower() in ("true", "1"):
                    self.count(request, "watch", kind)
                    return await self.watch(request, kind, scope, matches)
                self.count(request, "list", kind)
                items = self.store.list(kind, scope, matches)
                return web.json_response(
                    {
                        "kind": KINDS[kind] + "List",
                        "apiVersion": "v1",
                        "metadata": {"resourceVersion": str(self.store.rv)},
                        "items": items,
                    }
                )
            if request.method == "POST":
                self.count(request, "create", kind)
                body = await self._body(request)
                if not isinstance(body, dict):
                    raise ApiError(400, "BadRequest", "the body must be an object")
                if kind == "pods":
                    self.check_schema(body)
                created = self.store.create(kind, namespace or "", body)
                return web.json_response(created, status=201)
        except ApiError as e:
            return _status(e)
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "POST"])

    async def item(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info.get("kind", "namespaces")
        namespace = request.match_info.get("namespace", "")
        name = request.match_info["name"]
        if kind not in KINDS:
            return _status(ApiError(404, "NotFound", f"the server could not find {kind}"))
        try:
            if kind != "namespaces":
                self.store.check_namespace(namespace)
            if request.method == "GET":
                self.count(request, "get", kind)
                return web.json_response(self.store.get(kind, namespace, name))
            if request.method == "PUT":
                self.count(request, "update", kind)
                return web.json_response(
                    self.store.replace(kind, namespace, name, await self._body(request))
                )
            if request.method == "PATCH":
                self.count(request, "patch", kind)
                content_type = request.headers.get("Content-Type", "")
                patched = self.store.patch(
                    kind, namespace, name, content_type, await self._body(request)
                )
                return web.json_response(patched)
            if request.method == "DELETE":
                self.count(request, "delete", kind)
                return web.json_response(await self.delete(request, kind, namespace, name))
        except ApiError as e:
            return _status(e)
        raise web.HTTPMethodNotAllowed(request.method, ["GET", "PUT", "PATCH", "DELETE"])

    async def delete(self, request: web.Request, kind: str, namespace: str, name: str) -> Obj:
        obj = self.store.get(kind, namespace, name)
        options = await self._body(request) or {}
        grace_text = request.query.get("gracePeriodSeconds")
        grace = int(grace_text) if grace_text is not None else options.get("gracePeriodSeconds")
        if kind == "pods" and self.kubelet is not None and obj["spec"].get("nodeName"):
            grace = obj["spec"].get("terminationGracePeriodSeconds", 30) if grace is None else grace
            if grace > 0:
                if "deletionTimestamp" in obj["metadata"]:
                    return obj
                meta = {"deletionTimestamp": now(), "deletionGracePeriodSeconds": grace}
                marked = self.store.patch(kind, namespace, name, "", {"metadata": meta})
                self.kubelet.terminate(namespace, name, grace)
                return marked
        return self.store.delete(kind, namespace, name)

    async def watch(
        self, request: web.Request, kind: str, namespace: str | None, matches: Any
    ) -> web.StreamResponse:
        query = request.query
        timeout = float(query.get("timeoutSeconds") or 1800)
        since = query.get("resourceVersion") or "0"
        watcher = self.store.watch(kind, namespace, matches)
        try:
            if since == "0":
                backlog = [
                    Change(self.store.rv, "ADDED", kind, obj)
                    for obj in self.store.list(kind, namespace, matches)
                ]
            else:
                backlog = [
                    change
                    for change in self.store.changes_since(int(since))
                    if change.kind == kind and self.store._visible(watcher, change.obj)
                ]
        except ApiError as e:
            self.store.unwatch(watcher)
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            await response.write(
                json.dumps({"type": "ERROR", "object": e.status()}).encode() + b"\n"
            )
            await response.write_eof()
            return response
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        sent = max([int(since) if since != "0" else self.store.rv] + [c.rv for c in backlog])
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            for change in backlog:
                await response.write(self._event(change))
            while True:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    change = await asyncio.wait_for(watcher.queue.get(), remaining)
                except TimeoutError:
                    break
                if change is None or change.rv <= sent:
                    continue
                await response.write(self._event(change))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unwatch(watcher)
        try:
            await response.write_eof()
        except ConnectionResetError:
            pass
        return response

    @staticmethod
    def _event(change: Change) -> bytes:
        return json.dumps({"type": change.type, "object": change.obj}).encode() + b"\n"

    async def log(self, request: web.Request) -> web.Response:
        self.count(request, "get", "pods/log")
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        try:
            self.store.get("pods", namespace, name)
        except ApiError as e:
            return _status(e)
        text = self.kubelet.logs(namespace, name) if self.kubelet else ""
        tail = request.query.get("tailLines")
        if tail is not None:
            text = "".join(text.splitlines(keepends=True)[-int(tail) :])
        return web.Response(text=text)

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response(KUBE_VERSION)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": [[c, v, r, n] for (c, v, r), n in sorted(self.requests.items())],
                "timeline": self.timeline,
                "watchers": len(self.store.watchers),
                "timings": [
                    {"namespace": ns, "pod": name, **timing}
                    for (ns, name), timing in (self.kubelet.timings if self.kubelet else {}).items()
                ],
                "objects": {
                    kind: len(self.store.list(kind, None, lambda o: True)) for kind in KINDS
                },
            }
        )


def make_app(
    store: Store, kubelet: Kubelet | None = None, validate: str | None = "1.30"
) -> web.Application:
    api = Api(store, kubelet, validate)
    app = web.Application()
    app["api"] = api
    app.router.add_get("/version", api.version)
    app.router.add_get("/_standin/requests", api.stats)
    app.router.add_get("/api/v1/namespaces/{namespace}/pods/{name}/log", api.log)
    app.router.add_route("*", "/api/v1/namespaces/{name}", api.item)
    app.router.add_route("*", "/api/v1/{kind}", api.collection)
    app.router.add_route("*", "/api/v1/namespaces/{namespace}/{kind}", api.collection)
    app.router.add_route("*", "/api/v1/namespaces/{namespace}/{kind}/{name}", api.item)
    return app
