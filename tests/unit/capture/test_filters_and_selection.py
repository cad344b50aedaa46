"""Capture filters compiled by libpcap (expressions and structured ports/CIDRs) judged on real frames;
interface selection (explicit, globs, any, auto) over a made-up /sys/class/net; capture settings."""

from __future__ import annotations

import socket
from pathlib import Path

import dpkt
import pytest

from wiretide.capture.bpf import FilterError, combine, compile_bpf, skip_outgoing, structured_expression
from wiretide.capture.interfaces import Selection, missing, select
from wiretide.capture.service import CaptureSettings
from wiretide.common.packets import LINKTYPE_ETHERNET, LINKTYPE_RAW
from wiretide.common.settings import SettingsError, load_settings

MAC = b"\x02\x00\x00\x00\x00\x01"


def tcp(src: str, dst: str, sport: int, dport: int) -> bytes:
    ip = dpkt.ip.IP(
        src=socket.inet_aton(src),
        dst=socket.inet_aton(dst),
        p=6,
        data=dpkt.tcp.TCP(sport=sport, dport=dport, flags=2),
    )
    return bytes(dpkt.ethernet.Ethernet(src=MAC, dst=MAC, data=ip))


def udp6(src: str, dst: str, sport: int, dport: int) -> bytes:
    u = dpkt.udp.UDP(sport=sport, dport=dport, data=b"x")
    u.ulen = 9
    ip6 = dpkt.ip6.IP6(
        src=socket.inet_pton(socket.AF_INET6, src),
        dst=socket.inet_pton(socket.AF_INET6, dst),
        nxt=17,
        hlim=64,
        data=u,
    )
    ip6.plen = 9
    return bytes(dpkt.ethernet.Ethernet(src=MAC, dst=MAC, type=0x86DD, data=ip6))


def test_an_expression_is_compiled_by_libpcap_and_judges_frames_like_tcpdump_would() -> None:
    prog = compile_bpf("tcp port 80")
    assert len(prog) == 20  # what `tcpdump -y EN10MB -d 'tcp port 80'` prints
    assert prog.matches(tcp("10.0.0.1", "10.0.0.2", 40000, 80))
    assert prog.matches(tcp("10.0.0.2", "10.0.0.1", 80, 40000))
    assert not prog.matches(tcp("10.0.0.1", "10.0.0.2", 40000, 443))
    assert not prog.matches(udp6("fd00::1", "fd00::2", 5000, 80))


def test_structured_filters_become_bpf_for_ports_and_networks_of_both_families() -> None:
    expr = structured_expression([443, 80, 80], ["10.1.0.0/16", "fd00::/8"])
    assert expr == "(port 80 or port 443) and (net 10.1.0.0/16 or net fd00::/8)"
    prog = compile_bpf(expr)
    assert prog.matches(tcp("10.1.2.3", "192.0.2.1", 1234, 443))
    assert not prog.matches(tcp("10.2.2.3", "192.0.2.1", 1234, 443))
    assert not prog.matches(tcp("10.1.2.3", "192.0.2.1", 1234, 22))
    assert prog.matches(udp6("fd00::1", "2001:db8::1", 80, 999))
    assert combine("tcp", expr) == f"(tcp) and {expr}"
    assert combine("", "") == ""


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: compile_bpf("tcp port"), "bad filter 'tcp port'"),
        (lambda: compile_bpf("host 999.1.1.1"), "bad filter"),
        (lambda: compile_bpf("ip", link_type=12345), "link type 12345"),
        (lambda: structured_expression([0]), "port 0"),
        (lambda: structured_expression([70000]), "port 70000"),
        (lambda: structured_expression([], ["10.0.0.0/33"]), "bad CIDR"),
        (lambda: structured_expression([], ["not-a-net"]), "bad CIDR"),
    ],
)
def test_bad_filters_are_clear_errors(call: object, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        call()  # type: ignore[operator]


def test_raw_ip_links_get_their_own_program() -> None:
    prog = compile_bpf("udp", LINKTYPE_RAW)
    raw = udp6("fd00::1", "fd00::2", 1, 2)[14:]
    assert prog.matches(raw) and not compile_bpf("tcp", LINKTYPE_RAW).matches(raw)


def test_the_loopback_prefix_keeps_the_program_behind_it() -> None:
    inner = compile_bpf("tcp port 80")
    both = skip_outgoing(inner, LINKTYPE_ETHERNET, 262144)
    assert len(both) == len(inner) + 3
    assert both.instructions[24:] == inner.instructions  # the live effect is tested on a namespace's lo
    # ld pkttype; jeq OUTGOING -> next, else skip one; ret 0
    assert both.instructions[:24] == bytes.fromhex("20000000 04f0ffff 15000001 04000000 06000000 00000000")
    bare = skip_outgoing(None, LINKTYPE_ETHERNET, 100)
    assert len(bare) == 4 and bare.instructions[24:] == bytes.fromhex("06000000 64000000")


def fake_sys(tmp: Path) -> Path:
    for name, kind in [
        ("lo", None),
        ("eth0", "device"),
        ("br0", "bridge"),
        ("veth1a2b", None),
        ("cali123", None),
        ("docker0", "bridge"),
        ("tun7", None),
        ("dummy0", None),
    ]:
        d = tmp / name
        d.mkdir()
        if kind:
            (d / kind).mkdir()
    return tmp


def test_auto_picks_pod_facing_bridges_and_physical_nics_but_not_loopback(tmp_path: Path) -> None:
    sys_net = fake_sys(tmp_path)
    assert select(Selection.parse("auto"), sys_net=sys_net) == [
        "br0",
        "cali123",
        "docker0",
        "eth0",
        "veth1a2b",
    ]
    with_lo = select(Selection.parse("", include_loopback=True), sys_net=sys_net)
    assert "lo" in with_lo and "tun7" not in with_lo


def test_explicit_lists_and_globs_select_only_what_exists(tmp_path: Path) -> None:
    sys_net = fake_sys(tmp_path)
    sel = Selection.parse("eth0, veth*,nope9")
    assert select(sel, sys_net=sys_net) == ["eth0", "veth1a2b"]
    assert missing(sel, ["eth0", "veth1a2b"]) == ["nope9"]
    assert select(Selection.parse("any"), sys_net=sys_net) == ["any"]
    with pytest.raises(ValueError, match="cannot be mixed"):
        Selection.parse("any,eth0")


def test_capture_settings_are_validated_naming_the_variable(tmp_path: Path) -> None:
    good = load_settings(
        CaptureSettings,
        "capture",
        {
            "WIRETIDE_CAPTURE_PORTS": "80,443",
            "WIRETIDE_CAPTURE_CIDRS": "10.0.0.0/8",
            "WIRETIDE_DATA_DIR": str(tmp_path),
        },
    )
    assert good.filter_expression() == "(port 80 or port 443) and (net 10.0.0.0/8)"
    assert good.recorder_path() == tmp_path / "capture" / "recordings"
    for key, value in [
        ("WIRETIDE_CAPTURE_BPF", "tcp port"),
        ("WIRETIDE_CAPTURE_PORTS", "80,x"),
        ("WIRETIDE_CAPTURE_CIDRS", "10.0.0.0/40"),
        ("WIRETIDE_CAPTURE_INTERFACES", "any,eth0"),
        ("WIRETIDE_CAPTURE_FANOUT_MODE", "sideways"),
    ]:
        with pytest.raises(SettingsError, match=key):
            load_settings(CaptureSettings, "capture", {key: value})
    with pytest.raises(SettingsError, match="WIRETIDE_CAPTURE_INTERFACE "):
        load_settings(CaptureSettings, "capture", {"WIRETIDE_CAPTURE_INTERFACE ": "x"})


async def test_endpoint_names_resolve_to_one_endpoint_per_address_only_when_asked() -> None:
    from wiretide.capture.service import resolve_endpoints

    static = await resolve_endpoints(["localhost:50052", "10.0.0.9:1"], dns=False)
    assert static == ["localhost:50052", "10.0.0.9:1"]
    resolved = await resolve_endpoints(["localhost:50052", "10.0.0.9:1"], dns=True)
    assert "127.0.0.1:50052" in resolved and "10.0.0.9:1" in resolved
    assert all(not ep.startswith("localhost") for ep in resolved)
    assert await resolve_endpoints(["no-such-host.invalid:1"], dns=True) == []
