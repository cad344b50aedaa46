"""`open_kv` against a real nats-server: a missing bucket is created with the caller's settings, an
existing one is bound untouched (its settings are never overwritten, its keys stay), a bucket created at
the same moment by someone else is bound instead of failing, bad settings are refused before anything is
made, and a server without JetStream gets an error that says so. The four stores that open their bucket
through it keep the settings they had."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType, StreamConfig
from nats.js.errors import (
    BadRequestError,
    InvalidBucketNameError,
    KeyHistoryTooLargeError,
    NotFoundError,
    ServerError,
    ServiceUnavailableError,
)

from tests.helpers.nats import NatsServer, free_port, nats_binary
from tests.helpers.wait import wait_for
from wiretide.common.bus.kv import JetStreamUnavailable, open_kv

NS = 1_000_000_000


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    client = await nats.connect(nats_server.url)
    yield client
    await client.close()


async def stream_config(js: JetStreamContext, bucket: str) -> StreamConfig:
    info = await js.stream_info(f"KV_{bucket}")
    assert info.config is not None
    return info.config


async def test_a_missing_bucket_is_created_with_every_setting_given(nc: Client) -> None:
    js = nc.jetstream()
    kv = await open_kv(
        js,
        "wt_test_new",
        description="a test bucket",
        storage=StorageType.MEMORY,
        history=5,
        ttl=30.0,
        max_bytes=1 << 20,
        replicas=1,
    )
    config = await stream_config(js, "wt_test_new")
    assert config.description == "a test bucket"
    assert config.storage == StorageType.MEMORY
    assert config.max_msgs_per_subject == 5
    assert config.max_age == 30.0
    assert config.max_bytes == 1 << 20
    assert config.num_replicas == 1
    await kv.put("k", b"v1")
    entry = await kv.get("k")
    assert entry.value == b"v1"


async def test_the_defaults_are_a_file_bucket_keeping_one_value_for_ever(nc: Client) -> None:
    js = nc.jetstream()
    await open_kv(js, "wt_test_defaults", description="defaults")
    config = await stream_config(js, "wt_test_defaults")
    assert config.storage == StorageType.FILE
    assert config.max_msgs_per_subject == 1
    assert not config.max_age
    assert config.max_bytes in (None, -1)


async def test_an_existing_bucket_is_bound_as_it_is_settings_and_keys_untouched(nc: Client) -> None:
    js = nc.jetstream()
    made = await js.create_key_value(
        KeyValueConfig(bucket="wt_test_old", history=3, storage=StorageType.FILE, description="made before")
    )
    await made.put("kept", b"old")
    before = await stream_config(js, "wt_test_old")

    kv = await open_kv(
        js,
        "wt_test_old",
        description="other settings",
        storage=StorageType.MEMORY,
        history=1,
        ttl=5.0,
        max_bytes=4096,
    )
    after = await stream_config(js, "wt_test_old")
    assert after == before
    assert after.max_msgs_per_subject == 3 and after.storage == StorageType.FILE and not after.max_age
    assert after.description == "made before"
    entry = await kv.get("kept")
    assert entry.value == b"old"


async def test_a_bucket_made_meanwhile_by_another_process_is_bound_not_refused(
    nc: Client, nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between "not found" and "create", another client creates the bucket with other settings: the
    server refuses our create (same name, different configuration) and the bucket that won is bound."""
    js = nc.jetstream()
    other = await nats.connect(nats_server.url)
    create: Callable[..., Awaitable[Any]] = js.create_key_value
    raced: list[str] = []

    async def create_after_the_other(config: KeyValueConfig) -> Any:
        await other.jetstream().create_key_value(
            KeyValueConfig(bucket=config.bucket, history=7, description="the other one")
        )
        raced.append(config.bucket)
        return await create(config)

    monkeypatch.setattr(js, "create_key_value", create_after_the_other)
    try:
        kv = await open_kv(js, "wt_test_race", description="ours", history=2)
        assert raced == ["wt_test_race"]
        config = await stream_config(js, "wt_test_race")
        assert config.description == "the other one" and config.max_msgs_per_subject == 7
        await kv.put("k", b"seen by both")
        theirs = await other.jetstream().key_value("wt_test_race")
        entry = await theirs.get("k")
        assert entry.value == b"seen by both"
    finally:
        await other.close()


async def test_a_refused_create_that_is_not_a_race_is_raised(
    nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create the server refuses while no bucket of that name exists is the caller's error to see."""
    js = nc.jetstream()

    async def refuse(config: KeyValueConfig) -> Any:
        raise BadRequestError(code=400, err_code=10052, description="invalid stream configuration")

    monkeypatch.setattr(js, "create_key_value", refuse)
    with pytest.raises(BadRequestError, match="invalid stream configuration"):
        await open_kv(js, "wt_test_refused", description="never made")


@pytest.mark.parametrize(
    ("bucket", "settings", "error"),
    [
        ("has space", {}, InvalidBucketNameError),
        ("dots.are.not.allowed", {}, InvalidBucketNameError),
        ("", {}, InvalidBucketNameError),
        ("wt_test_history", {"history": 65}, KeyHistoryTooLargeError),
    ],
)
async def test_bad_settings_are_refused_and_nothing_is_made(
    nc: Client, bucket: str, settings: dict[str, Any], error: type[Exception]
) -> None:
    js = nc.jetstream()
    with pytest.raises(error):
        await open_kv(js, bucket, description="bad", **settings)
    names = [s.config.name for s in await js.streams_info()]
    assert names == []
    if bucket == "wt_test_history":
        with pytest.raises(NotFoundError):
            await js.stream_info("KV_wt_test_history")


@pytest.fixture
def nats_without_jetstream(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [nats_binary(), "-a", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def listening() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    try:
        wait_for("nats-server (no JetStream) listening", listening, timeout=10)
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_a_server_without_jetstream_gets_an_error_that_says_so(nats_without_jetstream: str) -> None:
    client = await nats.connect(nats_without_jetstream)
    try:
        with pytest.raises(JetStreamUnavailable) as caught:
            await open_kv(client.jetstream(timeout=5), "wt_test_nojs", description="needs JetStream")
    finally:
        await client.close()
    message = str(caught.value)
    assert "JetStream is not enabled" in message and "'wt_test_nojs'" in message and "-js" in message
    assert caught.value.bucket == "wt_test_nojs"
    assert isinstance(caught.value, ServiceUnavailableError)  # handlers of nats-py's own error still catch it


# -- the stores that open their bucket through it keep the settings they had --------------------------


async def _agents(js: JetStreamContext) -> Any:
    from wiretide.agents.store import AgentStore

    return await AgentStore.open(js)


async def _recording_jobs(js: JetStreamContext) -> Any:
    from wiretide.gateway.recording.store import JobStore

    return await JobStore.open(js)


async def _targets(js: JetStreamContext) -> Any:
    from wiretide.common import targets

    return await targets.open_bucket(js)


async def _nodes(js: JetStreamContext) -> Any:
    from wiretide.common import nodes

    return await nodes.open_bucket(js)


@pytest.mark.parametrize(
    ("opener", "bucket", "expected"),
    [
        (_agents, "wiretide_agents", ("Wiretide agents", StorageType.FILE, 16, 0)),
        (_recording_jobs, "wiretide_recordings", ("Wiretide recording jobs", StorageType.FILE, 8, 0)),
        (_targets, "wiretide_targets", ("Wiretide targeting", StorageType.FILE, 10, 0)),
        (_nodes, "wiretide_capture_nodes", ("Wiretide capture nodes", StorageType.MEMORY, 1, 90 * NS)),
    ],
)
async def test_each_store_creates_its_bucket_as_before_and_reopens_it(
    nc: Client,
    opener: Callable[[JetStreamContext], Awaitable[Any]],
    bucket: str,
    expected: tuple[str, StorageType, int, int],
) -> None:
    js = nc.jetstream()
    await opener(js)
    config = await stream_config(js, bucket)
    age_ns = round((config.max_age or 0) * NS)
    assert (config.description, config.storage, config.max_msgs_per_subject, age_ns) == expected
    assert config.num_replicas == 1 and config.max_bytes in (None, -1)
    await opener(js)  # a second open binds the same bucket
    assert await stream_config(js, bucket) == config


async def test_a_bucket_gets_the_connections_replica_count_unless_told(nc: Client) -> None:
    from wiretide.common.bus.kv import use_replicas

    js = nc.jetstream()
    use_replicas(js, 3)  # as connect_with_retry does with WIRETIDE_NATS_REPLICAS=3
    with pytest.raises(ServerError) as refused:  # one server cannot keep three copies
        await open_kv(js, "three_copies", description="copies")
    assert "replicas > 1" in str(refused.value)
    told = await open_kv(js, "one_copy", description="copies", replicas=1)
    assert told is not None and (await stream_config(js, "one_copy")).num_replicas == 1
    plain = nc.jetstream()  # a context nobody set: one copy
    await open_kv(plain, "default_copy", description="copies")
    assert (await stream_config(plain, "default_copy")).num_replicas == 1
