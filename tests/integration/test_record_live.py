"""Recording real traffic end to end: `wiretide up` captures the host side of a veth behind which two
"pods" (two addresses of one namespace, named by the Kubernetes API emulator) serve HTTP, and curl
calls them. A scheduled job started with `wiretide record start` keeps the calls it selects, the
packets of their flows (read back with tshark) and who held which address, and uploads its bundle to
S3 (moto in server mode on loopback, Object Lock and legal hold); after the pods are deleted from the
API, the bundle downloaded from the bucket still names them as recorded — in `wiretide analyze
BUNDLE` and in `wiretide up --recording BUNDLE`. A triggered job's run reaches back into the capture
ring: it holds calls — entries and packets — made before the job existed."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.helpers.kubeapi import KubeApi, namespace, pod
from tests.helpers.nats import free_port
from tests.helpers.netns import http_behind_veth, is_root, unique
from tests.helpers.stack import Stack
from tests.helpers.wait import wait_for
from wiretide.gateway.recording.bundle import open_bundle

NODE = "node-1"
CALLS = 4


@dataclass
class Live:
    stack: Stack
    kube: KubeApi
    checkout_ip: str
    web_ip: str
    headers: dict[str, str]
    token: str
    host_if: str

    def put_pods(self) -> None:
        self.kube.put(namespace("shop"))
        self.kube.put(pod("checkout-1", "shop", self.checkout_ip, node_name=NODE))
        self.kube.put(pod("web-1", "shop", self.web_ip, node_name=NODE))

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, f"{self.stack.base}{path}", headers=self.headers, timeout=30, **kw)

    def entries(self, q: str) -> list[dict[str, Any]]:
        answer = self.api("GET", "/api/entries", params={"q": q, "limit": 1000})
        assert answer.status_code == 200, answer.text
        docs: list[dict[str, Any]] = answer.json()["entries"]
        return docs

    def job(self, name: str) -> dict[str, Any]:
        answer = self.api("GET", f"/api/recordings/{name}")
        assert answer.status_code == 200, answer.text
        doc: dict[str, Any] = answer.json()
        return doc

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "wiretide.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if not k.startswith("WIRETIDE_")},
        )

    def record(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli("record", "--url", self.stack.base, f"--token={self.token}", *args)


def curl(address: str, path: str) -> None:
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            f"http://{address}{path}",
        ],
        capture_output=True,
        text=True,
    )
    assert done.stdout == "200", (address, path, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """An HTTP server in a new namespace on two addresses behind a veth, and `wiretide up` on its host
    side, naming the addresses from the Kubernetes API emulator."""
    if not is_root():
        pytest.skip("needs root (network namespaces, AF_PACKET)")
    tmp = tmp_path_factory.mktemp("reclive")
    net = f"10.94.{os.getpid() % 250}"
    kube = KubeApi().start()
    try:
        with http_behind_veth(tmp, prefix="wr", net=net, addresses=2) as served:
            stack = Stack(
                tmp / "wt",
                None,
                WIRETIDE_CAPTURE_INTERFACES=served.host_if,
                WIRETIDE_NODE_NAME=NODE,
                WIRETIDE_RESOLVER_KUBECONFIG=str(kube.write_kubeconfig(tmp / "kubeconfig")),
                WIRETIDE_RECORDING_CUT_S="1",
                WIRETIDE_RECORDING_LAG_S="1",
            )
            try:
                stack.wait_up()
                token_file = stack.data_dir / "service-token"
                token = token_file.read_text().strip() if token_file.is_file() else ""
                headers = {"authorization": f"Bearer {token}"} if token else {}
                checkout_ip, web_ip = served.ips
                yield Live(stack, kube, checkout_ip, web_ip, headers, token, served.host_if)
            finally:
                stack.stop()
    finally:
        kube.stop()


def tshark_requests(path: Path) -> list[tuple[str, str]]:
    """(destination address, request URI) of every HTTP request in a capture file, as tshark reads it."""
    out = subprocess.run(
        [
            "tshark",
            "-r",
            str(path),
            "-Y",
            "http.request",
            "-T",
            "fields",
            "-e",
            "ip.dst",
            "-e",
            "http.request.uri",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return sorted(tuple(line.split("\t")) for line in out.stdout.splitlines() if line)  # type: ignore[misc]


def url(e: dict[str, Any]) -> str:
    """The request target as sent (path and query): the calls differ only in their query."""
    return f"{e['request']['path']}?{e['request']['query_string']}"


def _named(live: Live, address: str, target: str) -> dict[str, Any] | None:
    found = live.entries(f'http && url == "http://{address}{target}"')
    return found[0] if found else None


@pytest.fixture
def moto() -> Iterator[tuple[str, Any]]:
    """A real S3 API server on loopback (moto in server mode, with Object Lock)."""
    import boto3  # type: ignore[import-untyped]
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    try:
        yield url, client
    finally:
        server.stop()


def test_a_scheduled_job_records_real_calls_uploads_them_and_names_outlive_the_pods(
    live: Live, moto: tuple[str, Any], tmp_path: Path
) -> None:
    live.put_pods()
    tag = unique("s")
    # The resolver has the pods once a call is stored with its pod's name: a call made before the pod
    # reached the dissector stays unnamed, so each probe makes a new call.
    probes = iter(range(10_000))

    def warm_call() -> dict[str, Any] | None:
        path = f"/ok?warm={tag}-{next(probes)}"
        curl(live.checkout_ip, path)
        return wait_for("the probe stored", lambda: _named(live, live.checkout_ip, path), timeout=30)

    warm = wait_for(
        "a warm-up call stored named",
        warm_call,
        lambda e: e is not None and (e["dst"].get("pod") or {}).get("name") == "checkout-1",
        timeout=120,
    )
    assert warm is not None

    name = f"checkout-{tag}"
    s3_url, s3 = moto
    s3.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
    creds = tmp_path / "s3.json"  # a mounted Secret's shape; the gateway reads it, never logs it
    creds.write_text('{"access_key_id": "testing", "secret_access_key": "testing"}')
    started = live.record(
        "start", name, "--filter", 'http && dst.pod.name == "checkout-1"', "--duration", "10m",
        "--upload", "s3://evidence/wt", "--endpoint", s3_url, "--region", "us-east-1",
        "--retention-days", "1", "--legal-hold", "--credentials-file", str(creds),
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    wait_for(
        "the run starts", lambda: live.job(name), lambda j: j["state"] == "recording" and bool(j["runs"])
    )
    paths = [f"/ok?call={tag}-{i}" for i in range(CALLS)]
    for p in paths:
        curl(live.checkout_ip, p)
        curl(live.web_ip, p)  # not selected: neither its entries nor its packets are recorded
    wait_for(
        "the run has collected the calls",
        lambda: live.job(name)["runs"][0],
        lambda r: r["entries"] >= CALLS and sum(r["packets"].values()) > 0,
    )
    stopped = live.record("stop", name)
    assert stopped.returncode == 0, stopped.stderr
    run = wait_for(
        "the run is a bundle, uploaded",
        lambda: live.job(name)["runs"][0],
        lambda r: r["state"] == "done" and r["uploads"].get("s3://evidence", {}).get("state") == "uploaded",
    )
    assert list(run["packets"]) == [NODE], run
    uploaded = run["uploads"]["s3://evidence"]
    assert uploaded["legal_hold"] and uploaded["retain_until"] and uploaded["sha256"] == run["bundle_sha256"]

    bundle = tmp_path / "recorded.tar.gz"
    got = live.record("get", name, "--run", "latest", "-o", str(bundle))
    assert got.returncode == 0 and got.stdout.strip() == str(bundle), got.stderr
    opened = open_bundle(bundle, tmp_path / "opened")
    recorded = list(opened.entries())
    assert sorted(url(e) for e in recorded) == sorted(paths)  # the warm-up call preceded the job
    assert {e["dst"]["pod"]["name"] for e in recorded} == {"checkout-1"}
    assert [p.name for p in opened.pcapng_paths()] == [f"{NODE}.pcapng"]
    assert tshark_requests(opened.pcapng_paths()[0]) == sorted((live.checkout_ip, p) for p in paths)
    idents = list(opened.identities())
    assert any(i.get("name") == "checkout-1" and i.get("ip") == live.checkout_ip for i in idents), idents

    # The pods go away: live traffic to the same address is no longer named…
    live.kube.delete("Pod", "shop", "checkout-1")
    live.kube.delete("Pod", "shop", "web-1")
    after = f"/ok?after={tag}"

    def unnamed_calls() -> list[dict[str, Any]]:
        curl(live.checkout_ip, after)  # one more call each time: the resolver forgets asynchronously
        found = live.entries(f'http && dst.ip == "{live.checkout_ip}" && url.endsWith("{after}")')
        return [e for e in found if not e["dst"].get("pod")]

    wait_for("a call after the deletion is stored without a pod", unnamed_calls, interval=1.0)

    # …while the bundle, downloaded back from the object store, still names them as recorded, offline,
    # selected by record("NAME")…
    kept = tmp_path / "from-s3.tar.gz"
    kept.write_bytes(
        s3.get_object(Bucket="evidence", Key=uploaded["object"].removeprefix("s3://evidence/"))["Body"].read()
    )
    assert kept.read_bytes() == bundle.read_bytes()
    analyzed = live.cli("analyze", str(kept), "--format", "jsonl", "--filter", f'record("{name}")')
    assert analyzed.returncode == 0, analyzed.stderr
    offline = [orjson.loads(line) for line in analyzed.stdout.splitlines()]
    assert sorted(url(e) for e in offline) == sorted(paths)
    assert {(e["dst"]["pod"]["name"], e["dst"]["pod"]["namespace"]) for e in offline} == {
        ("checkout-1", "shop")
    }
    assert "checksums verified" in analyzed.stderr
    other = live.cli("analyze", str(kept), "--filter", 'record("elsewhere")')
    assert other.returncode == 2 and "no recording named 'elsewhere'" in other.stderr, other.stderr

    # …and `wiretide up --recording` opens it beside live traffic, names as recorded; a damaged
    # bundle stops `up` before anything starts.
    damaged = tmp_path / "damaged.tar.gz"
    damaged.write_bytes(kept.read_bytes()[:-100])
    refused = live.cli("up", "--data-dir", str(tmp_path / "never"), "--recording", str(damaged))
    assert refused.returncode == 2 and "not a usable recording" in refused.stderr, refused.stderr
    again = Stack(
        tmp_path / "again", None, "--recording", str(kept), WIRETIDE_CAPTURE_INTERFACES=live.host_if
    )
    try:
        again.wait_up()
        token = (again.data_dir / "service-token").read_text().strip()
        reopened = httpx.get(
            f"{again.base}/api/entries",
            params={"q": f'record("{name}")', "limit": 100},
            headers={"authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert reopened.status_code == 200, reopened.text
        docs = reopened.json()["entries"]
        assert sorted(url(e) for e in docs) == sorted(paths)
        assert {e["dst"]["pod"]["name"] for e in docs} == {"checkout-1"}
    finally:
        again.stop()


def test_a_triggered_job_takes_calls_made_before_it_existed_from_the_capture_ring(
    live: Live, tmp_path: Path
) -> None:
    live.put_pods()
    tag = unique("t")
    before = [f"/ok?before={tag}-{i}" for i in range(CALLS)]
    for p in before:
        curl(live.web_ip, p)
    wait_for(
        "the earlier calls are stored",
        lambda: live.entries(f'http && dst.ip == "{live.web_ip}" && url.contains("/ok?before={tag}")'),
        lambda found: len(found) == CALLS,
    )
    name = f"spike-{tag}"
    body = {
        "name": name,
        "filter": f'http && url.contains("={tag}-")',  # this test's calls, of both pods
        "duration_s": 600,
        "preceding_s": 300,
        "trigger": {"condition": f'http && dst.ip == "{live.checkout_ip}"', "threshold": 3, "window_s": 60},
    }
    created = live.api("POST", "/api/recordings", json=body)
    assert created.status_code == 201, created.text
    created_ns = created.json()["created_ns"]
    assert live.job(name)["state"] == "armed" and not live.job(name)["runs"]
    spike = [f"/ok?spike={tag}-{i}" for i in range(CALLS)]  # four: more than three within a minute
    for p in spike:
        curl(live.checkout_ip, p)
    fired = wait_for(
        "the trigger fired and the run took the preceding calls",
        lambda: live.job(name),
        lambda j: bool(j["runs"]) and j["runs"][0]["entries"] == 2 * CALLS,
    )
    assert fired["trigger_fired"] >= 1
    assert live.api("POST", f"/api/recordings/{name}/stop").status_code == 200
    run = wait_for("the run is a bundle", lambda: live.job(name)["runs"][0], lambda r: r["state"] == "done")
    got = live.api("GET", f"/api/recordings/{name}/runs/{run['id']}/bundle")
    assert got.status_code == 200, got.text
    (tmp_path / "spike.tar.gz").write_bytes(got.content)
    opened = open_bundle(tmp_path / "spike.tar.gz", tmp_path / "opened")
    paths = {url(e): e for e in opened.entries()}
    assert set(before) | set(spike) <= set(paths)
    assert all(paths[p]["timestamp"] < created_ns for p in before)  # older than the job itself
    seen = tshark_requests(opened.pcapng_paths()[0])
    assert {(live.web_ip, p) for p in before} <= set(seen)  # their packets, from the ring
    assert {(live.checkout_ip, p) for p in spike} <= set(seen)
