"""The deployment files hang together: every kustomize resource exists, every skaffold config builds an
image that a manifest uses, and only capture holds network capabilities (least privilege)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("capture", "dissector", "resolver", "tracer", "agents", "gateway")


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomize_files(folder: Path, seen: set[Path] | None = None) -> list[Path]:
    seen = set() if seen is None else seen
    out: list[Path] = []
    for res in docs(folder / "kustomization.yaml")[0].get("resources", []):
        target = (folder / res).resolve()
        assert target.exists(), f"{folder}/kustomization.yaml names missing {res}"
        if target.is_dir():
            if target not in seen:
                seen.add(target)
                out += kustomize_files(target, seen)
        else:
            out.append(target)
    return out


def workloads(folder: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for f in kustomize_files(folder):
        for d in docs(f):
            if d["kind"] in ("Deployment", "DaemonSet", "StatefulSet"):
                found[d["metadata"]["name"]] = d
    return found


@pytest.mark.parametrize("overlay", ["k8s/base", "k8s/overlays/local", "k8s/overlays/production"])
def test_every_kustomization_resolves_to_all_six_services_and_nats(overlay: str) -> None:
    assert set(workloads(ROOT / overlay)) == {*SERVICES, "nats"}


def test_only_capture_has_capabilities_and_the_rest_run_as_non_root() -> None:
    for name, w in workloads(ROOT / "k8s/base").items():
        spec = w["spec"]["template"]["spec"]
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc.get("privileged") is not True
            assert sc["allowPrivilegeEscalation"] is False
            assert "resources" in c and "readinessProbe" in c and "livenessProbe" in c
            added = set(sc.get("capabilities", {}).get("add", []))
            if name == "capture":
                assert added >= {"NET_RAW", "NET_ADMIN", "BPF", "PERFMON"}
            else:
                assert not added
                assert spec["securityContext"]["runAsNonRoot"] is True


def test_node_names_come_from_the_downward_api() -> None:
    for name, w in workloads(ROOT / "k8s/base").items():
        if name == "nats":
            continue
        env = {e["name"]: e for e in w["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["WIRETIDE_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_skaffold_requires_one_config_per_service_each_building_its_image() -> None:
    root = docs(ROOT / "skaffold.yaml")[0]
    required = [r["path"] for r in root["requires"]]
    assert required == [f"services/{s}/skaffold.yaml" for s in SERVICES]
    for s in SERVICES:
        cfg = docs(ROOT / f"services/{s}/skaffold.yaml")[0]
        assert cfg["metadata"]["name"] == s
        art = cfg["build"]["artifacts"][0]
        dockerfile = ROOT / art["docker"]["dockerfile"]
        assert dockerfile.exists()
        assert f"wiretide.{s}" in dockerfile.read_text()
        images = {
            c["image"]
            for w in workloads(ROOT / "k8s/base").values()
            for c in w["spec"]["template"]["spec"]["containers"]
        }
        assert art["image"] in images
