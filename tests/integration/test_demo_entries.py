"""`wiretide demo` end to end: live packets on the demo bridge become entries in the store with the
Kubernetes identity of both ends (pod, namespace, workload) from the resolver's Kubernetes path; the
api's Redis calls are Redis entries, the db's PostgreSQL queries PostgreSQL entries, and the order
events the api publishes to RabbitMQ and the worker consumes are AMQP entries (publish → the broker's
ack, deliver → the worker's ack), in the service map and in the checkout's trace; the api's HTTPS
charges at payments are TLS handshakes with the Service's name as SNI and, read through eBPF, decrypted
HTTP entries named by pod on both ends, in the checkout's trace. One demo serves the module's tests."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers.demo import Demo, pod_of, query, running_demo, trace_with_client_call
from tests.helpers.wait import wait_for
from wiretide.capture.sources.ebpf import probe
from wiretide.cli.demo.apps import PAYMENTS_SNI
from wiretide.cli.demo.cluster import PODS, RABBITMQ_START_TIMEOUT_S, rabbitmq_server

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the demo creates network namespaces: needs root")

# The broker listens 14–26 s after the demo starts here; the api's first broker connection may open
# before the capture does (its publishes then pair once a broker ack shows its confirm mode).
MESSAGING_TIMEOUT_S = RABBITMQ_START_TIMEOUT_S + 60
POD: dict[str, str] = {p.app: p.name for p in PODS}
PAYMENTS_PORT = next(p.port for p in PODS if p.app == "payments")
EBPF_WHY_NOT = probe()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with running_demo(tmp_path_factory.mktemp("demo")) as running:
        yield running


def named(e: dict[str, Any], side: str) -> tuple[str, str, str]:
    end = e.get(side) or {}
    workload = end.get("workload") or {}
    return (str(end.get("namespace")), str(workload.get("kind")), str(workload.get("name")))


def test_demo_traffic_is_stored_with_kubernetes_names_on_both_ends(demo: Demo) -> None:
    base = demo.base
    edges: set[tuple[tuple[str, str, str], tuple[str, str, str]]] = set()
    want = {
        (("load", "Deployment", "loadgen"), ("shop", "Deployment", "frontend")),
        (("shop", "Deployment", "frontend"), ("shop", "Deployment", "api")),
        (("shop", "Deployment", "api"), ("data", "StatefulSet", "db")),
    }

    def http_edges() -> set[tuple[tuple[str, str, str], tuple[str, str, str]]]:
        edges.update((named(e, "src"), named(e, "dst")) for e in query(base, "http", limit=500))
        return edges

    wait_for("named HTTP edges between the demo's pods", http_edges, lambda seen: want <= seen, timeout=120)
    one = wait_for(
        "a loadgen → frontend entry",
        lambda: query(base, 'dst.namespace == "shop" && src.namespace == "load"', limit=1),
    )[0]
    assert one["src"]["resolution"] == "ip" and one["dst"]["pod"]["name"].startswith("frontend-")
    assert one["dst"]["service"]["name"] == "frontend"

    # The api's Redis calls are Redis entries (command, key, reply), not raw TCP rows.
    calls = wait_for(
        "redis entries from the api", lambda: query(base, 'redis && redis_command == "INCR"'), timeout=60
    )
    assert calls[0]["path"] == "hits" and calls[0]["response"]["type"] == "integer"
    assert named(calls[0], "src") == ("shop", "Deployment", "api")
    assert named(calls[0], "dst") == ("data", "StatefulSet", "redis")

    # The db reads its rows from PostgreSQL: queries with their rows, and the failing audit query.
    # The db also runs the failing audit query (a SELECT too), in either order: pick the item reads.
    def item_reads() -> list[dict[str, Any]]:
        found = query(base, 'postgresql && method == "SELECT"', limit=200)
        return [q for q in found if q["request"]["query"].startswith("SELECT n, 'item-' || n")]

    queries = wait_for("postgresql item reads from the db", item_reads, timeout=60)
    assert 1 <= queries[0]["response"]["rows"] <= 8 and queries[0]["status"] == 0
    assert named(queries[0], "src") == ("data", "StatefulSet", "db")
    assert named(queries[0], "dst") == ("data", "StatefulSet", "postgres")
    failed = wait_for(
        "the failing audit query", lambda: query(base, 'postgresql && pg_sqlstate == "42P01"'), timeout=60
    )
    assert failed[0]["error"]["type"] == "42P01" and "audit_log" in failed[0]["error"]["message"]


def broker_failure(demo: Demo) -> str:
    """Why the demo went on without its broker, as it said so ("" while it has said nothing of it)."""
    said = re.search(
        r"wiretide demo: (rabbitmq-server did not start .*)", demo.log.read_text(errors="replace")
    )
    return said.group(1) if said else ""


@pytest.mark.skipif(
    rabbitmq_server() is None, reason="rabbitmq-server is not installed (Makefile APT_PACKAGES)"
)
def test_demo_orders_cross_the_broker_as_paired_amqp_entries_named_on_both_ends(demo: Demo) -> None:
    base = demo.base

    def paired(method: str) -> list[dict[str, Any]]:
        failure = broker_failure(demo)
        if "not listening after" in failure:
            pytest.skip(f"the machine is too slow for the broker: {failure}")
        assert not failure, failure
        found = query(base, f'amqp && method == "{method}"', limit=200)
        # Both ends named (calls captured before the dissector learned the pods are not), and settled.
        return [
            e
            for e in found
            if (e.get("response") or {}).get("method") == "basic.ack"
            and pod_of(e, "src") != "None"
            and pod_of(e, "dst") != "None"
        ]

    # The api publishes each order in confirm mode: one entry, the publish with the broker's ack.
    publishes = wait_for(
        "a publish the broker acked", lambda: paired("basic.publish"), timeout=MESSAGING_TIMEOUT_S
    )
    pub = publishes[0]
    assert pub["path"] == "(default)/orders" and pub["error"] is None
    assert pub["summary"].startswith("basic.publish (default) → orders (") and pub["summary"].endswith(
        "→ basic.ack"
    )
    props = pub["request"]["properties"]
    assert props["type"] == "order.created" and props["content_type"] == "application/json"
    assert (
        props["message_id"].startswith("order-") and props["message_id"] in pub["request"]["body"]["content"]
    )
    assert (pod_of(pub, "src"), pod_of(pub, "dst")) == (POD["api"], POD["rabbitmq"])
    assert named(pub, "src") == ("shop", "Deployment", "api")
    assert named(pub, "dst") == ("data", "StatefulSet", "rabbitmq") and pub["dst"]["port"] == 5672

    # The worker's deliveries, each with its ack by the same delivery tag; the worker is the client end.
    delivered = wait_for("a delivery the worker acked", lambda: paired("basic.deliver"), timeout=60)
    for d in delivered:
        assert d["request"]["arguments"]["delivery_tag"] == d["response"]["arguments"]["delivery_tag"]
        assert d["request"]["sender"] == "server" and d["response"]["sender"] == "client"
        assert (pod_of(d, "src"), pod_of(d, "dst")) == (POD["worker"], POD["rabbitmq"])
        assert d["path"] == "(default)/orders" and d["error"] is None

    # publish → deliver → ack: an order the api published is the one the worker was handed and acked.
    def joined() -> set[str]:
        published = {e["request"]["properties"]["message_id"] for e in paired("basic.publish")}
        return published & {e["request"]["properties"]["message_id"] for e in paired("basic.deliver")}

    wait_for("an order published, delivered and acked", joined, timeout=120)

    # The service map has the messaging edges, and the checkout's trace holds the api's publish.
    def amqp_edges() -> set[tuple[str, str]]:
        try:
            doc = httpx.get(f"{base}/api/servicemap", params={"q": "amqp"}, timeout=10).json()
        except (httpx.HTTPError, ValueError):
            return set()
        return {(e["source"], e["destination"]) for e in doc.get("edges", []) if e["protocol"] == "amqp"}

    want = {("shop/api", "data/rabbitmq"), ("shop/worker", "data/rabbitmq")}
    wait_for("amqp edges in the service map", amqp_edges, lambda seen: want <= seen, timeout=60)

    def publish_under_checkout() -> list[dict[str, Any]]:
        q = 'amqp && method == "basic.publish"'
        return trace_with_client_call(base, q, lambda name: name.startswith("basic.publish"))

    spans = wait_for("a checkout trace with the api's publish", publish_under_checkout, timeout=60)
    assert {"GET /checkout", "POST /api/orders"} <= {s["name"] for s in spans}


def test_demo_payments_hop_is_tls_with_the_service_name_as_sni(demo: Demo) -> None:
    # From the packets' handshakes (eBPF or not): a TLS handshake entry, or the decrypted call that took
    # the handshake's metadata; either way the api → payments connection named on both ends.
    def with_sni() -> list[dict[str, Any]]:
        found = query(demo.base, f'tlsx_sni == "{PAYMENTS_SNI}"', limit=50)
        return [e for e in found if pod_of(e, "src") != "None" and pod_of(e, "dst") != "None"]

    hello = wait_for("a TLS connection from the api to payments with its SNI", with_sni, timeout=120)[0]
    assert (pod_of(hello, "src"), pod_of(hello, "dst")) == (POD["api"], POD["payments"])
    assert hello["dst"]["port"] == PAYMENTS_PORT and hello["dst"]["service"]["name"] == "payments"
    assert hello["tls"]["sni"] == PAYMENTS_SNI and hello["tls"]["version"] in ("1.2", "1.3")


@pytest.mark.skipif(EBPF_WHY_NOT is not None, reason=f"eBPF unavailable: {EBPF_WHY_NOT}")
def test_demo_payments_calls_come_out_decrypted_named_by_pod_and_in_the_checkout_trace(demo: Demo) -> None:
    def charges() -> list[dict[str, Any]]:
        found = query(demo.base, 'http && path == "/v1/charges"', limit=100)
        return [
            e
            for e in found
            if (e.get("tls") or {}).get("decrypted")
            and pod_of(e, "src") != "None"
            and pod_of(e, "dst") != "None"
        ]

    charge = wait_for("a decrypted charge from the api to payments", charges, timeout=120)[0]
    said = demo.log.read_text(errors="replace")
    assert "wiretide demo: eBPF on" in said, said[-2000:]
    assert (charge["method"], charge["path"]) == ("POST", "/v1/charges")
    assert charge["status"] in (201, 402) and charge["capture"]["source"] == "ebpf_tls"
    assert (pod_of(charge, "src"), pod_of(charge, "dst")) == (POD["api"], POD["payments"])
    assert named(charge, "src") == ("shop", "Deployment", "api")
    assert named(charge, "dst") == ("shop", "Deployment", "payments")
    assert charge["dst"]["port"] == PAYMENTS_PORT
    # Charged is 201 with a charge id, declined is 402: the body says which (what packets never show).
    answer = str(((charge.get("response") or {}).get("body") or {}).get("content", ""))
    assert ("ch_" in answer) if charge["status"] == 201 else ("declined" in answer), answer

    # The charge is the api's client call under its POST /api/orders, in the checkout's trace.
    def charge_under_checkout() -> list[dict[str, Any]]:
        q = 'http && path == "/v1/charges"'
        return trace_with_client_call(demo.base, q, lambda name: name == "POST /v1/charges")

    spans = wait_for("a checkout trace with the decrypted charge", charge_under_checkout, timeout=90)
    assert {"GET /checkout", "POST /api/orders", "POST /v1/charges"} <= {s["name"] for s in spans}
