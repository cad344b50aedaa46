"""Targeting specs: validation, which pods they select, and the kernel filter built from them."""

from __future__ import annotations

import pytest

from wiretide.capture.bpf import compile_bpf
from wiretide.common import targets
from wiretide.common.targets import NOTHING, TargetError, TargetSpec
from wiretide.proto.v1 import resolver_pb2


def ident(
    name: str, ns: str, ip: str, kind: str = "pod", node: str = "n1", port: int = 0
) -> resolver_pb2.Identity:
    return resolver_pb2.Identity(name=name, namespace=ns, ip=ip, kind=kind, node=node, port=port)


def test_an_empty_spec_selects_everything_and_builds_no_filter() -> None:
    spec = TargetSpec.make()
    assert spec.everything and spec.selects("anything", "anywhere")
    assert targets.kernel_expression(spec, []) == ("", "every pod")


def test_regex_namespaces_and_exclusions_combine() -> None:
    spec = TargetSpec.make("^checkout-", ["shop", "pay"], ["pay"])
    assert spec.selects("checkout-7d9", "shop")
    assert not spec.selects("checkout-7d9", "pay")  # excluded wins
    assert not spec.selects("web-1", "shop")
    assert not spec.selects("checkout-1", "other")
    assert TargetSpec.make("", [], ["kube-system"]).selects("x", "default")


def test_pods_on_other_nodes_host_network_pods_and_ports_are_not_targeted() -> None:
    spec = TargetSpec.make("", ["shop"])
    pods = [
        ident("a", "shop", "10.0.0.2"),
        ident("b", "shop", "10.0.0.3", node="n2"),
        ident("host", "shop", "192.168.1.5"),
        ident("n1", "", "192.168.1.5", kind="node"),
        ident("svc", "shop", "10.96.0.1", kind="service"),
        ident("a-port", "shop", "10.0.0.9", port=8080),
        ident("c", "shop", "fd00::5"),
    ]
    got = targets.targeted(spec, pods, "n1")
    assert [(p.name, p.ip) for p in got] == [("a", "10.0.0.2"), ("c", "fd00::5")]
    expression, note = targets.kernel_expression(spec, got)
    assert expression == "host 10.0.0.2 or host fd00::5" and "2 targeted" in note
    compile_bpf(expression)  # the kernel takes it


def test_neighbouring_addresses_fold_into_networks_and_too_many_capture_everything() -> None:
    spec = TargetSpec.make("x")
    four = [targets.TargetedPod(f"x{i}", "ns", f"10.1.0.{i}", "n") for i in range(4, 8)]
    assert targets.kernel_expression(spec, four)[0] == "net 10.1.0.4/30"
    many = [targets.TargetedPod(f"x{i}", "ns", f"10.{i // 200}.{(i % 200) * 2}.1", "n") for i in range(1000)]
    expression, note = targets.kernel_expression(spec, many)
    assert expression == "" and "everything is captured" in note


def test_a_spec_that_selects_no_pod_captures_nothing() -> None:
    expression, note = targets.kernel_expression(TargetSpec.make("nobody"), [])
    assert expression == NOTHING and "nothing is captured" in note
    program = compile_bpf(expression)
    frame = bytes(60)
    assert not program.matches(frame)


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        ({"pod_regex": "("}, "pod_regex"),
        ({"pod_regex": "a" * 5000}, "at most"),
        ({"namespaces": "shop"}, "a list"),
        ({"namespaces": ["Shop"]}, "not a namespace name"),
        ({"excluded_namespaces": [1]}, "not a namespace name"),
        ({"namespaces": [f"n{i}" for i in range(600)]}, "at most"),
        ({"who": "me"}, "unknown field"),
        ([], "JSON object"),
    ],
)
def test_bad_specs_are_refused_by_name(doc: object, says: str) -> None:
    with pytest.raises(TargetError, match=says):
        TargetSpec.from_json(doc)


def test_specs_round_trip_and_bad_bytes_are_errors() -> None:
    spec = TargetSpec.make("^a", ["x"], ["y"])
    assert targets.decode(spec.encode()) == spec
    with pytest.raises(TargetError, match="not JSON"):
        targets.decode(b"\xff{")
