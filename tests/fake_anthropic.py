"""A local stand-in for Anthropic's Messages API, for tests that run the real SDK.

The SDK 2.x speaks httpx2, which respx cannot intercept, so tests point it at this server instead
(``Config.anthropic_base_url``). It answers ``POST /v1/messages`` in the API's wire shape, accepts
either ``x-api-key`` or ``Authorization: Bearer``, and records every request (headers and parsed
body) in :attr:`FakeAnthropic.requests`.

What it answers is scripted: :meth:`FakeAnthropic.script` queues replies, each a :class:`Reply` or
a function of the request body returning one (:func:`tool_answer` and :func:`error` build them);
when the queue is empty, :attr:`FakeAnthropic.respond` (a function of the request body) answers;
with neither, the server answers 500 with a message saying nothing was scripted.
"""

from __future__ import annotations

import html
import json
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP answer."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


Scripted = Reply | Callable[[dict[str, Any]], Reply]


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received."""

    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: dict[str, Any]


def tool_answer(
    answer: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]],
    *,
    input_tokens: int = 120,
    output_tokens: int = 40,
    model: str | None = None,
) -> Callable[[dict[str, Any]], Reply]:
    """A reply calling the request's forced tool with ``answer`` as its input.

    Args:
        answer: the tool input, or a function of the request body returning it (to cite the refs
            or echo the placeholders the request carried).
        input_tokens: reported prompt tokens.
        output_tokens: reported answer tokens.
        model: the model id to report; the requested one when None.
    """

    def reply(request: dict[str, Any]) -> Reply:
        tool = (request.get("tool_choice") or {}).get("name") or request["tools"][0]["name"]
        tool_input = answer(request) if callable(answer) else answer
        return Reply(
            200,
            {
                "id": f"msg_{uuid.uuid4().hex[:24]}",
                "type": "message",
                "role": "assistant",
                "model": model or request.get("model"),
                "content": [
                    {
                        "type": "tool_use",
                        "id": f"toolu_{uuid.uuid4().hex[:24]}",
                        "name": tool,
                        "input": tool_input,
                    }
                ],
                "stop_reason": "tool_use",
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            },
        )

    return reply


def error(
    status: int, message: str = "scripted failure", *, retry_after: float | None = None
) -> Reply:
    """An API error reply in the wire shape, with ``retry-after`` when given (seconds)."""
    headers = {}
    if retry_after is not None:
        headers["retry-after"] = f"{retry_after:g}"
    body = {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
    }
    return Reply(status, body, headers)


def user_text(request: dict[str, Any]) -> str:
    """All text of the request's user turns, tool results included, joined by newlines."""
    texts: list[str] = []
    for message in request.get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for block in blocks:
            if block.get("type") == "text":
                texts.append(block["text"])
            elif block.get("type") == "tool_result":
                inner = block.get("content")
                texts.append(inner if isinstance(inner, str) else json.dumps(inner))
    return "\n".join(texts)


_EVIDENCE = re.compile(r'<evidence ref="([^"]*)"[^>]*>(.*?)</evidence>', re.DOTALL)
_PLACEHOLDER = re.compile(r"\[(?:PERSON|EMAIL|PHONE|ID|URL)_\d+\]")


def evidence_blocks(request: dict[str, Any]) -> list[tuple[str, str]]:
    """``(ref, text)`` of every evidence element in the first user turn, unescaped."""
    first = request["messages"][0]["content"]
    text = first if isinstance(first, str) else first[0]["text"]
    return [(html.unescape(ref), html.unescape(body)) for ref, body in _EVIDENCE.findall(text)]


def placeholders_seen(request: dict[str, Any]) -> list[str]:
    """Distinct placeholders in the request's user turns, in order of first appearance."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(user_text(request))))


class FakeAnthropic:
    """The fake Messages API server on 127.0.0.1 and an ephemeral port."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.respond: Callable[[dict[str, Any]], Reply] | None = None
        self._queue: deque[Scripted] = deque()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The base URL to give the SDK."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def script(self, *replies: Scripted) -> None:
        """Queue replies, answered in order, one per request."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """The parsed JSON body of every recorded request."""
        return [request.body for request in self.requests]

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            scripted = self._queue.popleft() if self._queue else None
        if scripted is None:
            if self.respond is None:
                return error(500, "the fake Anthropic server has no scripted reply left")
            return self.respond(body)
        return scripted(body) if callable(scripted) else scripted

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                headers = {name.lower(): value for name, value in self.headers.items()}
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._send(error(400, "the body is not JSON"))
                    return
                with fake._lock:
                    fake.requests.append(RecordedRequest(self.path, headers, body))
                if self.path.split("?")[0] != "/v1/messages":
                    self._send(error(404, f"no route {self.path}"))
                    return
                bearer = headers.get("authorization", "")
                if not headers.get("x-api-key") and not bearer.startswith("Bearer "):
                    self._send(error(401, "no API key"))
                    return
                self._send(fake._answer(body))

            def _send(self, reply: Reply) -> None:
                data = json.dumps(reply.body).encode()
                self.send_response(reply.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", f"req_{uuid.uuid4().hex[:16]}")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
