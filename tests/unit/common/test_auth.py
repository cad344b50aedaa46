"""The auth layer on its own: static tokens, namespace scopes (KFL and Python agree, and a query cannot
escape its scope), OIDC against an issuer the test runs (discovery + JWKS over real HTTP, keys made
here), and the browser guard's Host/Origin rules."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.helpers.entries import entries
from wiretide.common.auth import (
    ALL_NAMESPACES,
    Authenticator,
    NamespaceScope,
    OidcConfig,
    OidcVerifier,
    PermissionDenied,
    Role,
    TokenFileError,
    Unauthenticated,
    browser_policy,
    check_restricted,
    parse_tokens,
)
from wiretide.common.kfl import compile_predicate

VIEWER_TOKEN = "viewer-token-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"


def tokens_doc(*items: dict[str, Any]) -> bytes:
    return orjson.dumps({"tokens": list(items)})


# -- static tokens -----------------------------------------------------------------------------------


async def test_a_static_token_names_its_subject_role_and_namespaces() -> None:
    hashed = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()
    tokens = parse_tokens(
        tokens_doc(
            {"token": VIEWER_TOKEN, "subject": "alice", "role": "viewer", "namespaces": ["shop"]},
            {"token_sha256": hashed, "subject": "ci", "role": "admin"},
        )
    )
    auth = Authenticator(tokens, user_credentials=True)
    alice = await auth.authenticate(f"Bearer {VIEWER_TOKEN}")
    assert (alice.subject, alice.role, alice.scope.to_list()) == ("alice", Role.VIEWER, ["shop"])
    ci = await auth.authenticate(f"bearer {ADMIN_TOKEN}")
    assert (ci.subject, ci.role, ci.scope) == ("ci", Role.ADMIN, ALL_NAMESPACES)
    with pytest.raises(PermissionDenied):
        alice.require(Role.EDITOR)
    for header in (None, "", "Bearer nope-nope-nope-nope", "Basic YWxpY2U6eA==", f"Bearer {VIEWER_TOKEN}x"):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(header)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"token": "short", "subject": "a", "role": "admin"}, "16\\+ characters"),
        ({"token": VIEWER_TOKEN, "subject": "a", "role": "viewer"}, "needs 'namespaces'"),
        ({"token": VIEWER_TOKEN, "subject": "a", "role": "root"}, "admin, editor or viewer"),
        ({"token_sha256": "abc", "subject": "a", "role": "admin"}, "64 hex digits"),
        ({"subject": "a", "role": "admin"}, "exactly one of"),
    ],
)
def test_a_bad_tokens_file_is_refused_naming_the_entry(item: dict[str, Any], message: str) -> None:
    with pytest.raises(TokenFileError, match=r"tokens\[0\].*" + message):
        parse_tokens(tokens_doc(item))


async def test_nothing_configured_is_anonymous_only_on_loopback() -> None:
    empty = Authenticator()
    local = await empty.for_listener("127.0.0.1:8899").authenticate(None)
    assert (local.role, local.authenticated) == (Role.ADMIN, False)
    assert "no authentication is configured" in str(local.to_dict()["warning"])
    with pytest.raises(Unauthenticated):
        await empty.for_listener("0.0.0.0:8899").authenticate(None)
    configured = Authenticator(
        parse_tokens(tokens_doc({"token": ADMIN_TOKEN, "subject": "a", "role": "admin"})),
        user_credentials=True,
    )
    with pytest.raises(Unauthenticated):
        await configured.for_people("127.0.0.1:8899").authenticate(None)
    with pytest.raises(Unauthenticated):  # a wrong token is never "anonymous"
        await empty.for_listener("127.0.0.1:8899").authenticate("Bearer wrong-wrong-wrong-wrong")


# -- scopes --------------------------------------------------------------------------------------------

DOCS = entries(400, seed=5)
SHOP = NamespaceScope.of(["payments"])


@pytest.mark.parametrize(
    "query", ["", "http", "dns || http", "status_code >= 500 // a comment", 'path.contains("/")']
)
def test_the_kfl_clause_and_the_python_check_select_the_same_entries(query: str) -> None:
    check_restricted(SHOP, query)
    scoped = compile_predicate(SHOP.restrict(query))
    inner = compile_predicate(query) if query else (lambda _d: True)
    assert [d["id"] for d in DOCS if scoped(d)] == [d["id"] for d in DOCS if SHOP.predicate(inner)(d)]
    assert any(scoped(d) for d in DOCS) and not all(SHOP.allows(d) for d in DOCS)


@pytest.mark.parametrize(
    "query",
    ["true) || (true", "true //", "true) || true || (true", "http\n) || (\ntrue", '"""', "true ||"],
)
def test_a_query_cannot_escape_its_scope(query: str) -> None:
    """Either the combination is refused, or it selects nothing outside the scope."""
    try:
        check_restricted(SHOP, query)
    except Exception:
        return
    scoped = compile_predicate(SHOP.restrict(query))
    assert all(SHOP.allows(d) for d in DOCS if scoped(d))


def test_an_entry_is_in_scope_when_one_end_is() -> None:
    scope = NamespaceScope.of(["shop"])
    both_out = {"src": {"namespace": "a"}, "dst": {"namespace": "b"}}
    assert not scope.allows(both_out) and not compile_predicate(scope.restrict(""))(both_out)
    for doc in ({"src": {"namespace": "shop"}, "dst": {}}, {"src": None, "dst": {"namespace": "shop"}}):
        assert scope.allows(doc) and compile_predicate(scope.restrict(""))(doc)
    assert NamespaceScope.of(["*", "shop"]).unrestricted
    assert not NamespaceScope.of([]).allows({"src": {"namespace": "shop"}})


# -- OIDC ----------------------------------------------------------------------------------------------


@dataclass
class Issuer:
    """An OIDC issuer on a real HTTP port: discovery document and JWKS, keys made by the test."""

    url: str = ""
    keys: dict[str, Any] = field(default_factory=dict)  # kid -> private key
    hits: list[str] = field(default_factory=list)

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            algo = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
            jwk = algo.to_jwk(key.public_key(), as_dict=True)
            out.append({**jwk, "kid": kid, "use": "sig"})
        return {"keys": out}

    def token(self, kid: str, alg: str = "RS256", **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": "wiretide", "sub": "u1", "exp": now + 300, "iat": now, **claims}
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.keys[kid], algorithm=alg, headers={"kid": kid})


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    state = Issuer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits.append(self.path)
            if self.path == "/.well-known/openid-configuration":
                body = {"issuer": state.url, "jwks_uri": state.url + "/jwks"}
            elif self.path == "/jwks":
                body = state.jwks()
            else:
                self.send_error(404)
                return
            data = orjson.dumps(body)
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    state.keys["rsa1"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    state.keys["ec1"] = ec.generate_private_key(ec.SECP256R1())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def verifier(issuer: Issuer) -> OidcVerifier:
    return OidcVerifier(OidcConfig(issuer=issuer.url, audience="wiretide", role_claim="groups"))


async def test_an_oidc_token_of_the_issuer_gives_its_role_and_namespaces(issuer: Issuer) -> None:
    v = verifier(issuer)
    p = await v.principal(
        issuer.token("rsa1", groups=["other-app", "viewer"], wiretide_namespaces=["shop", "web"])
    )
    assert (p.subject, p.role, p.scope.to_list(), p.method) == ("u1", Role.VIEWER, ["shop", "web"], "oidc")
    p = await v.principal(issuer.token("ec1", alg="ES256", groups="editor", wiretide_namespaces="shop"))
    assert (p.role, p.scope.to_list()) == (Role.EDITOR, ["shop"])
    p = await v.principal(issuer.token("rsa1", groups=["viewer"]))  # no namespaces claim: sees nothing
    assert p.scope.to_list() == []
    p = await v.principal(issuer.token("rsa1"))  # no role claim: authenticated, may do nothing
    with pytest.raises(PermissionDenied):
        p.require(Role.VIEWER)
    assert issuer.hits.count("/jwks") == 1  # keys cached


async def test_tokens_that_do_not_hold_are_refused(issuer: Issuer) -> None:
    v = verifier(issuer)
    now = int(time.time())
    bad = {
        "wrong audience": issuer.token("rsa1", aud="someone-else"),
        "wrong issuer": issuer.token("rsa1", iss="http://evil.example"),
        "expired": issuer.token("rsa1", exp=now - 3600),
        "not yet valid": issuer.token("rsa1", nbf=now + 3600),
        "no exp": issuer.token("rsa1", exp=None),
        "unknown key": jwt.encode(
            {"iss": issuer.url, "aud": "wiretide", "sub": "x", "exp": now + 60},
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
            algorithm="RS256",
            headers={"kid": "rsa1"},
        ),
        "alg none": jwt.encode(
            {"iss": issuer.url, "aud": "wiretide", "sub": "x", "exp": now + 60}, "", algorithm="none"
        ),
        "HS256 keyed with the public key": jwt.encode(
            {"iss": issuer.url, "aud": "wiretide", "sub": "x", "exp": now + 60},
            b"k" * 32,
            algorithm="HS256",
            headers={"kid": "rsa1"},
        ),
        "garbage": "a.b.c",
    }
    for why, token in bad.items():
        with pytest.raises(Unauthenticated):
            await v.principal(token)
            pytest.fail(f"accepted a token with {why}")


async def test_a_rotated_key_is_fetched_and_made_up_kids_do_not_hammer_the_issuer(issuer: Issuer) -> None:
    clock = [1000.0]
    v = OidcVerifier(
        OidcConfig(issuer=issuer.url, audience="wiretide", role_claim="groups"), clock=lambda: clock[0]
    )
    await v.principal(issuer.token("rsa1", groups="admin"))
    issuer.keys["rsa2"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    del issuer.keys["rsa1"]
    rotated = issuer.token("rsa2", groups="admin")
    with pytest.raises(Unauthenticated):  # within the refresh spacing: not fetched again yet
        await v.principal(rotated)
    assert v.fetches == 1
    clock[0] += 11
    assert (await v.principal(rotated)).role == Role.ADMIN
    assert v.fetches == 2
    for i in range(20):
        with pytest.raises(Unauthenticated):
            issuer.keys[f"x{i}"] = issuer.keys["rsa2"]  # signed well, but under a kid never published
            made_up = issuer.token(f"x{i}", groups="admin")
            del issuer.keys[f"x{i}"]
            await v.principal(made_up)
    assert v.fetches == 2


# -- browser -------------------------------------------------------------------------------------------


def test_hosts_and_origins_that_are_not_ours_are_refused() -> None:
    local = browser_policy("127.0.0.1", "", [])
    assert local.host_ok("127.0.0.1:8899") and local.host_ok("localhost:8899")
    assert not local.host_ok("evil.example:8899") and not local.host_ok(None)  # DNS rebinding
    assert local.origin_ok("http://127.0.0.1:8899", "127.0.0.1:8899", "ws")
    assert local.origin_ok(None, "127.0.0.1:8899", "ws")  # not a browser
    for origin in ("http://evil.example", "http://127.0.0.1:9999", "null", "https://127.0.0.1:8899"):
        assert not local.origin_ok(origin, "127.0.0.1:8899", "ws"), origin
    assert browser_policy("0.0.0.0", "wiretide.example.com", ["https://app.example"]).origin_ok(
        "https://app.example", "wiretide.example.com", "https"
    )
    assert browser_policy("0.0.0.0", "*", []).host_ok("anything")


def test_tokens_file_loads_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_bytes(tokens_doc({"token": ADMIN_TOKEN, "subject": "ops", "role": "admin"}))
    from wiretide.common.auth import load_tokens

    assert len(load_tokens(path)) == 1
    with pytest.raises(TokenFileError, match="cannot read"):
        load_tokens(tmp_path / "missing.json")


async def test_a_changed_tokens_file_is_read_again_after_the_check_period_and_no_sooner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wiretide.common.auth import TokensFile
    from wiretide.common.auth import tokens as tokens_module

    path = tmp_path / "tokens.json"

    def publish(data: bytes) -> None:  # as a Secret volume does: the new file replaces the old one
        staged = tmp_path / "tokens.json.new"
        staged.write_bytes(data)
        staged.replace(path)

    stats = 0
    real_stamp = tokens_module._stamp

    def counted(p: Path) -> tuple[int, ...]:
        nonlocal stats
        stats += 1
        return real_stamp(p)

    monkeypatch.setattr(tokens_module, "_stamp", counted)
    publish(tokens_doc({"token": VIEWER_TOKEN, "subject": "old", "role": "viewer", "namespaces": ["shop"]}))
    now = [100.0]
    tokens_file = TokensFile(path, check_every_s=5.0, clock=lambda: now[0])
    auth = Authenticator(user_credentials=True, tokens_file=tokens_file)
    assert (await auth.authenticate(f"Bearer {VIEWER_TOKEN}")).subject == "old"

    publish(tokens_doc({"token": ADMIN_TOKEN, "subject": "new", "role": "admin"}))
    now[0] = 104.9
    stats = 0
    for _ in range(100):  # within the period: the file is not looked at
        assert (await auth.authenticate(f"Bearer {VIEWER_TOKEN}")).subject == "old"
    assert stats == 0

    now[0] = 105.0  # the period is over: one stat, and the new file is what counts
    with pytest.raises(Unauthenticated):
        await auth.authenticate(f"Bearer {VIEWER_TOKEN}")  # revoked
    principal = await auth.authenticate(f"Bearer {ADMIN_TOKEN}")
    assert (principal.subject, principal.role) == ("new", Role.ADMIN)
    assert (stats, tokens_file.reloads) == (1, 1)

    now[0] = 111.0  # unchanged: stat only, no reload
    await auth.authenticate(f"Bearer {ADMIN_TOKEN}")
    assert (stats, tokens_file.reloads) == (2, 1)

    publish(b'{"tokens": [{"token": "short"}]}')  # a broken edit keeps the tokens last loaded
    now[0] = 117.0
    assert (await auth.authenticate(f"Bearer {ADMIN_TOKEN}")).subject == "new"
    path.unlink()  # so does a missing file
    now[0] = 123.0
    assert (await auth.authenticate(f"Bearer {ADMIN_TOKEN}")).subject == "new"
    assert tokens_file.reloads == 1

    publish(tokens_doc({"token": VIEWER_TOKEN, "subject": "back", "role": "viewer", "namespaces": ["*"]}))
    now[0] = 129.0
    assert (await auth.authenticate(f"Bearer {VIEWER_TOKEN}")).subject == "back"
