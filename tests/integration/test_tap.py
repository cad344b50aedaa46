"""`wiretide tap` and `wiretide clean` against the Kubernetes API emulator (no API server runs here).

What the emulator exercises: server-side apply of every object the manifests hold (with the field
manager), Secrets made only where none exist, the targeting and `--set` values in the ConfigMaps,
waiting for readiness with progress, and `clean` deleting exactly what `tap` labelled. What only a
real cluster exercises: scheduling, image pulls, the port-forward's WebSocket stream.
"""

from __future__ import annotations

import base64
import io
import threading
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.kubeapi import KubeApi
from tests.helpers.wait import wait_for
from wiretide.cli import tap_cmd
from wiretide.cli.main import main

MANAGED = "app.kubernetes.io/managed-by"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[KubeApi, Path]]:
    kube = KubeApi().start()
    try:
        yield kube, kube.write_kubeconfig(tmp_path / "kubeconfig")
    finally:
        kube.stop()


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def dry_run(*argv: str) -> list[dict[str, Any]]:
    code, out, err = run("tap", "--dry-run", *argv)
    assert code == 0, err
    return [d for d in yaml.safe_load_all(out) if d]


def config(docs: list[dict[str, Any]], name: str, namespace: str = "wiretide") -> dict[str, str]:
    found = [
        d
        for d in docs
        if d["kind"] == "ConfigMap"
        and d["metadata"]["name"] == name
        and d["metadata"]["namespace"] == namespace
    ]
    assert len(found) == 1, [d["metadata"] for d in docs if d["kind"] == "ConfigMap"]
    data: dict[str, str] = found[0]["data"]
    return data


def test_dry_run_prints_every_object_labelled_with_targeting_and_no_secret_values() -> None:
    docs = dry_run("checkout-.*", "-n", "shop", "-n", "payments", "--excluded-namespaces", "kube-system")
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "Deployment", "DaemonSet", "ConfigMap", "Secret", "NetworkPolicy"} <= kinds
    assert all(d["metadata"]["labels"][MANAGED] == "wiretide" for d in docs)
    assert [d["kind"] for d in docs][:2] == ["Namespace", "Namespace"]  # applied first
    for ns in ("wiretide", "wiretide-capture"):
        data = config(docs, "wiretide-config", ns)
        assert data["WIRETIDE_TARGET_POD_REGEX"] == "checkout-.*"
        assert data["WIRETIDE_TARGET_NAMESPACES"] == "shop,payments"
        assert data["WIRETIDE_TARGET_EXCLUDED_NAMESPACES"] == "kube-system"
    secrets = [d for d in docs if d["kind"] == "Secret"]
    names = {d["metadata"]["name"] for d in secrets}
    assert {
        "wiretide-gateway-auth",
        "wiretide-gateway-tokens",
        "wiretide-service-token",
        "wiretide-gateway-tls",
    } <= names
    for s in secrets:  # what would be generated is not printed
        assert all(v.startswith("<generated") for v in s["data"].values()), s["metadata"]["name"]


def test_set_aliases_storage_limit_and_tag_change_what_is_applied() -> None:
    docs = dry_run(
        "--set",
        "tap.regex=web-.*",
        "--set",
        "WIRETIDE_LOG_LEVEL=DEBUG",
        "--storage-limit",
        "5Gi",
        "--tag",
        "0.1.0",
    )
    data = config(docs, "wiretide-config")
    assert data["WIRETIDE_TARGET_POD_REGEX"] == "web-.*"
    assert data["WIRETIDE_LOG_LEVEL"] == "DEBUG"
    assert config(docs, "wiretide-gateway")["WIRETIDE_GATEWAY_RETENTION_BYTES"] == str(5 * 2**30 * 9 // 10)
    pvc = next(d for d in docs if d["kind"] == "PersistentVolumeClaim" and "gateway" in d["metadata"]["name"])
    assert pvc["spec"]["resources"]["requests"]["storage"] == "5Gi"
    images = [
        c["image"]
        for d in docs
        if d["kind"] in tap_cmd.WORKLOADS
        for c in d["spec"]["template"]["spec"]["containers"]
        if "wiretide-" in c["image"]
    ]
    assert len(images) == 6 and all(i.endswith(":0.1.0") for i in images), images


def test_set_tracer_replicas_changes_the_three_things_that_must_agree() -> None:
    for overlay, n in (("local", 3), ("production", 4)):
        docs = dry_run("--overlay", overlay, "--set", f"tracer.replicas={n}")
        sts = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "tracer")
        assert sts["spec"]["replicas"] == n
        env = {e["name"]: e.get("value") for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["WIRETIDE_TRACER_PARTITIONS"] == str(n)
        assert env["WIRETIDE_TRACER_PARTITION"] == "auto"
        assert config(docs, "wiretide-config")["WIRETIDE_TRACER_GRPC"] == ",".join(
            f"tracer-{i}.tracer.wiretide:50054" for i in range(n)
        )


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--set", "tracer.replicas=0"], "number from 1 to 64"),
        (["--set", "tracer.replicas=two"], "number from 1 to 64"),
        (["--set", "nonsense"], "expected KEY=VALUE"),
        (["--set", "tap.unknown=1"], "unknown"),
        (["--set", "tap.proxy.front.port=99999"], "not a port"),
        (["("], "POD_REGEX"),
        (["--storage-limit", "lots"], "not a quantity"),
        (["-n", "shop", "-A"], "exclude each other"),
        (["--overlay", "nowhere"], "no kustomization"),
    ],
)
def test_bad_arguments_are_clear_errors(argv: list[str], says: str) -> None:
    code, out, err = run("tap", "--dry-run", *argv)
    assert code == 1 and says in err and out == ""


def test_tap_applies_everything_waits_for_readiness_and_clean_removes_only_its_own(
    api: tuple[KubeApi, Path],
) -> None:
    kube, kubeconfig = api
    kube.put({"kind": "Namespace", "metadata": {"name": "shop"}})  # the user's: never touched
    kube.auto_ready = False
    result: dict[str, Any] = {}
    err = io.StringIO()

    def tap() -> None:
        with redirect_stderr(err):
            result["code"] = main(
                ["tap", "shop-.*", "-n", "shop", "--no-proxy", "--kubeconfig", str(kubeconfig)]
            )

    thread = threading.Thread(target=tap, daemon=True)
    thread.start()
    wait_for("tap waiting for readiness", err.getvalue, lambda s: "waiting for" in s)
    assert "code" not in result  # not done while workloads are unready
    expected = dry_run("shop-.*", "-n", "shop")
    workloads = [d for d in expected if d["kind"] in tap_cmd.WORKLOADS]
    for d in workloads:
        assert kube.find(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"]) is not None
        kube.make_ready(d["kind"], d["metadata"]["namespace"], d["metadata"]["name"])
    thread.join(timeout=60)
    assert result.get("code") == 0, err.getvalue()
    log = err.getvalue()
    assert f"ready {len(workloads)}/{len(workloads)}" in log
    assert "secrets:" in log and "kept" in log
    for d in expected:  # every object is there, applied with its content
        md = d["metadata"]
        got = kube.find(d["kind"], md.get("namespace", ""), md["name"])
        assert got is not None, (d["kind"], md)
        assert got["metadata"]["labels"][MANAGED] == "wiretide"
    cm = kube.find("ConfigMap", "wiretide-capture", "wiretide-config")
    assert cm is not None and cm["data"]["WIRETIDE_TARGET_NAMESPACES"] == "shop"
    assert all("fieldManager=wiretide" in p for m, p in kube.requests if m == "PATCH")

    # a second tap keeps the Secrets (no rotation) and re-applies the rest
    secret = kube.find("Secret", "wiretide", "wiretide-gateway-auth")
    assert secret is not None
    token = base64.b64decode(secret["data"]["token"])
    assert len(token) >= 32
    kube.auto_ready = True
    code, _out, err2 = run("tap", "--no-proxy", "-q", "--kubeconfig", str(kubeconfig))
    assert code == 0, err2
    again = kube.find("Secret", "wiretide", "wiretide-gateway-auth")
    assert again is not None and base64.b64decode(again["data"]["token"]) == token

    code, _out, err3 = run("clean", "--kubeconfig", str(kubeconfig))
    assert code == 0, err3
    for d in expected:
        md = d["metadata"]
        assert kube.find(d["kind"], md.get("namespace", ""), md["name"]) is None, (d["kind"], md)
    assert kube.find("Namespace", "", "shop") is not None


def test_tap_says_which_workloads_are_not_ready_when_time_runs_out(api: tuple[KubeApi, Path]) -> None:
    kube, kubeconfig = api
    kube.auto_ready = False
    code, _out, err = run("tap", "--no-proxy", "--timeout", "0", "--kubeconfig", str(kubeconfig))
    assert code == 1
    assert "not ready after" in err and "gateway 0/1" in err


def test_an_unreachable_cluster_is_a_clear_error(tmp_path: Path) -> None:
    kube = KubeApi().start()
    kubeconfig = kube.write_kubeconfig(tmp_path / "kubeconfig")
    kube.stop()
    code, _out, err = run("tap", "--no-proxy", "--kubeconfig", str(kubeconfig))
    assert code == 1 and "did not answer" in err
    code, _out, err = run("tap", "--no-proxy", "--kubeconfig", str(tmp_path / "missing"))
    assert code == 1 and "kube context" in err


def test_tap_applies_the_production_overlay_its_job_and_three_tracer_replicas(
    api: tuple[KubeApi, Path],
) -> None:
    kube, kubeconfig = api
    kube.auto_ready = True
    err = io.StringIO()
    argv = ["tap", "--overlay", "production", "--set", "tracer.replicas=3", "--no-proxy"]
    with redirect_stderr(err):
        code = main([*argv, "--kubeconfig", str(kubeconfig)])
    assert code == 0, err.getvalue()
    expected = dry_run("--overlay", "production", "--set", "tracer.replicas=3")
    assert any(d["kind"] == "Job" for d in expected)
    for d in expected:
        md = d["metadata"]
        assert kube.find(d["kind"], md.get("namespace", ""), md["name"]) is not None, (d["kind"], md)
    tracer = kube.find("StatefulSet", "wiretide", "tracer")
    assert tracer is not None and tracer["spec"]["replicas"] == 3
