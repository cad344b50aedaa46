"""A small Kubernetes API emulator: the list/watch/Lease surface that the official client uses.

No real API server runs on the machines where Wiretide is developed, so the resolver's Kubernetes
path is exercised against this instead: HTTP/1.1 on loopback, objects built from the client's own
models and serialised the way the client would send them, one cluster-wide resourceVersion counter,
paged lists (`limit`/`continue`), chunked watch streams with bookmarks, `410 Gone` for a
resourceVersion older than the kept history, and knobs to cut watches or refuse every request.

Rule: every change gets the next resourceVersion and lands in the history that watches replay;
a watch never sees an event twice and never misses one it asked for — or it is told 410.
"""

from __future__ import annotations

import bisect
import contextlib
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import orjson
from kubernetes import client

# Watch events kept for replay; older resourceVersions get 410 Gone, as on a compacted etcd.
HISTORY_MAX: Final = 100_000
# How often an idle watch that asked for bookmarks gets one.
BOOKMARK_EVERY_S: Final = 1.0
# Granularity of a watch's wait for new events (it is woken at once on a change).
WAIT_SLICE_S: Final = 0.5

_serializer = client.ApiClient()


@dataclass(frozen=True, slots=True)
class Resource:
    kind: str
    group_path: str  # "/api/v1" or "/apis/<group>/<version>"
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return "v1" if self.group_path == "/api/v1" else self.group_path.removeprefix("/apis/")


RESOURCES: Final = (
    Resource("Pod", "/api/v1", "pods", True),
    Resource("Service", "/api/v1", "services", True),
    Resource("Node", "/api/v1", "nodes", False),
    Resource("Namespace", "/api/v1", "namespaces", False),
    Resource("ReplicaSet", "/apis/apps/v1", "replicasets", True),
    Resource("EndpointSlice", "/apis/discovery.k8s.io/v1", "endpointslices", True),
    Resource("Lease", "/apis/coordination.k8s.io/v1", "leases", True),
)
BY_PLURAL: Final = {(r.group_path, r.plural): r for r in RESOURCES}
_PATH: Final = re.compile(
    r"^(?P<group>/api/v1|/apis/[^/]+/[^/]+)(?:/namespaces/(?P<ns>[^/]+))?/(?P<plural>[a-z]+)(?:/(?P<name>[^/]+))?$"
)


def to_json(model: Any) -> dict[str, Any]:
    """A client model as the API would send it (camelCase keys, RFC 3339 times)."""
    doc: dict[str, Any] = _serializer.sanitize_for_serialization(model)  # type: ignore[no-untyped-call]
    return doc


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return to_json(
        client.V1Status(
            api_version="v1", kind="Status", status="Failure", code=code, reason=reason, message=message
        )
    )


class KubeApi:
    """The emulator's state and its HTTP server. Thread-safe; start() binds 127.0.0.1:<free port>."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, history_max: int = HISTORY_MAX) -> None:
        self.rv = 1
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (kind, ns, name) → object
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []  # (rv, kind, type, object)
        self.history_max = history_max
        self.oldest_rv = 1  # watches from below this get 410
        self.down = False
        self.requests: list[tuple[str, str]] = []  # (method, path?query)
        # Every other kind (Deployments, ConfigMaps, RBAC…), as `wiretide tap` applies them: by
        # (group path, plural, namespace, name); kept whole, not watched.
        self.generic: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        # Workloads applied become ready at once, like a cluster with room and pulled images; False
        # leaves them unready until `make_ready` (a test of waiting and progress).
        self.auto_ready = True
        self._generation = 0  # bumped to cut every open watch
        self._pages: dict[tuple[str, str | None], tuple[int, list[dict[str, Any]]]] = {}  # paged lists
        self._cond = threading.Condition()
        self._server = _QuietServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> KubeApi:
        self._thread = threading.Thread(target=self._server.serve_forever, name="kubeapi", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.cut_watches()
        self._server.shutdown()
        self._server.server_close()

    def write_kubeconfig(self, path: Path, token: str = "wiretide-emulator") -> Path:
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": token}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator"}}],
            "current-context": "emulator",
        }
        path.write_bytes(orjson.dumps(doc))  # JSON is YAML
        return path

    # -- changing the cluster ----------------------------------------------------------------
    def put(self, model_or_doc: Any) -> dict[str, Any]:
        """Create or replace an object (a client model or its JSON); returns it as stored."""
        doc = model_or_doc if isinstance(model_or_doc, dict) else to_json(model_or_doc)
        kind = doc.get("kind") or type(model_or_doc).__name__.removeprefix("V1")
        res = next(r for r in RESOURCES if r.kind == kind)
        doc = {**doc, "kind": res.kind, "apiVersion": res.api_version}
        md = dict(doc.get("metadata") or {})
        if not res.namespaced:
            md.pop("namespace", None)
        with self._cond:
            key = (res.kind, md.get("namespace", ""), md["name"])
            existed = key in self.objects
            if not existed:
                md.setdefault("uid", f"uid-{self.rv + 1}")
                md.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            self.rv += 1
            md["resourceVersion"] = str(self.rv)
            doc["metadata"] = md
            self.objects[key] = doc
            self._record(res.kind, "MODIFIED" if existed else "ADDED", doc)
        return doc

    def delete(
        self, kind: str, namespace: str, name: str, deletion_timestamp: datetime | None = None
    ) -> bool:
        with self._cond:
            doc = self.objects.pop((kind, namespace, name), None)
            if doc is None:
                return False
            self.rv += 1
            md = dict(doc["metadata"])
            md["resourceVersion"] = str(self.rv)
            when = deletion_timestamp or datetime.now(UTC)
            md.setdefault("deletionTimestamp", when.strftime("%Y-%m-%dT%H:%M:%SZ"))
            self._record(kind, "DELETED", {**doc, "metadata": md})
            return True

    def _record(self, kind: str, event: str, doc: dict[str, Any]) -> None:
        self.history.append((self.rv, kind, event, doc))
        if len(self.history) > self.history_max:
            drop = len(self.history) - self.history_max
            self.oldest_rv = self.history[drop - 1][0] + 1
            del self.history[:drop]
        self._cond.notify_all()

    def compact(self) -> None:
        """Forget all history: a watch from any resourceVersion seen so far now gets 410 Gone."""
        with self._cond:
            self.history.clear()
            self.oldest_rv = self.rv + 1
            self._cond.notify_all()

    def cut_watches(self) -> None:
        """Drop every open watch connection mid-stream (no terminating chunk), like a restarting server."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def set_down(self, down: bool) -> None:
        """While down, every request's connection is closed without an answer."""
        self.down = down
        if down:
            self.cut_watches()

    def count(self, fragment: str) -> int:
        return sum(1 for _m, p in list(self.requests) if fragment in p)

    # -- applied objects (server-side apply of any kind) ----------------------------------------
    def apply(
        self, group: str, plural: str, namespace: str, name: str, doc: dict[str, Any]
    ) -> dict[str, Any]:
        """Server-side apply, simplified: the applied fields replace the object's; status is kept."""
        res = BY_PLURAL.get((group, plural))
        if res is not None:  # a kind the resolver watches: through `put`, so watches see it
            with self._cond:
                current = self.objects.get((res.kind, namespace if res.namespaced else "", name))
            md = {**(current or {}).get("metadata", {}), **(doc.get("metadata") or {}), "name": name}
            if res.namespaced:
                md["namespace"] = namespace
            merged = {**(current or {}), **doc, "metadata": md}
            return self.put({**merged, "kind": res.kind})
        with self._cond:
            key = (group, plural, namespace, name)
            current = self.generic.get(key)
            self.rv += 1
            md = {**(current or {}).get("metadata", {}), **(doc.get("metadata") or {}), "name": name}
            if namespace:
                md["namespace"] = namespace
            md.setdefault("uid", f"uid-{self.rv}")
            md["resourceVersion"] = str(self.rv)
            md["generation"] = int(md.get("generation") or 0) + 1
            stored = {**doc, "metadata": md}
            if current is not None and "status" in current:
                stored["status"] = current["status"]
            if self.auto_ready:
                _ready(stored)
            self.generic[key] = stored
            return stored

    def make_ready(self, kind: str, namespace: str, name: str) -> None:
        with self._cond:
            for (_g, _p, ns, n), doc in self.generic.items():
                if doc.get("kind") == kind and ns == namespace and n == name:
                    _ready(doc)

    def find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._cond:
            for (_g, _p, ns, n), doc in self.generic.items():
                if doc.get("kind") == kind and ns == namespace and n == name:
                    return doc
            return self.objects.get((kind, namespace, name))

    def delete_generic(self, group: str, plural: str, namespace: str, name: str) -> bool:
        with self._cond:
            gone = self.generic.pop((group, plural, namespace, name), None) is not None
            if plural == "namespaces" and group == "/api/v1":  # its contents go with it
                for key in [k for k in self.generic if k[2] == name]:
                    del self.generic[key]
            return gone

    # -- answering ----------------------------------------------------------------------------
    def list_items(self, res: Resource, namespace: str | None) -> list[dict[str, Any]]:
        items = [
            d
            for (k, ns, _), d in self.objects.items()
            if k == res.kind and (namespace is None or ns == namespace)
        ]
        items.sort(key=lambda d: (d["metadata"].get("namespace", ""), d["metadata"]["name"]))
        return items


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (a cut watch, a stopping resolver) are normal here, not tracebacks."""


def _handler(api: KubeApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, code: int, doc: dict[str, Any]) -> None:
            body = orjson.dumps(doc)
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _route(self) -> tuple[Resource, str | None, str | None, dict[str, str]] | None:
            api.requests.append((self.command, self.path))
            if api.down:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(2)
                return None
            parts = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
            m = _PATH.match(parts.path)
            if m is None:
                self._send(404, status(404, "NotFound", f"no route {parts.path}"))
                return None
            res = BY_PLURAL.get((m["group"], m["plural"]))
            if res is None:  # any other kind: kept whole (apply, get, list, delete)
                res = Resource("", m["group"], m["plural"], m["ns"] is not None)
            return res, m["ns"], m["name"], query

        def _body(self) -> dict[str, Any]:
            length = int(self.headers.get("Content-Length") or 0)
            doc: dict[str, Any] = orjson.loads(self.rfile.read(length)) if length else {}
            return doc

        def do_PATCH(self) -> None:
            routed = self._route()
            if routed is None:
                return
            res, ns, name, query = routed
            kind = self.headers.get("Content-Type", "")
            if name is None or not kind.startswith("application/apply-patch"):
                self._send(
                    415, status(415, "UnsupportedMediaType", f"only server-side apply here, not {kind}")
                )
                return
            if not query.get("fieldManager"):
                self._send(422, status(422, "Invalid", "fieldManager is required for apply patch"))
                return
            doc = self._body()
            md = doc.get("metadata") or {}
            if md.get("name") not in (None, name):
                self._send(400, status(400, "BadRequest", "the name of the object does not match the URL"))
                return
            stored = api.apply(res.group_path, res.plural, ns or "", name, doc)
            self._send(200, stored)

        def do_DELETE(self) -> None:
            routed = self._route()
            if routed is None:
                return
            res, ns, name, _query = routed
            if name is None:
                self._send(405, status(405, "MethodNotAllowed", "collection delete is not served here"))
                return
            if res.kind:
                gone = api.delete(res.kind, ns or "", name)
                if res.kind == "Namespace":
                    api.delete_generic(res.group_path, res.plural, "", name)
                    for kind, obj_ns, obj_name in [k for k in api.objects if k[1] == name]:
                        api.delete(kind, obj_ns, obj_name)
            else:
                gone = api.delete_generic(res.group_path, res.plural, ns or "", name)
            if not gone:
                self._send(404, status(404, "NotFound", f'{res.plural} "{name}" not found'))
                return
            self._send(200, to_json(client.V1Status(api_version="v1", kind="Status", status="Success")))

        def _generic_get(
            self, res: Resource, ns: str | None, name: str | None, query: dict[str, str]
        ) -> None:
            with api._cond:
                if name is not None:
                    doc = api.generic.get((res.group_path, res.plural, ns or "", name))
                    if doc is None:
                        self._send(404, status(404, "NotFound", f'{res.plural} "{name}" not found'))
                    else:
                        self._send(200, doc)
                    return
                wanted = _selector(query.get("labelSelector", ""))
                items = [
                    d
                    for (g, p, obj_ns, _n), d in sorted(api.generic.items())
                    if g == res.group_path
                    and p == res.plural
                    and (ns is None or obj_ns == ns)
                    and _labels_match(d, wanted)
                ]
                rv = api.rv
            self._send(
                200,
                {
                    "kind": "List",
                    "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(rv)},
                    "items": items,
                },
            )

        def do_GET(self) -> None:
            routed = self._route()
            if routed is None:
                return
            res, ns, name, query = routed
            if not res.kind:
                self._generic_get(res, ns, name, query)
                return
            if name is not None:
                with api._cond:
                    doc = api.objects.get((res.kind, ns or "", name))
                if doc is None:
                    self._send(404, status(404, "NotFound", f'{res.plural} "{name}" not found'))
                else:
                    self._send(200, doc)
            elif query.get("watch") in ("true", "1"):
                self._watch(res, ns, query)
            else:
                self._list(res, ns, query)

        def do_POST(self) -> None:
            routed = self._route()
            if routed is None:
                return
            res, ns, _name, _query = routed
            doc = self._body()
            md = doc.get("metadata") or {}
            with api._cond:
                if (res.kind, ns or "", md.get("name")) in api.objects:
                    self._send(409, status(409, "AlreadyExists", f'{res.plural} "{md.get("name")}" exists'))
                    return
                doc["metadata"] = {**md, "namespace": ns} if res.namespaced else md
                stored = api.put({**doc, "kind": res.kind})
            self._send(201, stored)

        def do_PUT(self) -> None:
            routed = self._route()
            if routed is None:
                return
            res, ns, name, _query = routed
            doc = self._body()
            md = doc.get("metadata") or {}
            with api._cond:
                current = api.objects.get((res.kind, ns or "", name or ""))
                if current is None:
                    self._send(404, status(404, "NotFound", f'{res.plural} "{name}" not found'))
                    return
                if md.get("resourceVersion") != current["metadata"]["resourceVersion"]:
                    self._send(409, status(409, "Conflict", "the object has been modified"))
                    return
                doc["metadata"] = {**current["metadata"], **md}
                stored = api.put({**doc, "kind": res.kind})
            self._send(200, stored)

        def _list(self, res: Resource, ns: str | None, query: dict[str, str]) -> None:
            limit = int(query.get("limit") or 0)
            offset, snapshot_rv = 0, 0
            if query.get("continue"):
                off_text, _, rv_text = query["continue"].partition(":")
                offset, snapshot_rv = int(off_text), int(rv_text)
            with api._cond:
                key = (res.kind, ns)
                if snapshot_rv:
                    cached = api._pages.get(key)
                    if snapshot_rv < api.oldest_rv or cached is None or cached[0] != snapshot_rv:
                        self._send(410, status(410, "Expired", "the continue token is too old"))
                        return
                    rv, items = cached
                else:
                    wanted = _selector(query.get("labelSelector", ""))
                    rv, items = api.rv, [d for d in api.list_items(res, ns) if _labels_match(d, wanted)]
                    api._pages[key] = (rv, items)  # the consistent snapshot later pages are cut from
            page = items[offset : offset + limit] if limit else items[offset:]
            md: dict[str, Any] = {"resourceVersion": str(rv)}
            if limit and offset + limit < len(items):
                md["continue"] = f"{offset + limit}:{rv}"
            self._send(
                200, {"kind": f"{res.kind}List", "apiVersion": res.api_version, "metadata": md, "items": page}
            )

        def _chunk(self, doc: dict[str, Any]) -> None:
            line = orjson.dumps(doc) + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()

        def _watch(self, res: Resource, ns: str | None, query: dict[str, str]) -> None:
            timeout = float(query.get("timeoutSeconds") or 1800)
            bookmarks = query.get("allowWatchBookmarks") in ("true", "1")
            since_text = query.get("resourceVersion") or "0"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            with api._cond:
                generation = api._generation
                since = int(since_text) if since_text.isdigit() else 0
                if since and since < api.oldest_rv - 1:
                    self._chunk(
                        {
                            "type": "ERROR",
                            "object": status(410, "Expired", f"too old resource version: {since}"),
                        }
                    )
                    self._end()
                    return
                pending: list[tuple[str, dict[str, Any]]] = []
                if since == 0:  # "any": start with the current state
                    pending = [("ADDED", d) for d in api.list_items(res, ns)]
                    since = api.rv
            deadline = time.monotonic() + timeout
            last_sent = time.monotonic()
            try:
                while True:
                    for event, doc in pending:
                        self._chunk({"type": event, "object": doc})
                        last_sent = time.monotonic()
                    pending = []
                    with api._cond:
                        while not pending:
                            if api._generation != generation or api.down:
                                self.close_connection = True
                                return  # cut: no terminating chunk
                            if since < api.oldest_rv - 1:
                                gone = status(410, "Expired", "history compacted")
                                self._chunk({"type": "ERROR", "object": gone})
                                break
                            first = bisect.bisect_right(api.history, since, key=lambda h: h[0])
                            fresh = [
                                (rv, e, d)
                                for rv, k, e, d in api.history[first:]
                                if k == res.kind and (ns is None or d["metadata"].get("namespace") == ns)
                            ]
                            if fresh:
                                since = fresh[-1][0]
                                pending = [(e, d) for _rv, e, d in fresh]
                                break
                            since = max(since, api.rv)  # changes, if any, were to other kinds
                            now = time.monotonic()
                            if now >= deadline:
                                break
                            if bookmarks and now - last_sent >= BOOKMARK_EVERY_S:
                                mark = {"resourceVersion": str(since)}
                                pending = [
                                    (
                                        "BOOKMARK",
                                        {"kind": res.kind, "apiVersion": res.api_version, "metadata": mark},
                                    )
                                ]
                                break
                            api._cond.wait(min(WAIT_SLICE_S, deadline - now, BOOKMARK_EVERY_S))
                    if not pending:
                        break
            except OSError:
                self.close_connection = True
                return
            self._end()

        def _end(self) -> None:
            with contextlib.suppress(OSError):
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

    return Handler


def _selector(text: str) -> dict[str, str]:
    """An equality-based label selector (`a=b,c==d`); set-based selectors are not served here."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.replace("==", "=").partition("=")
        out[key.strip()] = value.strip()
    return out


def _labels_match(doc: dict[str, Any], wanted: dict[str, str]) -> bool:
    labels = (doc.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in wanted.items())


def _ready(doc: dict[str, Any]) -> None:
    """The status a scheduler and kubelet would give a workload once all its pods are ready."""
    kind, spec = doc.get("kind"), doc.get("spec") or {}
    generation = (doc.get("metadata") or {}).get("generation", 1)
    if kind in ("Deployment", "StatefulSet"):
        n = int(spec.get("replicas", 1))
        doc["status"] = {
            "observedGeneration": generation,
            "replicas": n,
            "readyReplicas": n,
            "availableReplicas": n,
            "updatedReplicas": n,
        }
    elif kind == "DaemonSet":
        doc["status"] = {
            "observedGeneration": generation,
            "desiredNumberScheduled": 1,
            "currentNumberScheduled": 1,
            "numberReady": 1,
            "numberAvailable": 1,
            "updatedNumberScheduled": 1,
        }


# -- objects built from the client's models ------------------------------------------------------
def _time(ts: datetime | float | None) -> datetime | None:
    if ts is None or isinstance(ts, datetime):
        return ts
    return datetime.fromtimestamp(ts, UTC)


def namespace(name: str) -> client.V1Namespace:
    return client.V1Namespace(api_version="v1", kind="Namespace", metadata=client.V1ObjectMeta(name=name))


def node(name: str, ip: str) -> client.V1Node:
    return client.V1Node(
        api_version="v1",
        kind="Node",
        metadata=client.V1ObjectMeta(name=name, labels={"kubernetes.io/hostname": name}),
        status=client.V1NodeStatus(
            addresses=[client.V1NodeAddress(type="InternalIP", address=ip)] if ip else None
        ),
    )


def pod(
    name: str,
    ns: str,
    ip: str | None,
    *,
    labels: dict[str, str] | None = None,
    node_name: str = "node-1",
    owner: tuple[str, str] | None = None,
    created: datetime | float | None = None,
    host_network: bool = False,
    ports: Iterable[int] = (),
    phase: str = "Running",
    container_ids: Iterable[str] = (),
) -> client.V1Pod:
    """A pod; `container_ids` are its running containers' runtime ids, reported in
    `status.containerStatuses` as containerd reports them ("containerd://<id>")."""
    refs = None
    if owner is not None:
        refs = [
            client.V1OwnerReference(
                api_version="apps/v1", kind=owner[0], name=owner[1], uid=f"uid-{owner[1]}", controller=True
            )
        ]
    return client.V1Pod(
        api_version="v1",
        kind="Pod",
        metadata=client.V1ObjectMeta(
            name=name, namespace=ns, labels=labels, owner_references=refs, creation_timestamp=_time(created)
        ),
        spec=client.V1PodSpec(
            node_name=node_name,
            host_network=host_network or None,
            containers=[
                client.V1Container(
                    name="main",
                    image="wiretide/demo",
                    ports=[client.V1ContainerPort(container_port=p) for p in ports] or None,
                )
            ],
        ),
        status=client.V1PodStatus(
            phase=phase,
            pod_ip=ip,
            pod_ips=[client.V1PodIP(ip=ip)] if ip else None,
            start_time=_time(created),
            container_statuses=[
                client.V1ContainerStatus(
                    name="main" if i == 0 else f"c{i}",
                    image="wiretide/demo",
                    image_id="",
                    ready=True,
                    restart_count=0,
                    container_id=f"containerd://{cid}",
                )
                for i, cid in enumerate(container_ids)
            ]
            or None,
        ),
    )


def replicaset(name: str, ns: str, deployment: str) -> client.V1ReplicaSet:
    return client.V1ReplicaSet(
        api_version="apps/v1",
        kind="ReplicaSet",
        metadata=client.V1ObjectMeta(
            name=name,
            namespace=ns,
            owner_references=[
                client.V1OwnerReference(
                    api_version="apps/v1",
                    kind="Deployment",
                    name=deployment,
                    uid=f"uid-{deployment}",
                    controller=True,
                )
            ],
        ),
        spec=client.V1ReplicaSetSpec(selector=client.V1LabelSelector(match_labels={"app": deployment})),
    )


def service(name: str, ns: str, cluster_ip: str, port: int = 80) -> client.V1Service:
    return client.V1Service(
        api_version="v1",
        kind="Service",
        metadata=client.V1ObjectMeta(name=name, namespace=ns),
        spec=client.V1ServiceSpec(
            cluster_ip=cluster_ip,
            cluster_ips=[cluster_ip],
            selector={"app": name},
            ports=[client.V1ServicePort(port=port, target_port=port)],
        ),
    )


def endpointslice(
    service_name: str, ns: str, pods: Iterable[tuple[str, str]], port: int = 80
) -> client.V1EndpointSlice:
    """EndpointSlice for `service_name` over (pod name, pod ip) pairs."""
    return client.V1EndpointSlice(
        api_version="discovery.k8s.io/v1",
        kind="EndpointSlice",
        address_type="IPv4",
        metadata=client.V1ObjectMeta(
            name=f"{service_name}-slice", namespace=ns, labels={"kubernetes.io/service-name": service_name}
        ),
        endpoints=[
            client.V1Endpoint(
                addresses=[ip],
                target_ref=client.V1ObjectReference(kind="Pod", name=name, namespace=ns),
            )
            for name, ip in pods
        ],
        ports=[client.DiscoveryV1EndpointPort(port=port)],
    )
