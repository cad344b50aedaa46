"""JetStream key-value buckets: open one by name, creating it on first use.

Rule: a bucket that exists is bound as it is. Its configuration (history, TTL, size, storage,
replicas) is never changed here: an operator's resize or an older release's settings stay. Only a
missing bucket is created, from the caller's configuration. When another process creates the same
bucket with a different configuration at the same moment, that bucket is bound and this caller's
configuration is not forced on it.
"""

from __future__ import annotations

import weakref

from nats.errors import NoRespondersError
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, BucketNotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue

__all__ = ["JetStreamUnavailable", "open_kv"]


class JetStreamUnavailable(ServiceUnavailableError):
    """No JetStream answered: the NATS server runs without it, or the account has none. It is a
    `ServiceUnavailableError`, so callers that already handle nats-py's own error still do."""

    def __init__(self, bucket: str) -> None:
        super().__init__(
            code=503,
            description=(
                f"JetStream is not enabled on the NATS server (needed for the key-value bucket {bucket!r}):"
                " start nats-server with -js (or a `jetstream {}` block) and give the account JetStream"
            ),
        )
        self.bucket = bucket

    def __str__(self) -> str:
        return self.description or ""


_REPLICAS: weakref.WeakKeyDictionary[JetStreamContext, int] = weakref.WeakKeyDictionary()


def use_replicas(js: JetStreamContext, replicas: int) -> None:
    """Buckets created through `js` get `replicas` copies unless their caller says otherwise."""
    _REPLICAS[js] = replicas


async def open_kv(
    js: JetStreamContext,
    bucket: str,
    *,
    description: str,
    storage: StorageType = StorageType.FILE,
    history: int = 1,
    ttl: float | None = None,
    max_bytes: int | None = None,
    replicas: int | None = None,
) -> KeyValue:
    """The key-value bucket `bucket`, created with these settings when it does not exist.

    `history`: values kept per key (JetStream allows 1 to 64). `ttl`: seconds a key lives after its
    last write (None: forever). `max_bytes`: the bucket's size limit (None: unlimited). `replicas`:
    copies in a JetStream cluster; by default the `nats_replicas` setting (`WIRETIDE_NATS_REPLICAS`)
    the connection was made with (`use_replicas`), so a bucket outlives a NATS node as the streams do.
    `storage`: FILE survives a server restart, MEMORY does not.
    """
    try:
        return await js.key_value(bucket)
    except BucketNotFoundError:
        pass
    except (ServiceUnavailableError, NoRespondersError) as exc:
        raise JetStreamUnavailable(bucket) from exc
    config = KeyValueConfig(
        bucket=bucket,
        description=description,
        history=history,
        ttl=ttl,
        max_bytes=max_bytes,
        storage=storage,
        replicas=_REPLICAS.get(js, 1) if replicas is None else replicas,
    )
    try:
        return await js.create_key_value(config)
    except (ServiceUnavailableError, NoRespondersError) as exc:
        raise JetStreamUnavailable(bucket) from exc
    except BadRequestError as exc:  # made meanwhile by another process, with another configuration
        try:
            return await js.key_value(bucket)
        except BucketNotFoundError:
            raise exc from None
