"""A TLS terminator for servers that speak no TLS themselves (the MongoDB-wire stand-in).

It accepts TLS on a loopback port with the certificate it is given (and, with `client_ca`, requires
a client certificate signed by that CA), then relays the plaintext to the backend port — what a
TLS-terminating proxy in front of a server does. Handshakes that complete and that fail are counted,
with the failures' reasons, so a test can tell "refused by TLS" from "never reached".
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from pathlib import Path

HANDSHAKE_TIMEOUT_S = 10.0
CHUNK = 65536


class TlsRelay:
    def __init__(self, backend_port: int, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.backend_port = backend_port
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        if client_ca is not None:
            self.ctx.load_verify_locations(str(client_ca))
            self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.port = 0
        self.handshakes = 0
        self.failures: list[str] = []
        self.client_subjects: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-relay", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            try:
                await writer.start_tls(self.ctx, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S)
            except (TimeoutError, OSError, ssl.SSLError) as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
                return
            self.handshakes += 1
            peer = writer.get_extra_info("peercert")
            if peer:
                self.client_subjects.append(str(peer.get("subject")))
            try:
                b_reader, b_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
            except OSError:
                return
            self._open.add(b_writer)
            try:
                await asyncio.gather(self._pump(reader, b_writer), self._pump(b_reader, writer))
            finally:
                b_writer.transport.abort()
                self._open.discard(b_writer)
        finally:
            writer.transport.abort()
            self._open.discard(writer)

    @staticmethod
    async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(CHUNK):
                dst.write(data)
                await dst.drain()
        except (OSError, ssl.SSLError):
            pass
        finally:
            with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
                dst.close()

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            # Connections still open (a client's pool) are cut: the handlers end with them.
            for w in list(self._open):
                w.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_closed() and not self._thread.is_alive():
            self._loop.close()
