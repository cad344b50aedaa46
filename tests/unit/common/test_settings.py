"""Settings fail at start-up naming the variable; known variables are read and frozen."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wiretide.common.settings import CommonSettings, SettingsError, load_settings, parse_hostport


def test_known_variables_are_read_and_frozen() -> None:
    s = load_settings(
        CommonSettings, "capture", {"WIRETIDE_NODE_NAME": "n1", "WIRETIDE_CAPTURE_GRPC": "127.0.0.1:7000"}
    )
    assert s.node_name == "n1"
    assert s.capture_grpc == "127.0.0.1:7000"
    with pytest.raises(Exception, match="frozen"):
        s.node_name = "other"  # type: ignore[misc]


def test_an_unknown_variable_is_named_with_a_suggestion() -> None:
    with pytest.raises(
        SettingsError, match=r"unknown setting WIRETIDE_NODE_NAMEE \(did you mean WIRETIDE_NODE_NAME\?\)"
    ):
        load_settings(CommonSettings, "capture", {"WIRETIDE_NODE_NAMEE": "x"})


def test_variables_of_other_services_are_left_to_them() -> None:
    s = load_settings(
        CommonSettings, "capture", {"WIRETIDE_GATEWAY_TOKEN": "t", "WIRETIDE_TRACES_OTLP_ENDPOINT": "x"}
    )
    assert s.node_name


def test_an_unknown_variable_with_the_own_prefix_is_rejected() -> None:
    with pytest.raises(SettingsError, match="WIRETIDE_CAPTURE_RING_SIZZE"):
        load_settings(CommonSettings, "capture", {"WIRETIDE_CAPTURE_RING_SIZZE": "1"})


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("WIRETIDE_CAPTURE_GRPC", "nohost", "host:port"),
        ("WIRETIDE_RESOLVER_GRPC", "127.0.0.1:99999", "0..65535"),
        ("WIRETIDE_DISSECTOR_GRPC", "127.0.0.1:1,bad", "host:port"),
        ("WIRETIDE_NATS_URL", "http://x:1", "nats://"),
        ("WIRETIDE_LOG_LEVEL", "LOUD", "LOG_LEVEL"),
        ("WIRETIDE_SHUTDOWN_GRACE_S", "soon", "SHUTDOWN_GRACE_S"),
    ],
)
def test_a_malformed_value_names_the_variable(key: str, value: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(CommonSettings, "capture", {key: value})
    assert key in str(info.value)
    assert fragment in str(info.value)


def test_hostport_accepts_ipv6_brackets() -> None:
    assert parse_hostport("[::1]:80") == ("::1", 80)
    assert parse_hostport("0.0.0.0:0") == ("0.0.0.0", 0)


def test_a_service_started_with_a_bad_setting_exits_2_and_says_which(tmp_path: object) -> None:
    env = {"PATH": "/usr/bin:/bin", "WIRETIDE_GATEWAY_HTTP": "not-an-address", "WIRETIDE_BOGUS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "wiretide.gateway"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "WIRETIDE_BOGUS" in proc.stderr


def test_a_malformed_url_setting_never_shows_its_credentials() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(CommonSettings, "capture", {"WIRETIDE_NATS_URL": "http://alice:hunter2@nats:4222"})
    text = str(info.value)
    assert "WIRETIDE_NATS_URL" in text and "http://***@nats:4222" in text
    assert "hunter2" not in text and "alice" not in text
