"""A local server that speaks the OpenAI chat-completions protocol, scripted per request.

It stands in for a paid provider (which cannot be reached from tests): litellm
talks to it over real HTTP exactly as it would to the provider, streaming
server-sent events with a final usage chunk. Each request takes the next
entry of the script: `"ok"`, an HTTP status such as `429` or `500`,
`"malformed"` (a 200 whose stream is not valid JSON), or `"slow"` (a long reply
streamed one word per `slow_interval_s`, like a model generating; the server notes when
a client goes away before its end, as vLLM does to abort a request).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse


@dataclass
class ScriptedProvider:
    """The script and what the server saw."""

    script: list[str | int]
    """What to answer to each request, in order (the last entry repeats)."""
    text: str = "Hello from the stub"
    """Reply text for `ok` answers, streamed word by word."""
    requests: list[dict[str, object]] = field(default_factory=list)
    """JSON bodies received."""
    url: str = ""
    """Base URL (`http://127.0.0.1:PORT/v1`) once started."""
    slow_words: int = 5000
    """Words in a `slow` reply."""
    slow_interval_s: float = 0.01
    """Pause before each word of a `slow` reply."""
    client_ports: list[int] = field(default_factory=list)
    """Client TCP port of each request (equal ports: a reused connection)."""
    disconnects: list[float] = field(default_factory=list)
    """`time.monotonic()` at which a `slow` reply stopped because its client went away."""

    def _next(self) -> str | int:
        index = min(len(self.requests) - 1, len(self.script) - 1)
        return self.script[index]

    def app(self) -> FastAPI:
        """The ASGI app."""
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def complete(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)
            if request.client is not None:
                self.client_ports.append(request.client.port)
            answer = self._next()
            if isinstance(answer, int):
                return JSONResponse(
                    {"error": {"message": f"scripted {answer}", "type": "stub"}}, status_code=answer
                )
            if answer == "malformed":
                return StreamingResponse(iter([b"data: {not json\n\n"]), media_type="text/event-stream")
            if answer == "slow":
                return StreamingResponse(self._slow(body), media_type="text/event-stream")
            return StreamingResponse(self._stream(body), media_type="text/event-stream")

        return app

    async def _slow(self, body: dict[str, object]) -> AsyncIterator[bytes]:
        # Starlette cancels a streaming reply when the client disconnects (ASGI
        # `http.disconnect`); the cancellation lands in the pause before the next word.
        finished = False
        try:
            async for chunk in self._stream(body, ["word"] * self.slow_words, self.slow_interval_s):
                yield chunk
            finished = True
        finally:
            if not finished:
                self.disconnects.append(time.monotonic())

    def _usage(self, body: dict[str, object], completion_tokens: int) -> dict[str, object]:
        """The usage block of a reply (a fixed 12 prompt tokens)."""
        return {
            "prompt_tokens": 12,
            "completion_tokens": completion_tokens,
            "total_tokens": 12 + completion_tokens,
        }

    async def _stream(
        self, body: dict[str, object], words: list[str] | None = None, interval_s: float = 0.0
    ) -> AsyncIterator[bytes]:
        words = self.text.split() if words is None else words
        base = {
            "id": "chatcmpl-stub",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": body["model"],
        }
        for i, word in enumerate(words):
            delta = {"role": "assistant", "content": (" " if i else "") + word}
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            await asyncio.sleep(interval_s)
        stop = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield f"data: {json.dumps(stop)}\n\n".encode()
        usage = self._usage(body, len(words))
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serve(provider: ScriptedProvider) -> Iterator[ScriptedProvider]:
    """Run the stub on 127.0.0.1 and a free port in a background thread; stop it afterwards."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(provider.app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(500):
        if server.started:
            started.set()
            break
        threading.Event().wait(0.01)
    if not started.is_set():
        server.should_exit = True
        raise RuntimeError("the OpenAI stub did not start within 5 s")
    provider.url = f"http://127.0.0.1:{port}/v1"
    try:
        yield provider
    finally:
        server.should_exit = True
        thread.join(timeout=10)
