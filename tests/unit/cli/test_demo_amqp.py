"""The demo's stdlib AMQP client facing peers that are not a well-behaved broker: a peer speaking
another protocol, one that hangs up, one that refuses the login, one that announces an absurd frame.
The api's order publisher answers False and tries again on the next order; nothing raises out of it,
nothing waits for ever. (The client against a real RabbitMQ node: tests/integration/test_demo_*.py.)
Also the demo's port watcher, against a real listening socket."""

from __future__ import annotations

import os
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from wiretide.cli.demo.apps import Amqp, AmqpClosed, OrderEvents, _shortstr, _table
from wiretide.cli.demo.cluster import listening

ORDER = {"order_id": "order-1", "item": "tea", "qty": 1}


def frame(kind: int, channel: int, payload: bytes) -> bytes:
    return struct.pack("!BHI", kind, channel, len(payload)) + payload + b"\xce"


def method(class_id: int, method_id: int, args: bytes = b"") -> bytes:
    return frame(1, 0, struct.pack("!HH", class_id, method_id) + args)


CONNECTION_START = method(
    10, 10, b"\x00\x09" + _table({"product": "peer"}) + b"\0\0\0\x05PLAIN\0\0\0\x05en_US"
)


@contextmanager
def peer(answer: Callable[[socket.socket], None]) -> Iterator[tuple[str, list[int]]]:
    """A loopback TCP peer that runs `answer` on each connection; yields its address and a list that
    counts the connections it took."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            with conn:
                conn.settimeout(5)
                try:
                    conn.recv(8)  # the client's protocol header
                    answer(conn)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.getsockname()[1]}", accepted
    finally:
        stop.set()
        server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (close() alone does not)
        server.close()
        thread.join(timeout=5)


def speaks_http(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def hangs_up(conn: socket.socket) -> None:
    pass


def refuses_login(conn: socket.socket) -> None:
    conn.sendall(CONNECTION_START)
    conn.recv(4096)  # start-ok
    conn.sendall(
        method(10, 50, struct.pack("!H", 403) + _shortstr("ACCESS_REFUSED") + struct.pack("!HH", 10, 11))
    )
    conn.recv(4096)  # close-ok


def huge_frame(conn: socket.socket) -> None:
    conn.sendall(struct.pack("!BHI", 1, 0, 0xFFFFFFF0))  # a 4 GiB method frame, never sent


def test_a_peer_speaking_http_is_no_broker_and_each_order_tries_again() -> None:
    with peer(speaks_http) as (addr, accepted):
        events = OrderEvents(addr)
        assert events.publish(dict(ORDER), "") is False
        assert events.publish(dict(ORDER), "") is False
        assert len(accepted) == 2 and events.amqp.sock is None


def test_a_peer_that_hangs_up_is_a_failed_publish_not_an_exception() -> None:
    with peer(hangs_up) as (addr, _):
        assert OrderEvents(addr).publish(dict(ORDER), "00-" + "1" * 32 + "-" + "2" * 16 + "-01") is False
        with pytest.raises(AmqpClosed, match="login to the broker failed"):
            Amqp(addr, "test").connect("orders")


def test_a_refused_login_says_the_brokers_reply_code() -> None:
    with peer(refuses_login) as (addr, _), pytest.raises(AmqpClosed, match="403 ACCESS_REFUSED"):
        Amqp(addr, "test").connect("orders")


def test_an_absurd_frame_size_is_refused_before_anything_is_read() -> None:
    with peer(huge_frame) as (addr, _):
        with pytest.raises(AmqpClosed, match="frame_max"):
            Amqp(addr, "test").connect("orders")
        assert OrderEvents(addr).publish(dict(ORDER), "") is False


def test_nothing_listens_is_a_failed_publish() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        addr = f"127.0.0.1:{s.getsockname()[1]}"
    assert OrderEvents(addr).publish(dict(ORDER), "") is False


def test_the_watcher_sees_a_listening_socket_and_its_end() -> None:
    s = socket.create_server(("127.0.0.1", 0))
    port = s.getsockname()[1]
    assert listening(os.getpid(), "127.0.0.1", port)
    assert not listening(os.getpid(), "127.0.0.2", port)  # another address, same port
    s.close()
    assert not listening(os.getpid(), "127.0.0.1", port)
    with socket.create_server(("0.0.0.0", 0)) as wildcard:
        assert listening(os.getpid(), "10.244.0.23", wildcard.getsockname()[1])
    assert not listening(2**22 + 1, "127.0.0.1", port)  # no such process
