"""List + watch of one resource kind with the official client, in a thread, forever.

Rule: the watcher never gives up and never forgets where it was: it resumes from the last
resourceVersion it saw (events and bookmarks); only `410 Gone` makes it list again; every other
failure waits with capped, jittered backoff and retries. The consumer keeps the last good state.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import urllib3
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from wiretide.resolver.k8s.objects import resource_version

log = logging.getLogger(__name__)

GONE: Final = 410
BACKOFF_START_S: Final = 0.2
BACKOFF_MAX_S: Final = 30.0  # an API server that is away is not hammered by every resolver
CONNECT_TIMEOUT_S: Final = 5.0
# A watch that sends nothing (not even a bookmark) this long past its own timeout is a dead connection.
READ_SLACK_S: Final = 15.0

# Event kinds handed to the sink (besides the API's ADDED / MODIFIED / DELETED).
RELIST_BEGIN: Final = "RELIST_BEGIN"
PAGE: Final = "PAGE"
RELIST_END: Final = "RELIST_END"
SYNCED: Final = "SYNCED"
FAILED: Final = "FAILED"

Sink = Callable[[str, str, Any], None]  # (kind, event type, object | items | message)


@dataclass
class WatchStats:
    lists: int = 0
    relists_gone: int = 0
    watches: int = 0
    events: int = 0
    bookmarks: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)


class RawWatch(watch.Watch):  # the client is untyped: mypy sees Any
    """The client's watch without its model decoding: events carry the plain JSON only.

    The client turns each object into its model (strictly validated models from client 35 on): one
    object the models reject — a Service with `clusterIPs: [null]` — raised out of the stream and
    stopped every later event of that kind. We read `raw_object` only, and judge each object ourselves.
    """

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def get_return_type(self, func: Callable[..., Any]) -> str:
        return ""  # no type: the client returns the event as decoded JSON, `raw_object` included


class ResourceWatcher:
    """Watches one kind (e.g. "pod") through `list_fn` (e.g. CoreV1Api.list_pod_for_all_namespaces)."""

    def __init__(
        self,
        kind: str,
        list_fn: Callable[..., Any],
        sink: Sink,
        stop: threading.Event,
        *,
        page_size: int = 500,
        watch_timeout_s: int = 300,
    ) -> None:
        self.kind = kind
        self.list_fn = list_fn
        self.sink = sink
        self.stop = stop
        self.page_size = page_size
        self.watch_timeout_s = watch_timeout_s
        self.stats = WatchStats()
        self.resource_version = ""
        self._watch: RawWatch | None = None
        self.thread = threading.Thread(target=self.run, name=f"k8s-watch-{kind}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def halt(self) -> None:
        self.stop.set()
        if self._watch is not None:
            self._watch.stop()  # type: ignore[no-untyped-call]

    def run(self) -> None:
        delay = BACKOFF_START_S
        while not self.stop.is_set():
            try:
                if not self.resource_version:
                    self.resource_version = self._relist()
                self._follow()
                delay = BACKOFF_START_S
            except ApiException as exc:
                if exc.status == GONE:
                    self.stats.relists_gone += 1
                    log.info("resourceVersion too old, listing again", extra={"kind": self.kind})
                    self.resource_version = ""
                    continue
                delay = self._failed(f"API error {exc.status} {exc.reason}", delay)
            except (urllib3.exceptions.HTTPError, OSError, ValueError, KeyError, TypeError) as exc:
                delay = self._failed(f"{type(exc).__name__}: {exc}", delay)
            except RuntimeError as exc:  # the consumer's loop is gone: we are shutting down
                log.debug("watcher stops", extra={"kind": self.kind, "error": str(exc)})
                return

    def _failed(self, message: str, delay: float) -> float:
        if self.stop.is_set():
            return delay
        self.stats.failures += 1
        self.stats.errors = [*self.stats.errors[-9:], message]
        if self.stats.failures == 1 or self.stats.failures % 10 == 0:
            log.warning(
                "watch failed, retrying", extra={"kind": self.kind, "error": message, "delay_s": delay}
            )
        self.sink(self.kind, FAILED, message)
        self.stop.wait(delay * random.uniform(0.5, 1.0))
        return min(delay * 2, BACKOFF_MAX_S)

    def _relist(self) -> str:
        """List everything (in pages) and hand it over; returns the list's resourceVersion."""
        self.stats.lists += 1
        self.sink(self.kind, RELIST_BEGIN, None)
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "limit": self.page_size,
                "_preload_content": False,
                "_request_timeout": (CONNECT_TIMEOUT_S, self.watch_timeout_s + READ_SLACK_S),
            }
            if token:
                kwargs["_continue"] = token
            resp = self.list_fn(**kwargs)
            doc = orjson.loads(resp.data)
            if not isinstance(doc, dict):
                raise ValueError("list answer is not an object")
            items = doc.get("items")
            self.sink(self.kind, PAGE, items if isinstance(items, list) else [])
            md: dict[str, Any] = doc["metadata"] if isinstance(doc.get("metadata"), dict) else {}
            token = md.get("continue") or None
            if token is None:
                rv = md.get("resourceVersion")
                if not isinstance(rv, str) or not rv:
                    raise ValueError("list answer without metadata.resourceVersion")
                self.sink(self.kind, RELIST_END, None)
                return rv

    def _follow(self) -> None:
        self.stats.watches += 1
        w = RawWatch()
        self._watch = w
        stream = w.stream(  # type: ignore[no-untyped-call]
            self.list_fn,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout_s,
            _request_timeout=(CONNECT_TIMEOUT_S, self.watch_timeout_s + READ_SLACK_S),
        )
        for event in stream:
            if self.stop.is_set():
                w.stop()  # type: ignore[no-untyped-call]
                break
            if not isinstance(event, dict):
                continue
            kind = event.get("type")
            obj = event.get("raw_object")  # the plain JSON (RawWatch decodes no models)
            if not isinstance(obj, dict):
                continue
            rv = resource_version(obj)
            if kind == "BOOKMARK":
                self.stats.bookmarks += 1
                self.sink(self.kind, SYNCED, None)
            elif kind in ("ADDED", "MODIFIED", "DELETED"):
                self.stats.events += 1
                self.sink(self.kind, str(kind), obj)
            if rv:
                self.resource_version = rv
        else:
            self.sink(self.kind, SYNCED, None)  # the server ended the watch on time: still in contact
