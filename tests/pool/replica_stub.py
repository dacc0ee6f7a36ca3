"""A stand-in vLLM replica for the pool client's failure tests: chat, ``/health``, ``/tokenize``.

`StubReplica` is the scripted OpenAI-protocol server of `tests.openai_stub` with the
parts of vLLM's server the pool uses besides chat: ``GET /health`` (200 while `alive`,
503 after the engine "died", as vLLM answers once its engine is dead), ``GET /metrics``
(an idle replica) and ``POST /tokenize``. A request whose last message contains
`poison` kills it the way a request that crashes the engine does: ``"crash"`` streams
vLLM's error event (code 500) and the replica stays dead; ``"drop"`` streams a few
words and then breaks the connection, and the replica stays dead.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from tests.openai_stub import ScriptedProvider, serve

__all__ = ["BLOCK_TOKENS", "StubReplica", "serve_replica", "unused_url"]

BLOCK_TOKENS = 16
"""Tokens per cached block (vLLM's default block size)."""
_ENGINE_DEAD = "EngineCore encountered an issue. See stack trace (above) for the root cause."
"""What vLLM streams to every request in flight when its engine dies."""


def unused_url() -> str:
    """The URL of a loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class _Dropped(Exception):
    """Raised inside a streaming reply: the server breaks the connection mid-body."""


@dataclass
class StubReplica(ScriptedProvider):
    """A scripted replica; see the module docstring. Serve it with `serve_replica`."""

    alive: bool = True
    """Whether ``/health`` answers 200 (else 503) and chat requests are served."""
    poison: str | None = None
    """A request whose last message contains this text kills the replica."""
    poison_mode: Literal["crash", "drop"] = "crash"
    """How it dies: an HTTP 500 error event, or a dropped connection mid-answer."""
    tokenize_status: int = 200
    """Status of ``/tokenize`` answers (e.g. 404 for a server without the endpoint)."""
    tokenize_requests: list[dict[str, object]] = field(default_factory=list)
    """JSON bodies received by ``/tokenize``."""
    health_checks: int = 0
    """``GET /health`` requests received."""
    prefix_cache: bool = False
    """Report cached prompt tokens as vLLM does with prefix caching: the prompt's leading
    whole blocks of `BLOCK_TOKENS` tokens that an earlier prompt to this replica shared."""
    _cached_blocks: set[int] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        """The replica's base URL (without ``/v1``)."""
        return self.url.removesuffix("/v1")

    @staticmethod
    def token_count(messages: Sequence[Mapping[str, object]]) -> int:
        """What ``/tokenize`` answers: 2 tokens of template per message, 1 per word, 1 to prime."""
        return sum(2 + len(str(m["content"]).split()) for m in messages) + 1

    def _usage(self, body: dict[str, object], completion_tokens: int) -> dict[str, object]:
        if not self.prefix_cache:
            return super()._usage(body, completion_tokens)
        messages = body["messages"]
        assert isinstance(messages, list)
        tokens = [t for m in messages for t in ("<m>", str(m["role"]), *str(m["content"]).split())]
        cached = 0
        for end in range(BLOCK_TOKENS, len(tokens) + 1, BLOCK_TOKENS):
            block = hash(tuple(tokens[:end]))
            if block in self._cached_blocks and cached == end - BLOCK_TOKENS:
                cached = end
            self._cached_blocks.add(block)
        return {
            "prompt_tokens": len(tokens),
            "completion_tokens": completion_tokens,
            "total_tokens": len(tokens) + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached},
        }

    def app(self) -> FastAPI:
        """The ASGI app."""
        app = FastAPI()

        @app.get("/health")
        async def health() -> Response:
            self.health_checks += 1
            return Response(status_code=200 if self.alive else 503)

        @app.get("/metrics")
        async def metrics() -> Response:
            return PlainTextResponse("vllm:num_requests_waiting 0\nvllm:num_requests_running 0\n")

        @app.post("/tokenize")
        async def tokenize(request: Request) -> Response:
            body = await request.json()
            self.tokenize_requests.append(body)
            if self.tokenize_status != 200:
                return JSONResponse({"error": {"message": "scripted"}}, status_code=self.tokenize_status)
            return JSONResponse({"count": self.token_count(body["messages"]), "max_model_len": 4096})

        @app.post("/v1/chat/completions")
        async def complete(request: Request) -> Response:
            body = await request.json()
            self.requests.append(body)
            if request.client is not None:
                self.client_ports.append(request.client.port)
            if not self.alive:
                return JSONResponse({"error": {"message": _ENGINE_DEAD, "code": 500}}, status_code=500)
            if self.poison is not None and self.poison in body["messages"][-1]["content"]:
                self.alive = False
                dying = self._crash() if self.poison_mode == "crash" else self._drop(body)
                return StreamingResponse(dying, media_type="text/event-stream")
            answer = self._next()
            if isinstance(answer, int):
                return JSONResponse(
                    {"error": {"message": f"scripted {answer}", "type": "stub"}}, status_code=answer
                )
            if answer == "slow":
                return StreamingResponse(self._slow(body), media_type="text/event-stream")
            return StreamingResponse(self._stream(body), media_type="text/event-stream")

        return app

    async def _crash(self) -> AsyncIterator[bytes]:
        error = {
            "error": {"message": _ENGINE_DEAD, "type": "InternalServerError", "param": None, "code": 500}
        }
        yield f"data: {json.dumps(error)}\n\n".encode()
        yield b"data: [DONE]\n\n"

    async def _drop(self, body: dict[str, object]) -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in self._stream(body, ["word"] * 50):
            yield chunk
            sent += 1
            if sent == 3:
                raise _Dropped("the replica died mid-answer")


@contextmanager
def serve_replica(replica: StubReplica) -> Iterator[StubReplica]:
    """Run `replica` on 127.0.0.1 and a free port (`tests.openai_stub.serve`); stop it afterwards."""
    with serve(replica):
        yield replica
