"""The deployment files hang together and hold the cluster's security rules, checked on what
`kubectl kustomize` builds (the objects a cluster would get): every overlay builds and passes
`kubernetes-validate --strict`; every pod runs with seccomp RuntimeDefault, a read-only root file
system, no privilege escalation, no capabilities (capture: NET_RAW alone) and resources; every
namespace labelled Pod Security "restricted" holds only pods that the restricted profile admits
(the profile's rules are written out below); NetworkPolicies deny by default and admit each port of
each workload; every process gets its mTLS Secret, from cert-manager or from `wiretide.cli.certs`."""

from __future__ import annotations

import base64
import functools
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from wiretide.cli import certs

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("capture", "dissector", "resolver", "tracer", "agents", "gateway")
WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet", "Job")
OVERLAYS = ("k8s/base", "k8s/overlays/local", "k8s/overlays/production", "k8s/overlays/ebpf")
CAPTURE_NS, CORE_NS = "wiretide-capture", "wiretide"
Doc = dict[str, Any]


def kubectl() -> str:
    found = shutil.which("kubectl") or shutil.which("kubectl", path=str(Path(sys.executable).parent))
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl (kustomize) is needed to build k8s/")
        pytest.skip("kubectl not installed")
    return found


@functools.cache
def build(path: str) -> tuple[Doc, ...]:
    out = subprocess.run([kubectl(), "kustomize", str(ROOT / path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def of_kind(docs: tuple[Doc, ...], *kinds: str) -> list[Doc]:
    return [d for d in docs if d["kind"] in kinds]


def workloads(path: str = "k8s/base") -> dict[str, Doc]:
    return {d["metadata"]["name"]: d for d in of_kind(build(path), *WORKLOADS)}


def pod(w: Doc) -> Doc:
    spec: Doc = w["spec"]["template"]["spec"]
    return spec


def containers(spec: Doc) -> Iterator[Doc]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key, [])


def namespace_of(d: Doc) -> str:
    return str(d["metadata"].get("namespace", ""))


# -- building and validating ------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_builds_with_all_six_services_and_nats(overlay: str) -> None:
    store = {"mongo", "mongo-init"} if overlay == "k8s/overlays/production" else set()
    assert set(workloads(overlay)) == {*SERVICES, "nats", *store}


def test_production_runs_two_gateways_on_the_mongodb_replica_set() -> None:
    docs = build("k8s/overlays/production")
    assert workloads("k8s/overlays/production")["gateway"]["spec"]["replicas"] == 2
    [cm] = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "wiretide-gateway"]
    url = cm["data"]["WIRETIDE_GATEWAY_MONGO_URL"]
    assert "replicaSet=rs0" in url and url.count("mongo-") == 3
    mongo = workloads("k8s/overlays/production")["mongo"]
    assert mongo["spec"]["replicas"] == 3
    assert "--replSet=rs0" in pod(mongo)["containers"][0]["args"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_tracer_replica_has_its_share_and_a_name_its_callers_ask(overlay: str) -> None:
    # Each replica holds its share of the calls (the ordinal of its pod name, as many shares as
    # replicas); the gateway and the agents ask every replica by its name in the headless Service.
    tracer = workloads(overlay)["tracer"]
    assert tracer["kind"] == "StatefulSet" and tracer["spec"]["serviceName"] == "tracer"
    replicas = tracer["spec"]["replicas"]
    assert replicas == (2 if overlay == "k8s/overlays/production" else 1)
    env = settings_env(overlay, "tracer")
    assert env["WIRETIDE_TRACER_PARTITIONS"] == str(replicas) and env["WIRETIDE_TRACER_PARTITION"] == "auto"
    assert env["WIRETIDE_TRACER_GRPC"] == "0.0.0.0:50054"
    [service] = [d for d in of_kind(build(overlay), "Service") if d["metadata"]["name"] == "tracer"]
    assert service["spec"]["clusterIP"] == "None"
    every = ",".join(f"tracer-{i}.tracer.{CORE_NS}:50054" for i in range(replicas))
    for caller in ("gateway", "agents"):
        assert settings_env(overlay, caller)["WIRETIDE_TRACER_GRPC"] == every, caller


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_passes_kubernetes_validate_strict(overlay: str, tmp_path: Path) -> None:
    built = tmp_path / "built.yaml"
    built.write_text(yaml.safe_dump_all(build(overlay)))
    tool = Path(sys.executable).parent / "kubernetes-validate"
    out = subprocess.run([str(tool), "--strict", "--quiet", str(built)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # Only cert-manager's kinds have no schema in the tool; everything else was validated.
    unknown = [line for line in out.stdout.splitlines() if "Couldn't find schema" in line]
    assert all("cert-manager.io/v1" in line for line in unknown), unknown


def test_no_secret_values_are_committed() -> None:
    for overlay in OVERLAYS:
        assert not of_kind(build(overlay), "Secret")


# -- pods ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_has_seccomp_runtime_default_and_a_read_only_root(overlay: str) -> None:
    for name, w in workloads(overlay).items():
        spec = pod(w)
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for c in containers(spec):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc.get("privileged") is not True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert "seccompProfile" not in sc or sc["seccompProfile"]["type"] == "RuntimeDefault"


def test_every_container_has_probes_and_cpu_and_memory_requests_and_limits() -> None:
    for name, w in workloads().items():
        for c in containers(pod(w)):
            assert "readinessProbe" in c and "livenessProbe" in c, name
            for bound in ("requests", "limits"):
                assert set(c["resources"][bound]) == {"cpu", "memory"}, (name, bound)


def test_writable_paths_are_volumes_beside_the_read_only_root() -> None:
    for name, w in workloads().items():
        spec = pod(w)
        claims = {v["metadata"]["name"] for v in w["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in containers(spec):
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            for m in mounts.values():
                assert m["name"] in volumes or m["name"] in claims, (name, m)
            if name != "nats":  # the nats image writes only its JetStream store (/data)
                assert volumes[mounts["/tmp"]["name"]].get("emptyDir") is not None, name
                assert "/var/lib/wiretide" in mounts, name


def test_capture_alone_runs_as_root_with_net_raw_and_no_host_pid_in_the_base() -> None:
    for overlay in ("k8s/base", "k8s/overlays/local", "k8s/overlays/production"):
        for name, w in workloads(overlay).items():
            spec = pod(w)
            added = {
                cap for c in containers(spec) for cap in c["securityContext"]["capabilities"].get("add", [])
            }
            assert not spec.get("hostPID") and not spec.get("hostIPC"), name
            if name == "capture":
                assert added == {"NET_RAW"}
                assert spec["hostNetwork"] is True
                assert spec["securityContext"]["runAsUser"] == 0
            else:
                assert not added, name
                assert spec["securityContext"]["runAsNonRoot"] is True, name
                assert spec["securityContext"]["runAsUser"] != 0, name
                assert not spec.get("hostNetwork"), name


def test_the_ebpf_overlay_adds_host_pid_and_the_ebpf_capabilities_to_capture_only() -> None:
    base, ebpf = workloads(), workloads("k8s/overlays/ebpf")
    capture = pod(ebpf["capture"])
    assert capture["hostPID"] is True
    added = set(capture["containers"][0]["securityContext"]["capabilities"]["add"])
    assert added == {"NET_RAW", "BPF", "PERFMON", "SYS_RESOURCE"}
    assert {v["name"] for v in capture["volumes"]} - {v["name"] for v in pod(base["capture"])["volumes"]} == {
        "sys"
    }
    for name in set(SERVICES) - {"capture"} | {"nats"}:
        assert ebpf[name] == base[name]


def test_node_names_come_from_the_downward_api() -> None:
    for name, w in workloads().items():
        if name in ("nats", "mongo", "mongo-init"):  # not Wiretide processes
            continue
        env = {e["name"]: e for e in w["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["WIRETIDE_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


# -- Pod Security -------------------------------------------------------------------------------

# The "restricted" profile of the Pod Security Standards (Kubernetes 1.30+), rule by rule; the
# baseline rules it includes come first.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(spec: Doc, annotations: dict[str, str]) -> list[str]:
    """What keeps a pod spec out of Pod Security "restricted" (empty: admitted)."""
    bad: list[str] = []
    psc = spec.get("securityContext", {})
    # baseline: host namespaces, privileged, capabilities, hostPath, host ports, AppArmor, SELinux,
    # /proc mount, seccomp, sysctls, Windows host process
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(host):
            bad.append(host)
    if psc.get("windowsOptions", {}).get("hostProcess"):
        bad.append("hostProcess")
    for key, value in annotations.items():
        if (
            key.startswith("container.apparmor.security.beta.kubernetes.io/")
            and value not in ("runtime/default",)
            and not value.startswith("localhost/")
        ):
            bad.append(f"apparmor {value}")
    for sysctl in psc.get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            bad.append(f"sysctl {sysctl['name']}")
    for v in spec.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            bad.append(f"volume {v['name']}: {sorted(kinds)}")
    pod_seccomp = psc.get("seccompProfile", {}).get("type")
    pod_non_root = psc.get("runAsNonRoot")
    if psc.get("runAsUser") == 0:
        bad.append("pod runAsUser 0")
    for se in [psc.get("seLinuxOptions", {})]:
        if se.get("type", "") not in SELINUX_TYPES or se.get("user") or se.get("role"):
            bad.append("pod seLinuxOptions")
    if psc.get("appArmorProfile", {}).get("type") == "Unconfined":
        bad.append("pod appArmorProfile Unconfined")
    for c in containers(spec):
        sc = c.get("securityContext", {})
        who = c["name"]
        if sc.get("privileged"):
            bad.append(f"{who}: privileged")
        if sc.get("windowsOptions", {}).get("hostProcess"):
            bad.append(f"{who}: hostProcess")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            bad.append(f"{who}: hostPort")
        se = sc.get("seLinuxOptions", {})
        if se.get("type", "") not in SELINUX_TYPES or se.get("user") or se.get("role"):
            bad.append(f"{who}: seLinuxOptions")
        if sc.get("procMount", "Default") != "Default":
            bad.append(f"{who}: procMount")
        if sc.get("appArmorProfile", {}).get("type") == "Unconfined":
            bad.append(f"{who}: appArmorProfile Unconfined")
        # restricted: privilege escalation, non-root, seccomp, capabilities
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{who}: allowPrivilegeEscalation not false")
        if sc.get("runAsNonRoot", pod_non_root) is not True:
            bad.append(f"{who}: runAsNonRoot not true")
        if sc.get("runAsUser") == 0:
            bad.append(f"{who}: runAsUser 0")
        seccomp = sc.get("seccompProfile", {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{who}: seccomp {seccomp}")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            bad.append(f"{who}: capabilities not dropped")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            bad.append(f"{who}: adds {caps['add']}")
    return bad


def test_the_restricted_check_rejects_what_the_profile_forbids() -> None:
    ok = pod(workloads()["gateway"])
    assert restricted_violations(ok, {}) == []
    assert "hostNetwork" in restricted_violations(pod(workloads()["capture"]), {})
    for field, value, expect in [
        ("runAsNonRoot", False, "runAsNonRoot"),
        ("seccompProfile", {"type": "Unconfined"}, "seccomp"),
    ]:
        spec = {**ok, "securityContext": {**ok["securityContext"], field: value}}
        assert any(expect in v for v in restricted_violations(spec, {})), field
    c = ok["containers"][0]
    for patch, expect in [
        ({"capabilities": {"drop": ["ALL"], "add": ["NET_RAW"]}}, "adds"),
        ({"allowPrivilegeEscalation": True}, "allowPrivilegeEscalation"),
        ({"capabilities": {}}, "not dropped"),
    ]:
        spec = {**ok, "containers": [{**c, "securityContext": {**c["securityContext"], **patch}}]}
        assert any(expect in v for v in restricted_violations(spec, {})), patch
    spec = {**ok, "volumes": [*ok["volumes"], {"name": "h", "hostPath": {"path": "/"}}]}
    assert any("hostPath" in v for v in restricted_violations(spec, {}))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_namespace_labelled_restricted_admits_each_of_its_pods(overlay: str) -> None:
    docs = build(overlay)
    levels = {
        d["metadata"]["name"]: d["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        for d in of_kind(docs, "Namespace")
    }
    assert levels == {CORE_NS: "restricted", CAPTURE_NS: "privileged"}
    for w in of_kind(docs, *WORKLOADS):
        ns = namespace_of(w)
        assert ns in levels, w["metadata"]["name"]
        if levels[ns] == "restricted":
            tmpl = w["spec"]["template"]
            assert restricted_violations(tmpl["spec"], tmpl["metadata"].get("annotations", {})) == [], w[
                "metadata"
            ]["name"]
    # "privileged" holds capture and nothing else.
    privileged = [
        w["metadata"]["name"] for w in of_kind(docs, *WORKLOADS) if levels[namespace_of(w)] != "restricted"
    ]
    assert privileged == ["capture"]


# -- NetworkPolicies ----------------------------------------------------------------------------


def selects(policy: Doc, labels: dict[str, str]) -> bool:
    sel = policy["spec"]["podSelector"]
    if any(labels.get(k) != v for k, v in sel.get("matchLabels", {}).items()):
        return False
    for e in sel.get("matchExpressions", []):
        if e["operator"] == "In" and labels.get(e["key"]) not in e["values"]:
            return False
    return True


def admitted_ports(policy: Doc, container: Doc) -> set[int]:
    by_name = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    out: set[int] = set()
    for rule in policy["spec"].get("ingress", []):
        for p in rule.get("ports", []):
            port = p["port"]
            out.add(by_name.get(port, -1) if isinstance(port, str) else port)
    return out


def policies(ns: str) -> list[Doc]:
    return [p for p in of_kind(build("k8s/base"), "NetworkPolicy") if namespace_of(p) == ns]


def test_each_namespace_denies_by_default_and_lets_pods_resolve_names() -> None:
    for ns in (CORE_NS, CAPTURE_NS):
        deny = [p for p in policies(ns) if p["spec"]["podSelector"] == {} and "ingress" not in p["spec"]]
        assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}, ns
        for w in workloads().values():
            if namespace_of(w) != ns:
                continue
            labels = w["spec"]["template"]["metadata"]["labels"]
            egress = [r for p in policies(ns) if selects(p, labels) for r in p["spec"].get("egress", [])]
            assert any({"port": 53, "protocol": "UDP"} in r.get("ports", []) for r in egress), ns


def test_network_policies_admit_every_port_of_every_workload_and_nothing_else() -> None:
    for name, w in workloads().items():
        labels = w["spec"]["template"]["metadata"]["labels"]
        mine = [p for p in policies(namespace_of(w)) if selects(p, labels) and p["spec"]["podSelector"]]
        assert mine, f"no NetworkPolicy selects {name}"
        c = pod(w)["containers"][0]
        admitted = set().union(
            *(admitted_ports(p, c) for p in policies(namespace_of(w)) if selects(p, labels))
        )
        declared = {p["containerPort"] for p in c["ports"]}
        assert admitted >= declared - {6222, 8222} or name == "nats", (name, declared - admitted)
        assert -1 not in admitted, f"{name}: a policy names a port the pod does not declare"


def test_capture_grpc_is_admitted_only_from_wiretides_namespace_and_reached_by_the_gateway() -> None:
    (rule,) = [
        r
        for p in policies(CAPTURE_NS)
        for r in p["spec"].get("ingress", [])
        if {"port": "grpc", "protocol": "TCP"} in r.get("ports", [])
    ]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": CORE_NS}}}]
    gateway = next(p for p in policies(CORE_NS) if p["metadata"]["name"] == "gateway")
    assert any({"port": 50051, "protocol": "TCP"} in r.get("ports", []) for r in gateway["spec"]["egress"])
    resolver = next(p for p in policies(CORE_NS) if p["metadata"]["name"] == "resolver")
    api = {p["port"] for r in resolver["spec"]["egress"] for p in r.get("ports", [])}
    assert api == {443, 6443}


# -- mTLS and secrets ---------------------------------------------------------------------------


def mounted_secrets(overlay: str = "k8s/base") -> set[tuple[str, str]]:
    return {
        (namespace_of(w), v["secret"]["secretName"])
        for w in workloads(overlay).values()
        for v in pod(w).get("volumes", [])
        if "secret" in v
    }


def test_every_process_mounts_its_own_tls_secret_where_the_config_points() -> None:
    configs = {
        namespace_of(d): d["data"]
        for d in of_kind(build("k8s/base"), "ConfigMap")
        if d["metadata"]["name"] == "wiretide-config"
    }
    assert set(configs) == {CORE_NS, CAPTURE_NS}
    for data in configs.values():
        assert data["WIRETIDE_TLS_CERT"] == "/etc/wiretide/tls/tls.crt"
        assert all(url.startswith("tls://") for url in data["WIRETIDE_NATS_URL"].split(","))
        assert data["WIRETIDE_HEALTH_GRPC"].endswith(":50050")
    for name, w in workloads().items():
        spec = pod(w)
        tls = next(v for v in spec["volumes"] if v["name"] == "tls")
        assert tls["secret"]["secretName"] == f"wiretide-{name}-tls"
        assert oct(tls["secret"]["defaultMode"]) in ("0o400", "0o440")
        if name != "nats":
            mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
            assert mounts["tls"] == "/etc/wiretide/tls"
            assert spec["containers"][0]["readinessProbe"] == {"grpc": {"port": 50050}, "periodSeconds": 5}
    nats_args = pod(workloads()["nats"])["containers"][0]["args"]
    assert "--tlsverify" in nats_args


def test_cert_manager_issues_every_tls_secret_a_pod_mounts_in_its_namespace() -> None:
    docs = build("k8s/overlays/production")
    issued = {(namespace_of(c), c["spec"]["secretName"]) for c in of_kind(docs, "Certificate")}
    wanted = {s for s in mounted_secrets("k8s/overlays/production") if s[1].endswith("-tls")}
    assert wanted <= issued
    for c in of_kind(docs, "Certificate"):
        if c["metadata"]["name"] == "wiretide-ca":
            continue
        name = c["spec"]["secretName"].removeprefix("wiretide-").removesuffix("-tls")
        assert c["spec"]["dnsNames"][0] == name  # what peers check
        assert {"server auth", "client auth"} <= set(c["spec"]["usages"])


def test_the_secret_generator_makes_the_same_tls_secrets() -> None:
    made = {
        (d["metadata"]["namespace"], d["metadata"]["name"])
        for d in yaml.safe_load_all(certs.secrets_yaml(CORE_NS, CAPTURE_NS))
    }
    assert made == {s for s in mounted_secrets() if s[1].endswith("-tls")}


def test_the_gateway_token_and_oidc_settings_come_from_secrets() -> None:
    c = pod(workloads()["gateway"])["containers"][0]
    env = {e["name"]: e for e in c["env"]}
    assert env["WIRETIDE_GATEWAY_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "wiretide-gateway-auth",
        "key": "token",
    }
    assert {"secretRef": {"name": "wiretide-gateway-oidc", "optional": True}} in c["envFrom"]


# -- authentication between services and for users ---------------------------------------------


def settings_env(overlay: str, name: str) -> dict[str, str | None]:
    """Every WIRETIDE_* variable workload `name` gets: its own env (None where it comes from a
    Secret or the downward API) and the ConfigMaps it reads whole."""
    docs = build(overlay)
    w = workloads(overlay)[name]
    maps = {(namespace_of(d), d["metadata"]["name"]): d.get("data", {}) for d in of_kind(docs, "ConfigMap")}
    out: dict[str, str | None] = {}
    for c in pod(w)["containers"]:
        for source in c.get("envFrom", []):
            if "configMapRef" in source:
                out.update(maps[(namespace_of(w), source["configMapRef"]["name"])])
        for e in c.get("env", []):
            out[e["name"]] = e.get("value")
    return {k: v for k, v in out.items() if k.startswith("WIRETIDE_")}


def secret_mounts(w: Doc) -> dict[str, str]:
    """Secret name → the directory the (first) container mounts it at."""
    spec = pod(w)
    by_volume = {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    return {
        by_volume[m["name"]]: m["mountPath"]
        for m in spec["containers"][0].get("volumeMounts", [])
        if m["name"] in by_volume
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_a_pod_is_given_is_a_setting_of_its_service(overlay: str) -> None:
    from wiretide.cli.validate import settings_classes
    from wiretide.common.settings import NOT_SETTINGS, env_names

    classes = settings_classes()
    for name in SERVICES:
        known = env_names([classes[name]]) | set(NOT_SETTINGS)
        unknown = set(settings_env(overlay, name)) - known
        assert not unknown, f"{name} is given variables it does not read: {sorted(unknown)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_grpc_workload_mounts_the_service_token_and_its_tls_secret_where_the_settings_point(
    overlay: str,
) -> None:
    for name, w in workloads(overlay).items():
        if name in ("nats", "mongo", "mongo-init"):  # not Wiretide processes
            continue
        env = settings_env(overlay, name)
        mounts = secret_mounts(w)
        assert f"wiretide-{name}-tls" in mounts, name
        token_file = env["WIRETIDE_AUTH_SERVICE_TOKEN_FILE"]
        assert token_file is not None, name
        directory, _, key = token_file.rpartition("/")
        assert mounts.get("wiretide-service-token") == directory, name
        assert key == certs.SERVICE_TOKEN_KEY, name
        for setting in ("WIRETIDE_TLS_CA", "WIRETIDE_TLS_CERT", "WIRETIDE_TLS_KEY"):
            assert str(env[setting]).startswith(mounts[f"wiretide-{name}-tls"] + "/"), (name, setting)


def test_the_gateway_reads_users_tokens_from_a_secret_and_answers_the_names_it_is_reached_by() -> None:
    w = workloads()["gateway"]
    env = settings_env("k8s/base", "gateway")
    tokens_file = env["WIRETIDE_AUTH_TOKENS_FILE"]
    assert tokens_file is not None
    directory, _, _key = tokens_file.rpartition("/")
    assert secret_mounts(w)["wiretide-gateway-tokens"] == directory
    # Mounted whole (no subPath): an updated Secret reaches the file, and the gateway re-reads it.
    assert not any("subPath" in m for m in pod(w)["containers"][0]["volumeMounts"])
    hosts = set(str(env["WIRETIDE_AUTH_ALLOWED_HOSTS"]).split(","))
    assert {"gateway", "gateway.wiretide", "gateway.wiretide.svc"} <= hosts


def test_the_secret_generator_makes_the_service_token_for_every_namespace_that_mounts_it() -> None:
    made = [d for d in yaml.safe_load_all(certs.service_token_yaml(CORE_NS, CAPTURE_NS)) if d]
    assert {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in made} == {
        s for s in mounted_secrets() if s[1] == "wiretide-service-token"
    }
    tokens = {base64.b64decode(d["data"][certs.SERVICE_TOKEN_KEY]) for d in made}
    assert len(tokens) == 1  # the same token on both sides
    assert len(tokens.pop()) >= 32
    again = [d for d in yaml.safe_load_all(certs.service_token_yaml(CORE_NS, CAPTURE_NS)) if d]
    assert again[0]["data"] != made[0]["data"]  # a fresh one each run


# -- skaffold -----------------------------------------------------------------------------------


def docs_of(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_skaffold_requires_one_config_per_service_each_building_its_image() -> None:
    root = docs_of(ROOT / "skaffold.yaml")[0]
    required = [r["path"] for r in root["requires"]]
    assert required == [f"services/{s}/skaffold.yaml" for s in SERVICES]
    images = {c["image"].split(":")[0] for w in workloads().values() for c in pod(w)["containers"]}
    for s in SERVICES:
        cfg = docs_of(ROOT / f"services/{s}/skaffold.yaml")[0]
        assert cfg["metadata"]["name"] == s
        art = cfg["build"]["artifacts"][0]
        dockerfile = ROOT / art["docker"]["dockerfile"]
        assert dockerfile.exists()
        assert f"wiretide.{s}" in dockerfile.read_text()
        assert art["image"] in images


def key(doc: Doc) -> tuple[str, str, str]:
    return doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"]


def test_skaffold_run_applies_every_object_of_the_base_exactly_once() -> None:
    root = docs_of(ROOT / "skaffold.yaml")[0]
    paths = list(root["manifests"]["kustomize"]["paths"])
    for s in SERVICES:
        cfg = docs_of(ROOT / f"services/{s}/skaffold.yaml")[0]
        paths += [
            str((ROOT / f"services/{s}" / p).resolve().relative_to(ROOT))
            for p in cfg["manifests"]["kustomize"]["paths"]
        ]
    applied = [key(d) for p in paths for d in build(p)]
    twice = sorted({k for k in applied if applied.count(k) > 1})
    assert twice == [], f"applied more than once by `skaffold run`: {twice}"
    assert set(applied) == {key(d) for d in build("k8s/base")}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_wiretide_image_is_tagged_with_the_version_and_pulled_only_if_absent(overlay: str) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for w in of_kind(build(overlay), *WORKLOADS):
        for c in pod(w)["containers"]:
            if c["image"].startswith("wiretide-"):
                assert c["image"].endswith(f":{version}"), (w["metadata"]["name"], c["image"])
                assert c.get("imagePullPolicy") == "IfNotPresent", (w["metadata"]["name"], c)


# Every gRPC (and HTTP) call one Wiretide service makes to another: caller, callee, the callee's port.
CALLS = [
    ("capture", "dissector", 50052),
    ("dissector", "resolver", 50053),
    ("gateway", "capture", 50051),
    ("gateway", "dissector", 50052),
    ("gateway", "tracer", 50054),
    ("gateway", "agents", 50055),
    ("agents", "capture", 50051),
    ("agents", "tracer", 50054),
    ("agents", "gateway", 8899),
]
NODE_NETWORK = "10.0.0.0/8"  # where host-network pods' traffic comes from (capture's)


def peer_matches(peer: Doc, labels: dict[str, str], ns: str, own_ns: str, host_network: bool) -> bool:
    if "ipBlock" in peer:
        return host_network and peer["ipBlock"]["cidr"] == NODE_NETWORK
    if host_network:
        return False
    if "namespaceSelector" in peer:
        wanted = peer["namespaceSelector"].get("matchLabels", {})
        if wanted.get("kubernetes.io/metadata.name", ns) != ns:
            return False
    elif ns != own_ns:
        return False
    return "podSelector" not in peer or selects({"spec": {"podSelector": peer["podSelector"]}}, labels)


def admits(
    rules: list[Doc], port: int, names: dict[str, int], peer: tuple[dict[str, str], str, str, bool]
) -> bool:
    for rule in rules:
        ports = {
            names.get(p["port"], -1) if isinstance(p["port"], str) else p["port"]
            for p in rule.get("ports", [])
        }
        peers = rule.get("to", rule.get("from"))
        if (not ports or port in ports) and (peers is None or any(peer_matches(p, *peer) for p in peers)):
            return True
    return False


@pytest.mark.parametrize(("caller", "callee", "port"), CALLS)
def test_network_policies_let_every_service_reach_the_peers_it_calls(
    caller: str, callee: str, port: int
) -> None:
    built = workloads()
    c, d = built[caller], built[callee]
    c_labels, d_labels = (w["spec"]["template"]["metadata"]["labels"] for w in (c, d))
    c_ns, d_ns = namespace_of(c), namespace_of(d)
    d_ports = {p["name"]: p["containerPort"] for p in pod(d)["containers"][0]["ports"]}
    egress = [r for p in policies(c_ns) if selects(p, c_labels) for r in p["spec"].get("egress", [])]
    ingress = [r for p in policies(d_ns) if selects(p, d_labels) for r in p["spec"].get("ingress", [])]
    callee_on_host = bool(pod(d).get("hostNetwork"))
    caller_on_host = bool(pod(c).get("hostNetwork"))
    assert admits(egress, port, d_ports, (d_labels, d_ns, c_ns, callee_on_host)), (
        f"{caller} may not call {callee}"
    )
    assert admits(ingress, port, d_ports, (c_labels, c_ns, d_ns, caller_on_host)), (
        f"{callee} refuses {caller}"
    )


def test_a_service_token_never_starts_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    """`wiretide … --token $TOKEN` would read a leading `-` as an option (1 token in 64 did)."""
    drawn = iter(["-starts-with-a-dash", "_fine-token"])
    monkeypatch.setattr(certs.secrets, "token_urlsafe", lambda _n: next(drawn))
    assert certs.new_service_token() == "_fine-token"
