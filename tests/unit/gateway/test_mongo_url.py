"""The MongoDB URL: checked at start-up (TLS or loopback, readable files, a known scheme), shown only
redacted, and the driver's errors explained without the URL's secrets. The link itself, over TLS,
is tested in tests/integration/test_mongo_tls.py."""

from __future__ import annotations

import contextlib
import string
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wiretide.common.settings import SettingsError, load_settings
from wiretide.gateway.service import GatewayService, GatewaySettings
from wiretide.gateway.store.mongo_url import MASK, MongoUrl, check, explain

SECRET = "s3cr3t-Pw"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mongodb://u:s3cr3t-Pw@h1:27017,h2:27017/db?replicaSet=rs0&tls=true",
         "mongodb://u:***@h1:27017,h2:27017/db?replicaSet=rs0&tls=true"),
        ("mongodb://u:p%40ss%2Fw@h/", "mongodb://u:***@h/"),
        # unescaped @, / and ? in a password (the driver refuses these; the message must not show them)
        ("mongodb://u:pa/ss@w@h/db", "mongodb://u:***@h/db"),
        ("mongodb://u:pa?ss@h/?tls=true", "mongodb://u:***@h/?tls=true"),
        ("mongodb://u:pw@h/?appName=me@example", "mongodb://u:***@h/?appName=me@example"),
        ("mongodb://u@h/", "mongodb://u@h/"),
        ("mongodb://:pw@h/", "mongodb://:***@h/"),
        ("mongodb://h/?tls=true&tlsCertificateKeyFilePassword=pp&TLSCERTIFICATEKEYFILEPASSWORD=qq",
         "mongodb://h/?tls=true&tlsCertificateKeyFilePassword=***&TLSCERTIFICATEKEYFILEPASSWORD=***"),
        ("mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:tok",
         "mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=***"),
        ("mongodb+srv://u:pw@cluster0.example.net/app", "mongodb+srv://u:***@cluster0.example.net/app"),
        ("", ""),
        ("not a url", "not a url"),
        ("user:pw@host", "user:***@host"),
    ],
)  # fmt: skip
def test_the_url_is_shown_with_its_secrets_masked(url: str, shown: str) -> None:
    assert MongoUrl.parse(url).redacted() == shown


PASSWORDS = st.text(
    alphabet=string.ascii_letters + string.digits + string.punctuation + " é€", min_size=1, max_size=40
).map(lambda p: f"QZ{p}ZQ")  # QZ…ZQ: nothing else in the URL can contain it


@given(PASSWORDS, st.booleans(), st.sampled_from(["/", "/wiretide", "/?tls=true&w=majority", ""]))
def test_no_password_survives_redaction_escaped_or_not(password: str, escape: bool, tail: str) -> None:
    written = quote(password, safe="") if escape else password
    url = MongoUrl.parse(f"mongodb://wiretide:{written}@db-0.example:27017,db-1.example:27017{tail}")
    shown = url.redacted()
    assert password not in shown and written not in shown
    error = f"failed for wiretide:{written}@db-0.example ({password})"
    assert password not in url.scrub(error) and written not in url.scrub(error)


@given(st.text(max_size=200))
def test_parsing_and_checking_any_text_never_raises_anything_but_value_error(text: str) -> None:
    url = MongoUrl.parse(text)
    url.redacted()
    url.scrub(text)
    with contextlib.suppress(ValueError):
        check(text, allow_plaintext=False)


@pytest.mark.parametrize(
    "url",
    [
        "mongodb://127.0.0.1:27017/",
        "mongodb://localhost/wiretide",
        "mongodb://[::1]:27017/",
        "mongodb://127.0.0.1:27017,127.0.0.2:27018/?replicaSet=rs0",
        "mongodb://%2Ftmp%2Fmongodb-27017.sock/",
        "mongodb://db.example:27017/?tls=true",
        "mongodb://db.example:27017/?ssl=true",
        "mongodb://db.example:27017/?TLS=TRUE",
        "mongodb+srv://cluster0.example.net/",  # TLS by default
    ],
)
def test_tls_or_loopback_is_accepted(url: str) -> None:
    assert check(url, allow_plaintext=False) == []


@pytest.mark.parametrize(
    ("url", "named"),
    [
        (f"mongodb://wiretide:{SECRET}@db.example:27017/", "db.example:27017"),
        (f"mongodb://wiretide:{SECRET}@127.0.0.1:27017,db.example:27017/?tls=false", "db.example:27017"),
        (f"mongodb+srv://wiretide:{SECRET}@cluster0.example.net/?tls=false", "cluster0.example.net"),
        (f"mongodb://wiretide:{SECRET}@10.0.0.5/?ssl=false", "10.0.0.5"),
    ],
)
def test_plaintext_beyond_loopback_is_refused_unless_allowed(url: str, named: str) -> None:
    with pytest.raises(ValueError, match="in plaintext") as err:
        check(url, allow_plaintext=False)
    assert f"would reach {named} in plaintext" in str(err.value)
    assert "WIRETIDE_TLS_ALLOW_PLAINTEXT=true" in str(err.value) and SECRET not in str(err.value)
    [warning] = check(url, allow_plaintext=True)
    assert "PLAINTEXT" in warning


def test_tls_files_named_in_the_url_must_be_readable(tmp_path: Path) -> None:
    ca = tmp_path / "ca.crt"
    ca.write_text("PEM")
    assert check(f"mongodb://db.example/?tls=true&tlsCAFile={ca}", allow_plaintext=False) == []
    for option in ("tlsCAFile", "tlsCertificateKeyFile", "tlsCRLFile"):
        missing = tmp_path / f"{option}.pem"
        with pytest.raises(ValueError, match=f"{option}={missing}: cannot read it"):
            check(f"mongodb://db.example/?tls=true&{option}={missing}", allow_plaintext=False)
    # A percent-encoded path is the file's path once decoded, as the driver reads it.
    spaced = tmp_path / "my ca.crt"
    spaced.write_text("PEM")
    assert (
        check(f"mongodb://db.example/?tls=true&tlsCAFile={quote(str(spaced))}", allow_plaintext=False) == []
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"postgres://u:{SECRET}@db:5432/", "must be a mongodb:// or mongodb+srv:// URL"),
        (f"mongodb://u:{SECRET}@/", "names no host"),
        (f"mongodb://u:{SECRET}@db.example/?tls=maybe", "tls=maybe: must be true or false"),
    ],
)
def test_a_malformed_url_is_refused_with_the_problem_named_and_no_secret(url: str, problem: str) -> None:
    with pytest.raises(ValueError) as err:
        check(url, allow_plaintext=False)
    assert problem in str(err.value) and SECRET not in str(err.value)


def test_switching_certificate_checks_off_is_announced() -> None:
    url = "mongodb://db.example/?tls=true&tlsInsecure=true&tlsAllowInvalidHostnames=true"
    warnings = check(url, allow_plaintext=False)
    assert [w.split("(")[1] for w in warnings] == ["tlsInsecure=true)", "tlsAllowInvalidHostnames=true)"]


def test_the_gateway_refuses_a_bad_url_at_start_up_naming_the_setting_and_not_the_password(
    tmp_path: Path,
) -> None:
    env = {
        "WIRETIDE_DATA_DIR": str(tmp_path),
        "WIRETIDE_GATEWAY_MONGO_URL": f"mongodb://wiretide:{SECRET}@db.example:27017/?tls=true"
        f"&tlsCAFile={tmp_path / 'absent.crt'}",
    }
    settings = load_settings(GatewaySettings, "gateway", env)  # the value is not checked here
    with pytest.raises(SettingsError) as err:
        GatewayService(settings)
    message = str(err.value)
    assert message.startswith("WIRETIDE_GATEWAY_MONGO_URL=mongodb://wiretide:***@db.example:27017/?tls=true")
    assert "absent.crt: cannot read it" in message and SECRET not in message


def test_the_health_page_shows_the_url_redacted(tmp_path: Path) -> None:
    env = {
        "WIRETIDE_DATA_DIR": str(tmp_path),
        "WIRETIDE_GATEWAY_MONGO_URL": f"mongodb://wiretide:{SECRET}@127.0.0.1:27017/"
        f"?tlsCertificateKeyFilePassword={SECRET}&tls=true",
    }
    gw = GatewayService(load_settings(GatewaySettings, "gateway", env))
    location = gw.store_status()["location"]
    assert (
        location
        == f"mongodb://wiretide:{MASK}@127.0.0.1:27017/?tlsCertificateKeyFilePassword={MASK}&tls=true"
    )


@pytest.mark.parametrize(
    ("tls", "error", "hint"),
    [
        (True, "h:1: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer",
         "signed by the CA in tlsCAFile"),
        (True, "h:1: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: IP address mismatch",
         "name the host in the URL"),
        (True, "h:1: connection closed", "tlsCertificateKeyFile"),
        (True, "No servers found yet", "does the server speak TLS"),
        (False, "h:1: connection closed", "add tls=true"),
        (False, "h:1: [Errno 111] Connection refused", None),
    ],
)  # fmt: skip
def test_driver_errors_are_explained(tls: bool, error: str, hint: str | None) -> None:
    url = MongoUrl.parse(f"mongodb://u:{SECRET}@h:1/?tls={str(tls).lower()}")
    dump = ", Timeout: 5.0s, Topology Description: <TopologyDescription servers: [...]>"
    text = explain(
        f"ServerSelectionTimeoutError: {error} (configured timeouts: connectTimeoutMS: 20000.0ms){dump}", url
    )
    assert text.startswith(f"ServerSelectionTimeoutError: {error}")
    assert "Topology" not in text and "configured timeouts" not in text
    if hint is None:
        assert text == f"ServerSelectionTimeoutError: {error}"
    else:
        assert hint in text
    assert SECRET not in explain(f"auth failed for u:{SECRET}", url)
