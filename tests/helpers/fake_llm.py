"""A stand-in for an OpenAI-compatible LLM endpoint: no model runs on these machines, so tests script
the model's turns and this server plays them over real HTTP on loopback.

`POST /v1/chat/completions` answers with the next scripted `Turn` — text, tool calls (with any
arguments, malformed ones included), an HTTP error, a malformed body or no answer at all — as one JSON
completion or, when the request asks for `stream`, as server-sent chunks the way OpenAI streams them
(tool-call arguments split across chunks). Every request body is recorded for the test to read.
When the script runs out, `then` answers (a Turn, or a function of the request), so a model that
calls tools forever is one line.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Turn:
    """One scripted answer of the model."""

    text: str = ""
    # (name, arguments): a dict is sent as JSON, a str as-is (so a test can send malformed JSON).
    tool_calls: tuple[tuple[str, dict[str, Any] | str], ...] = ()
    status: int = 200  # anything else answers an OpenAI-style error body with this status
    raw: bytes | None = None  # sent as the body instead of a completion (malformed answers)
    hang: bool = False  # never answer (until the server stops): the client's timeout must fire


def call(name: str, arguments: dict[str, Any] | str | None = None) -> Turn:
    return Turn(tool_calls=((name, {} if arguments is None else arguments),))


Responder = Callable[[dict[str, Any]], Turn]


@dataclass
class FakeLlm:
    script: list[Turn] = field(default_factory=list)
    then: Turn | Responder = field(default_factory=lambda: Turn(text="(the script has ended)"))
    model: str = "stand-in"
    requests: list[dict[str, Any]] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _released: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}/v1"

    def env(self, timeout_s: float = 30.0) -> dict[str, str]:
        """The WIRETIDE_LLM_* settings that point Wiretide here."""
        return {
            "WIRETIDE_LLM_BASE_URL": self.base_url,
            "WIRETIDE_LLM_MODEL": self.model,
            "WIRETIDE_LLM_API_KEY": "test-key",
            "WIRETIDE_LLM_TIMEOUT_S": str(timeout_s),
        }

    def next_turn(self, request: dict[str, Any]) -> Turn:
        with self._lock:
            self.requests.append(request)
            if self.script:
                return self.script.pop(0)
        return self.then(request) if callable(self.then) else self.then

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = {}
                if not self.path.endswith("/chat/completions"):
                    self._send(404, b'{"error":{"message":"no such route"}}')
                    return
                body["_authorization"] = self.headers.get("authorization", "")
                turn = fake.next_turn(body)
                if turn.hang:
                    fake._released.wait()
                    return
                if turn.raw is not None:
                    self._send(200, turn.raw)
                elif turn.status != 200:
                    err = {"error": {"message": f"scripted failure {turn.status}", "type": "server_error"}}
                    self._send(turn.status, json.dumps(err).encode())
                elif body.get("stream"):
                    self._stream(turn)
                else:
                    self._send(200, json.dumps(fake.completion(turn)).encode())

            def _send(self, status: int, data: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, turn: Turn) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                for chunk in fake.chunks(turn):
                    self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-llm", daemon=True).start()

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- the OpenAI wire shapes -------------------------------------------------------------------

    def _calls(self, turn: Turn) -> list[dict[str, Any]]:
        return [
            {
                "id": f"call_{next(self._ids)}",
                "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
            }
            for name, args in turn.tool_calls
        ]

    def completion(self, turn: Turn) -> dict[str, Any]:
        calls = self._calls(turn)
        message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
        if calls:
            message["tool_calls"] = calls
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": 0,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def chunks(self, turn: Turn) -> Iterator[dict[str, Any]]:
        ident = f"chatcmpl-{next(self._ids)}"

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": 0,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        yield chunk({"role": "assistant", "content": ""})
        words = turn.text.split(" ")
        for i, word in enumerate(words):
            if word or i:
                yield chunk({"content": word if i == 0 else " " + word})
        calls = self._calls(turn)
        for index, c in enumerate(calls):
            args = c["function"]["arguments"]
            half = len(args) // 2
            head = {"index": index, "id": c["id"], "type": "function"}
            yield chunk(
                {
                    "tool_calls": [
                        {**head, "function": {"name": c["function"]["name"], "arguments": args[:half]}}
                    ]
                }
            )
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": args[half:]}}]})
        yield chunk({}, "tool_calls" if calls else "stop")


@contextmanager
def fake_llm(*turns: Turn, then: Turn | Responder | None = None) -> Iterator[FakeLlm]:
    fake = FakeLlm(script=list(turns))
    if then is not None:
        fake.then = then
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
