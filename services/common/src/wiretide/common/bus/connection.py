"""A NATS connection that waits for the server (with backoff) and sets up the JetStream streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass, field

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from wiretide.common.bus.kv import use_replicas
from wiretide.common.bus.subjects import STREAMS, StreamSpec

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 5.0
JS_API_TIMEOUT_S = 10.0  # JetStream publish acks and API calls: generous, a loaded server is slow, not gone


@dataclass
class Bus:
    nc: Client
    js: JetStreamContext
    events: list[str] = field(default_factory=list)

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def close(self) -> None:
        if self.nc.is_closed:
            return
        with contextlib.suppress(Exception):  # best effort: the server may already be gone
            await self.nc.flush(timeout=1)
        with contextlib.suppress(ConnectionError):  # the server went away: nothing left to close cleanly
            await self.nc.close()


async def ensure_stream(js: JetStreamContext, spec: StreamSpec, replicas: int = 1) -> None:
    config = StreamConfig(
        num_replicas=replicas,
        name=spec.name,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=spec.max_age_s,
        max_bytes=spec.max_bytes,
        discard=DiscardPolicy.OLD,
        duplicate_window=spec.duplicate_window_s,
    )
    try:
        await js.add_stream(config)
    except BadRequestError:
        await js.update_stream(config)


async def connect_with_retry(
    url: str,
    name: str,
    stop: asyncio.Event | None = None,
    *,
    tls: ssl.SSLContext | None = None,
    replicas: int = 1,
) -> Bus:
    """Connect, retrying with exponential backoff until NATS answers (or `stop` is set). With `tls`,
    a server that does not speak TLS is refused (nats-py would otherwise fall back to plaintext)."""
    delay = BACKOFF_START_S
    attempt = 0
    while True:
        attempt += 1
        try:
            nc = await nats.connect(
                servers=[u.strip() for u in url.split(",")],
                name=name,
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                max_outstanding_pings=3,
                ping_interval=10,
                tls=tls,
            )
            if tls is not None and not nc._server_info.get("tls_required"):
                await nc.close()
                raise ConnectionError(f"NATS at {url} does not speak TLS; refusing plaintext")
            break
        except Exception as exc:  # nats raises several unrelated types for "not up yet"
            if stop is not None and stop.is_set():
                raise
            if attempt == 1 or attempt % 10 == 0:
                log.warning("NATS not reachable yet, retrying", extra={"url": url, "error": str(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
    js = nc.jetstream(timeout=JS_API_TIMEOUT_S)
    use_replicas(js, replicas)
    for spec in STREAMS:
        await ensure_stream(js, spec, replicas)
    log.info("connected to NATS", extra={"url": url, "attempts": attempt})
    return Bus(nc=nc, js=js)
