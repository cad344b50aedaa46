"""The NATS bus: connection, JetStream streams and consumers, batched typed publish/subscribe.

Rule: subjects come from `subjects.py`; a message that does not decode is counted and skipped.
"""

from wiretide.common.bus.connection import Bus, connect_with_retry
from wiretide.common.bus.publish import BatchPublisher
from wiretide.common.bus.subjects import (
    AGENT_EVENTS,
    ENTRIES_ALL,
    ENTRIES_STREAM,
    IDENTITY_UPDATES,
    STORE_WRITER_DURABLE,
    entries_subject,
)
from wiretide.common.bus.subscribe import decode_or_count, durable_pull

__all__ = [
    "AGENT_EVENTS",
    "ENTRIES_ALL",
    "ENTRIES_STREAM",
    "IDENTITY_UPDATES",
    "STORE_WRITER_DURABLE",
    "BatchPublisher",
    "Bus",
    "connect_with_retry",
    "decode_or_count",
    "durable_pull",
    "entries_subject",
]
