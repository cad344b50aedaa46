"""The MongoDB component speaks TLS only, checked on what `kubectl kustomize` builds for production:
mongod requires TLS with the Secret's certificate, the gateways' URL asks for TLS and names a CA file
they mount from the same Secret, the init Job and the probe use TLS, the certificate names every
host the clients dial, and the start script joins the certificate and key and has mongod reload
them when the Secret changes (run here with stand-ins for mongod and mongosh)."""

from __future__ import annotations

import fnmatch
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.helpers.wait import wait_for
from tests.unit.test_deploy_manifests import build, of_kind, pod, workloads
from wiretide.gateway.store.mongo_url import MongoUrl

PRODUCTION = "k8s/overlays/production"
SECRET = "wiretide-mongo-tls"
Doc = dict[str, Any]


def mounts(spec: Doc, container: Doc) -> dict[str, Doc]:
    """mountPath → the volume mounted there."""
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    return {
        m["mountPath"]: volumes.get(m["name"], {}) for m in container.get("volumeMounts", [])
    }  # claims: {}


def mongod() -> tuple[Doc, Doc]:
    spec = pod(workloads(PRODUCTION)["mongo"])
    return spec, spec["containers"][0]


def test_mongod_requires_tls_with_the_secrets_certificate() -> None:
    spec, c = mongod()
    args = dict(a.split("=", 1) if "=" in a else (a, "") for a in c["args"])
    assert args["--tlsMode"] == "requireTLS"
    tls_dir = mounts(spec, c)["/etc/mongo/tls"]
    assert tls_dir["secret"]["secretName"] == SECRET
    assert args["--tlsCAFile"] == "/etc/mongo/tls/ca.crt"
    # The joined certificate and key live in memory, beside the read-only root.
    assert args["--tlsCertificateKeyFile"].startswith("/tmp/")
    assert mounts(spec, c)["/tmp"]["emptyDir"]["medium"] == "Memory"
    probe = c["readinessProbe"]["exec"]["command"]
    assert "--tls" in probe and "--tlsCAFile=/etc/mongo/tls/ca.crt" in probe


def test_the_gateways_url_asks_for_tls_with_a_ca_from_the_same_secret() -> None:
    docs = build(PRODUCTION)
    [cm] = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"] == "wiretide-gateway"]
    url = MongoUrl.parse(cm["data"]["WIRETIDE_GATEWAY_MONGO_URL"])
    assert url.tls
    ca_file = url.option("tlsCAFile")
    assert ca_file is not None
    spec = pod(workloads(PRODUCTION)["gateway"])
    volume = mounts(spec, spec["containers"][0])[str(Path(ca_file).parent)]
    assert volume["secret"]["secretName"] == SECRET
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": Path(ca_file).name}]  # never the key
    # Every host the gateway dials is named by the certificate cert-manager issues.
    [cert] = [d for d in of_kind(docs, "Certificate") if d["spec"]["secretName"] == SECRET]
    for host in url.hosts:
        name = host.rpartition(":")[0]
        assert any(fnmatch.fnmatchcase(name, pattern) for pattern in cert["spec"]["dnsNames"]), name
    assert "localhost" in cert["spec"]["dnsNames"]  # the probe's and the reload's host
    # The init Job checks the members the same way and holds only the CA.
    job = pod(workloads(PRODUCTION)["mongo-init"])
    command = job["containers"][0]["command"]
    assert "--tls" in command and "--tlsCAFile=/etc/mongo/tls/ca.crt" in command
    assert mounts(job, job["containers"][0])["/etc/mongo/tls"]["secret"]["items"] == [
        {"key": "ca.crt", "path": "ca.crt"}
    ]


def test_the_start_script_joins_the_files_and_has_mongod_reload_them_when_they_change(tmp_path: Path) -> None:
    _spec, c = mongod()
    tls, out, bin_dir = tmp_path / "tls", tmp_path / "out", tmp_path / "bin"
    for d in (tls, bin_dir):
        d.mkdir()
    (tls / "ca.crt").write_text("CA\n")
    (tls / "tls.crt").write_text("CERT-1\n")
    (tls / "tls.key").write_text("KEY-1\n")
    calls = tmp_path / "calls"
    # Stand-ins: mongod records its arguments and stays up; mongosh records that it was called.
    (bin_dir / "mongod").write_text(f'#!/bin/sh\necho "$*" > {calls}.mongod\nexec sleep 300\n')
    (bin_dir / "mongosh").write_text(f'#!/bin/sh\necho "$*" >> {calls}.mongosh\n')
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    script = (
        c["command"][2]
        .replace("/etc/mongo/tls", str(tls))
        .replace("/tmp/tls", str(out))
        .replace("sleep 60", "sleep 0.2")  # the Secret check's period, shortened for the test
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.Popen(
        [*c["command"][:2], script, *c["command"][3:], *c["args"]],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        joined = out / "mongod.pem"
        wait_for("mongod started", lambda: Path(f"{calls}.mongod").exists())
        assert Path(f"{calls}.mongod").read_text().split() == c["args"]
        assert joined.read_text() == "CERT-1\nKEY-1\n"
        assert oct(joined.stat().st_mode & 0o777) == "0o600"
        assert not Path(f"{calls}.mongosh").exists()  # nothing changed: no reload
        (tls / "tls.crt").write_text("CERT-2\n")
        (tls / "tls.key").write_text("KEY-2\n")
        wait_for("the reload", lambda: Path(f"{calls}.mongosh").exists())
        assert joined.read_text() == "CERT-2\nKEY-2\n"
        assert "rotateCertificates" in Path(f"{calls}.mongosh").read_text()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_the_component_files_parse() -> None:
    root = Path(__file__).resolve().parents[2] / "k8s/components/mongodb"
    for path in root.rglob("*.yaml"):
        assert list(yaml.safe_load_all(path.read_text())), path
