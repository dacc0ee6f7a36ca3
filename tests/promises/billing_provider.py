"""A stand-in for a paid provider: an OpenAI-protocol server that bills with a real tokenizer.

A paid provider cannot be reached from tests, so this server takes its place: it
speaks the OpenAI chat-completions protocol over real HTTP (litellm talks to it as
to `api.openai.com`), streams server-sent events with a final usage chunk, and bills
the way OpenAI documents it: prompt tokens counted with the model's tiktoken encoding
(`o200k_base` for GPT-4o-family names, `cl100k_base` for GPT-4) over the chat framing
(3 tokens per message plus the role and content, 3 priming the reply), completion
tokens counted with the same encoding on the text it generates, never more than
`max_tokens` unless told to overbill.

It runs in its own process (`python -m tests.promises.billing_provider PORT`) so
that its work never stalls the client's event loop, and is configured and read
over HTTP: `POST /control` sets the behaviour, `GET /log` returns every request
it saw with what it billed and whether the reply was delivered whole.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Behaviour:
    """How the server answers (set with `POST /control`)."""

    reply_tokens: int = 20
    """Tokens the model "wants" to say; the reply is cut at `max_tokens`."""
    reply_word: str = " pass"
    """The word repeated to make the reply (one o200k token)."""
    first_token_delay_s: float = 0.0
    """Wait before the first chunk."""
    token_interval_s: float = 0.0
    """Wait between chunks."""
    completion_multiplier: float = 1.0
    """Bill this many times `max_tokens` as completion tokens (an overbilling provider) when > 1."""
    barrier: int = 0
    """When > 0, hold every reply until this many requests have arrived, then answer them together."""
    status: int = 200
    """Answer every request with this HTTP status (an error) when not 200."""


@dataclass
class Entry:
    """One request as the server saw it."""

    response_id: str
    model: str
    max_tokens: int
    prompt_tokens: int
    completion_tokens: int = 0
    delivered: bool = False
    """Whether the whole reply, usage included, was sent."""
    started: float = field(default_factory=time.time)
    ended: float | None = None


def _encoding_for(model: str) -> Any:
    import tiktoken
    from tiktoken.model import encoding_name_for_model

    name = model.rsplit("/", 1)[-1]
    try:
        encoding = encoding_name_for_model(name)
    except KeyError:
        encoding = "o200k_base"
    return tiktoken.get_encoding(encoding)


def bill_prompt(model: str, messages: list[dict[str, Any]]) -> int:
    """Prompt tokens as OpenAI bills them: tiktoken over the chat framing."""
    enc = _encoding_for(model)
    total = 3
    for message in messages:
        total += 3 + len(enc.encode(str(message["role"]), disallowed_special=()))
        total += len(enc.encode(str(message.get("content") or ""), disallowed_special=()))
    return total


def make_app() -> FastAPI:
    """The ASGI app."""
    app = FastAPI()
    behaviour = Behaviour()
    log: list[Entry] = []
    ids = itertools.count(1)
    arrived = asyncio.Condition()
    waiting = [0]

    @app.post("/control")
    async def control(request: Request) -> Response:
        nonlocal behaviour
        behaviour = Behaviour(**await request.json())
        log.clear()
        waiting[0] = 0
        return JSONResponse(asdict(behaviour))

    @app.get("/log")
    async def read_log() -> Response:
        return JSONResponse([asdict(e) for e in log])

    @app.post("/v1/chat/completions")
    async def complete(request: Request) -> Response:
        body = await request.json()
        b = behaviour
        if b.status != 200:
            return JSONResponse(
                {"error": {"message": f"scripted {b.status}", "type": "stub"}}, status_code=b.status
            )
        model = str(body["model"])
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 4096)
        entry = Entry(
            response_id=f"chatcmpl-bill{next(ids)}",
            model=model,
            max_tokens=max_tokens,
            prompt_tokens=bill_prompt(model, body["messages"]),
        )
        log.append(entry)
        if b.barrier > 0:
            async with arrived:
                waiting[0] += 1
                arrived.notify_all()
                await arrived.wait_for(lambda: waiting[0] >= b.barrier)
        return StreamingResponse(_stream(entry, b, body), media_type="text/event-stream")

    async def _stream(entry: Entry, b: Behaviour, body: dict[str, Any]) -> AsyncIterator[bytes]:
        enc = _encoding_for(entry.model)
        words = [b.reply_word] * min(b.reply_tokens, entry.max_tokens)
        base = {
            "id": entry.response_id,
            "object": "chat.completion.chunk",
            "created": 0,
            "model": entry.model,
        }
        text = ""
        try:
            if b.first_token_delay_s:
                await asyncio.sleep(b.first_token_delay_s)
            for i, word in enumerate(words):
                if i and b.token_interval_s:
                    await asyncio.sleep(b.token_interval_s)
                text += word
                delta = {"role": "assistant", "content": word}
                chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            finish = "length" if b.reply_tokens > entry.max_tokens else "stop"
            stop = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
            yield f"data: {json.dumps(stop)}\n\n".encode()
            completion = len(enc.encode(text, disallowed_special=()))
            if b.completion_multiplier > 1:
                completion = int(b.completion_multiplier * entry.max_tokens)
            entry.completion_tokens = completion
            usage = {
                "prompt_tokens": entry.prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": entry.prompt_tokens + completion,
            }
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
            yield b"data: [DONE]\n\n"
            entry.delivered = True
        finally:
            entry.ended = time.time()
            if not entry.delivered:
                entry.completion_tokens = len(enc.encode(text, disallowed_special=()))

    return app


@dataclass
class BillingProvider:
    """A running billing server (in its own process)."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """Base URL for litellm's `api_base` (`http://127.0.0.1:PORT/v1`)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def configure(self, **behaviour: Any) -> None:
        """Set the behaviour (fields of `Behaviour`; unset fields take their defaults) and clear the log."""
        httpx.post(f"http://127.0.0.1:{self.port}/control", json=behaviour, timeout=10).raise_for_status()

    def log(self) -> list[Entry]:
        """Every request seen since the last `configure`."""
        response = httpx.get(f"http://127.0.0.1:{self.port}/log", timeout=10)
        response.raise_for_status()
        return [Entry(**e) for e in response.json()]


@contextmanager
def billing_provider(port: int) -> Iterator[BillingProvider]:
    """Start the server on 127.0.0.1:`port` in a child process; stop it by PID afterwards."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.setdefault("TIKTOKEN_CACHE_DIR", str(_tiktoken_dir()))
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.promises.billing_provider", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    provider = BillingProvider(port=port, process=process)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/log", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    err = process.stderr.read().decode() if process.stderr else ""
                    raise RuntimeError(f"the billing provider did not start:\n{err}") from None
                time.sleep(0.05)
        yield provider
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _tiktoken_dir() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("litellm")
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"


def main() -> None:
    """`python -m tests.promises.billing_provider PORT`."""
    import uvicorn

    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_tiktoken_dir()))
    uvicorn.run(make_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")


if __name__ == "__main__":
    main()
