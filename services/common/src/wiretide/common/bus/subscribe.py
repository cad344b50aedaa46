"""Typed consumption: decode or count-and-skip, and durable JetStream pull consumers."""

from __future__ import annotations

import logging
from typing import TypeVar

from google.protobuf.message import DecodeError, Message
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from wiretide.common.metrics import BUS_INVALID

log = logging.getLogger(__name__)

M = TypeVar("M", bound=Message)


def decode_or_count(cls: type[M], data: bytes, subject: str) -> M | None:
    """Parse `data` as `cls`; on failure count it (wiretide_bus_invalid_messages_total) and return None."""
    msg = cls()
    try:
        msg.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        BUS_INVALID.labels(subject).inc()
        log.warning(
            "invalid message skipped", extra={"subject": subject, "error": str(exc), "bytes": len(data)}
        )
        return None
    return msg


async def durable_pull(
    js: JetStreamContext,
    stream: str,
    subject: str,
    durable: str,
    *,
    ack_wait_s: float = 10.0,
    max_ack_pending: int = 2000,
) -> JetStreamContext.PullSubscription:
    """A durable pull consumer: several instances with the same durable share the work, and a
    restarted instance resumes where the durable stopped (unacked messages are redelivered)."""
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_s,
        max_ack_pending=max_ack_pending,
        filter_subject=subject,
    )
    return await js.pull_subscribe(subject, durable=durable, stream=stream, config=config)
