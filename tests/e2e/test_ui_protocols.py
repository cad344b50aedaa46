"""The entry detail of Redis, Kafka, AMQP, PostgreSQL, MySQL and MongoDB calls in headless Chromium:
the entries are what the dissector makes of real protocol bytes, stored by a running gateway; the
pane shows each one's command, topic and records, SQL, collection and filter, and errors readably."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import shot
from tests.helpers.nats import NatsServer, free_port
from tests.helpers.services import ServiceProcess, service_env
from tests.helpers.wait import wait_for
from tests.integration.test_store_writer import publish
from tests.unit.dissector import test_amqp as amqp
from tests.unit.dissector import test_kafka as kafka
from tests.unit.dissector import test_mongodb as mongo
from tests.unit.dissector import test_mysql as mysql
from tests.unit.dissector import test_postgresql as pg
from tests.unit.dissector.builders import Conversation
from wiretide.dissector.pipeline import Pipeline
from wiretide.dissector.registry import default_registry


def dissect(port: int, turns: list[tuple[bool, bytes]]) -> list[dict[str, Any]]:
    # Captured now: the gateway's retention removes entries older than its window.
    conv = Conversation(sport=port, ts=time.time_ns()).handshake()
    for from_client, data in turns:
        conv.send(from_client, data)
    conv.close()
    p = Pipeline(default_registry())
    return [e for e in p.feed(conv.columns()) + p.finish() if e["protocol"] != "tcp"]


def resp(*args: str) -> bytes:
    return f"*{len(args)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in args)


def calls() -> dict[str, dict[str, Any]]:
    """One entry per case, as the dissector made it."""
    redis = dissect(6379, [
        (True, resp("SET", "user:1", "alice smith")), (False, b"+OK\r\n"),
        (True, resp("HGETALL", "cart:7")),
        (False, b"*4\r\n$3\r\nsku\r\n$4\r\nbook\r\n$3\r\nqty\r\n$1\r\n2\r\n"),
        (True, resp("INCR", "user:1")),
        (False, b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"),
    ])  # fmt: skip
    records = kafka.batch([kafka.record(0, b"order-17", b'{"sku": "book"}', [(b"tenant", b"acme")])])
    produce = dissect(
        9092, [(True, kafka.produce(5, "orders", records)), (False, kafka.produce_ok(5, "orders"))]
    )
    failed = dissect(
        9092, [(True, kafka.produce(6, "ghosts", records)), (False, kafka.produce_ok(6, "ghosts", error=3))]
    )
    rabbit = dissect(5672, amqp.shop())
    postgres = dissect(5432, [
        (True, pg.HELLO), (False, pg.WELCOME),
        (True, pg.query("SELECT id, name FROM users WHERE team = 'db'")),
        (False, pg.row_desc("id", "name") + pg.data_row("1", "ada") + pg.complete("SELECT 1") + pg.ready()),
        (True, pg.query("SELECT * FROM nope")),
        (False, pg.error("42P01", 'relation "nope" does not exist') + pg.ready()),
    ])  # fmt: skip
    maria = dissect(3306, [
        *mysql.LOGIN, (True, mysql.query("SELEC id FROM t")),
        (False, mysql.err(1, 1064, b"42000", b"You have an error in your SQL syntax")),
    ])  # fmt: skip
    found = dissect(27017, [(True, mongo.FIND), (False, mongo.FOUND)])
    by = {
        "redis-set": redis[0], "redis-hash": redis[1], "redis-error": redis[2],
        "kafka-produce": produce[0], "kafka-error": failed[0],
        "amqp-publish": next(e for e in rabbit if e["method"] == "basic.publish"),
        "amqp-refused": next(e for e in rabbit if e["status"] == 406),
        "pg-select": postgres[1], "pg-error": postgres[2], "mysql-error": maria[-1], "mongo-find": found[0],
    }  # fmt: skip
    return by


def run_async(coro: Any) -> Any:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, dict[str, Any]]]]:
    tmp: Path = tmp_path_factory.mktemp("ui-protocols")
    docs = calls()
    nats = NatsServer(tmp / "nats")
    nats.start()
    port = free_port()
    gw = ServiceProcess(
        "gateway",
        service_env(nats.url, tmp / "data", WIRETIDE_GATEWAY_HTTP=f"127.0.0.1:{port}"),
        tmp / "gw.log",
    )
    gw.start()
    try:
        gw.wait_health("SERVING")
        run_async(publish(nats.url, [list(docs.values())]))
        base = f"http://127.0.0.1:{port}"
        wait_for(
            "the protocol entries served",
            lambda: len(httpx.get(f"{base}/api/entries", params={"limit": 100}).json()["entries"]),
            lambda n: n >= len(docs),
        )
        yield base, docs
    finally:
        gw.kill()
        nats.stop()


def detail(page: Any, base: str, entry: dict[str, Any]) -> str:
    page.goto(f"{base}/?q=" + urllib.parse.quote(f'id == "{entry["id"]}"'))
    page.wait_for_selector("#rows .row")
    page.click("#rows .row >> nth=0 >> span >> nth=0")
    page.wait_for_selector("#detail h2")
    page.wait_for_function("() => document.querySelector('#detail .sides + .sides') !== null")
    return str(page.inner_text("#detail"))


Ui = tuple[str, dict[str, dict[str, Any]]]


def test_redis_shows_the_command_line_the_reply_and_an_error_reply(page: Any, ui: Ui) -> None:
    base, docs = ui
    text = detail(page, base, docs["redis-set"])
    assert 'SET user:1 "alice smith"' in text  # the command as typed, quoted where it must be
    text = detail(page, base, docs["redis-hash"])
    assert "HGETALL cart:7" in text and "sku\nbook\nqty\n2" in text  # the reply's elements, one a line
    text = detail(page, base, docs["redis-error"])
    assert "WRONGTYPE: WRONGTYPE Operation against a key" in text  # the error row
    assert page.eval_on_selector("#detail h2 span:last-child", "e => e.className") == "serr"


def test_kafka_shows_topic_records_and_a_named_error_code(page: Any, ui: Ui) -> None:
    base, docs = ui
    text = detail(page, base, docs["kafka-produce"])
    assert "Produce orders" in text
    records = page.inner_text("#detail table.records")
    assert "orders[0] @0" in records and "order-17" in records and '{"sku": "book"}' in records
    assert "tenant=acme" in records
    shot(page, "ui-detail-kafka")
    text = detail(page, base, docs["kafka-error"])
    assert "UNKNOWN_TOPIC_OR_PARTITION (3)" in text


def test_amqp_shows_exchange_routing_key_properties_body_and_a_refusal(page: Any, ui: Ui) -> None:
    base, docs = ui
    text = detail(page, base, docs["amqp-publish"])
    for shown in (
        "basic.publish",
        "amq.direct",
        "routing_key",
        "orders",
        "application/json",
        '"sku": "book"',
    ):
        assert shown in text, shown
    text = detail(page, base, docs["amqp-refused"])
    assert "PRECONDITION_FAILED (406)" in text and "inequivalent arg 'durable'" in text


def test_sql_is_shown_as_text_with_rows_and_database_errors_with_their_codes(page: Any, ui: Ui) -> None:
    base, docs = ui
    detail(page, base, docs["pg-select"])
    assert page.inner_text("#detail pre.sql") == "SELECT id, name FROM users WHERE team = 'db'"
    text = page.inner_text("#detail")
    assert "command_tag" in text and "SELECT 1" in text and "id\nname" in text  # the columns, one a line
    detail(page, base, docs["pg-error"])
    error = page.inner_text("#detail table.error")
    assert "42P01" in error and 'relation "nope" does not exist' in error
    shot(page, "ui-detail-postgresql-error")
    detail(page, base, docs["mysql-error"])
    assert page.inner_text("#detail pre.sql") == "SELEC id FROM t"
    error = page.inner_text("#detail table.error")
    assert "1064" in error and "42000" in error and "error in your SQL syntax" in error


def test_mongodb_shows_command_collection_and_filter(page: Any, ui: Ui) -> None:
    base, docs = ui
    text = detail(page, base, docs["mongo-find"])
    assert "find shop.orders" in text and "collection" in text and "orders" in text
    assert '"$gt": 1' in text  # the filter, nested, as JSON
