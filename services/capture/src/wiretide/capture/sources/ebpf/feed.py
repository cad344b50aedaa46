"""The eBPF source run on its own thread, its chunks handed to the capture's event loop in order.

Rule: the feed never takes the capture down. Loading the program (about a second of compiling) and
polling the perf buffer happen on the feed's thread; whatever stops the source — no root, no BCC, no
kernel headers, a failing poll — becomes `error`, one log line and the status the service reports.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any, Final, Generic, Protocol, TypeVar

from wiretide.capture.sources.ebpf.source import Chunk, EbpfSource, EbpfStats, Hook, SocketOwner

log = logging.getLogger(__name__)

# How long one poll waits for events: the longest a chunk waits on the kernel side, and how quickly
# `close` is answered.
POLL_MS: Final = 100


class _Startable(Protocol):
    def start(self) -> None: ...

    def close(self) -> None: ...


S = TypeVar("S", bound=_Startable)


class SourceThread(Generic[S]):
    """A source made, started and read on its own thread, its output handed to `loop`.

    The thread waits until `after()` (when given) says it may load: compiling a BPF program is not
    thread-safe in BCC (two at once crash the process). Whatever stops the source — at start or while
    read — becomes `error` and one warning naming `what`; the source is always closed on the thread.
    Subclasses read the started source in `_serve` until `_stop` is set.
    """

    def __init__(
        self,
        make: Callable[[], S],
        loop: Any,
        *,
        name: str,
        what: str,
        after: Callable[[], bool] | None = None,
    ) -> None:
        self._make = make
        self._loop = loop
        self._after = after
        self._what = what
        self._source: S | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.running = False
        self.error = ""

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _fail(self, reason: str) -> None:
        self.error = reason
        self.running = False
        log.warning("%s unavailable: %s", self._what, reason, extra={"reason": reason})

    def _serve(self, source: S) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while self._after is not None and not self._after():
            if self._stop.wait(POLL_MS / 1000):
                return
        source = self._make()
        try:
            source.start()
        except Exception as exc:  # EbpfUnavailable says why; anything else is reported the same way
            self._fail(str(exc) or type(exc).__name__)
            source.close()
            return
        self._source = source
        self.running = True
        try:
            self._serve(source)
        except RuntimeError as exc:  # the loop closed under us: the service is stopping
            if not self._stop.is_set():
                self._fail(f"stopped: {exc}")
        except Exception as exc:
            self._fail(f"stopped: {exc}")
        finally:
            self.running = False
            source.close()


class EbpfFeed(SourceThread[EbpfSource]):
    """Starts an `EbpfSource` and calls `on_chunks` on `loop` with every non-empty poll's chunks, and
    `on_sockets` (when given) with its socket owners, before the chunks of the same poll."""

    def __init__(
        self,
        on_chunks: Callable[[list[Chunk]], None],
        loop: asyncio.AbstractEventLoop,
        source: Callable[[], EbpfSource] = EbpfSource,
        on_sockets: Callable[[list[SocketOwner]], None] | None = None,
    ) -> None:
        super().__init__(source, loop, name="ebpf", what="eBPF TLS source")
        self._on_chunks = on_chunks
        self._on_sockets = on_sockets

    @property
    def stats(self) -> EbpfStats:
        return self._source.stats if self._source is not None else EbpfStats()

    @property
    def hooks(self) -> list[Hook]:
        return list(self._source.hooks.values()) if self._source is not None else []

    def _serve(self, source: EbpfSource) -> None:
        hooked = sum(1 for h in source.hooks.values() if h.functions)
        log.info("eBPF TLS source running", extra={"libraries_hooked": hooked})
        while not self._stop.is_set():
            chunks = source.poll(POLL_MS)
            if self._on_sockets is not None:
                sockets = source.take_sockets()
                if sockets:
                    self._loop.call_soon_threadsafe(self._on_sockets, sockets)
            if chunks:
                self._loop.call_soon_threadsafe(self._on_chunks, chunks)
