"""The simulated model backend: a provider that draws from estimates instead of thinking.

For every request it draws success, output length and latency from the
(subtask, model) `AttemptEstimate`, applies the request's max_tokens with
the shared `truncate` rule, "generates" for the drawn latency on the event
loop's clock (real or virtual), and answers with a clearly labelled text.
The drawn success stands in for the subtask's check (`simulated_success`).

Draws use common random numbers: the n-th call of (subtask, model) in a run
with seed s always sees the same draw, whatever happened before, so two
policies compared on the same seed face the same luck.

Per-input difficulty (`difficulty=σ`, off by default). With σ = 0 every attempt
succeeds independently with its estimate's probability p, as if each attempt saw a
fresh input. Real inputs are not like that: a hard one fails the cheap model again
and again, and the strong one more often too. With σ > 0 the run's input has, per
subtask, a latent difficulty drawn once from the seed,

    z ~ Normal(0, σ)          (the same for every model of the subtask)
    P(pass | z) = sigmoid(c · logit(p) − z),   c = sqrt(1 + π σ² / 8),

and attempts are independent given z. The factor `c` keeps the marginal success
rate, averaged over inputs, at p (the probit approximation of the logistic-normal
integral: within about 0.01 for σ ≤ 2), while attempts on one input are
correlated: the larger σ, the more a failure predicts the next one. p = 0 and p = 1
stay as they are. The draws keep common random numbers: the n-th call of (subtask,
model) compares the same uniform number with its input's P(pass | z).

`SimulatedClient` is the `ModelClient` used directly (fast path for
benchmarks on virtual time); `register_litellm_provider` makes the same
backend reachable through litellm as provider `budgetflow-sim`, so demo
runs take exactly the path real calls take.
"""

from __future__ import annotations

import asyncio
import math
import zlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from orchestrator.catalog import ModelSpec
from orchestrator.errors import ProviderError
from orchestrator.estimates import AttemptEstimate, truncate
from orchestrator.model_client import CallProgress, ChatMessage, ChatRequest, ChatResponse, PromptCount
from orchestrator.tokens import SIMULATED_ENCODING, count_locally, load_encoding, tiktoken_count

__all__ = ["SimulatedBackend", "SimulatedClient", "SimulatedDraw"]


_DIFFICULTY_STREAM = 0x5EED_D1FF
"""Tells the difficulty's random stream apart from the calls' (which end in a call number)."""


def _stable_hash(text: str) -> int:
    return zlib.crc32(text.encode())


@dataclass(frozen=True, kw_only=True)
class SimulatedDraw:
    """One drawn call."""

    success: bool
    """Whether the attempt passes (stands in for the check)."""
    input_tokens: int
    """Prompt tokens billed."""
    output_tokens: int
    """Output tokens generated (after max_tokens)."""
    latency_s: float
    """Time the call takes."""
    truncated: bool
    """Whether max_tokens cut the output."""


class SimulatedBackend:
    """Draws call outcomes from estimates, seeded, with common random numbers."""

    def __init__(
        self,
        estimates: Mapping[tuple[str, str], AttemptEstimate],
        *,
        seed: int = 0,
        time_scale: float = 1.0,
        error_rate: float = 0.0,
        difficulty: float = 0.0,
    ) -> None:
        """Make a backend.

        Args:
            estimates: beliefs per (subtask, model name) to draw from.
            seed: run seed; with the same seed, the n-th call of a (subtask, model) is the same.
            time_scale: multiply drawn latencies (0.1 runs ten times faster on a real clock).
            error_rate: probability that a call fails with a retryable 503, for retry tests.
            difficulty: σ of the per-input latent difficulty (see the module docstring);
                0 draws every attempt independently.
        """
        if time_scale <= 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        if not 0 <= error_rate < 1:
            raise ValueError(f"error_rate must be in [0, 1), got {error_rate}")
        self._estimates = dict(estimates)
        self._seed = seed
        self._time_scale = time_scale
        self._error_rate = error_rate
        if not (difficulty >= 0 and math.isfinite(difficulty)):
            raise ValueError(f"difficulty must be a finite σ >= 0, got {difficulty}")
        self._difficulty = difficulty
        self._on_input: dict[tuple[str, str], AttemptEstimate] = {}
        """Per (subtask, model), its estimate with this input's success probability."""
        self._counts: defaultdict[tuple[str, str], int] = defaultdict(int)

    def estimate(self, subtask: str, model: str) -> AttemptEstimate:
        """The estimate drawn from for (subtask, model)."""
        try:
            return self._estimates[(subtask, model)]
        except KeyError:
            raise ProviderError(
                f"the simulated backend has no estimate for subtask `{subtask}` on model `{model}`;"
                " give the subtask `estimates=` or let the run build default priors",
                retryable=False,
            ) from None

    def draw(
        self, subtask: str, model: str, max_tokens: int, *, input_tokens: int | None = None
    ) -> SimulatedDraw:
        """The next call of (subtask, model), with common random numbers.

        Args:
            subtask: whose estimates to draw from.
            model: the catalog model.
            max_tokens: the call's output cap (the shared truncation rule applies).
            input_tokens: the prompt's tokens, billed as they are; `None`: the estimate's.
        """
        est = self.estimate(subtask, model)
        if self._difficulty > 0:
            est = self._given_difficulty(subtask, model, est)
        n = self._counts[(subtask, model)]
        self._counts[(subtask, model)] = n + 1
        rng = np.random.default_rng([self._seed, _stable_hash(subtask), _stable_hash(model), n])
        if self._error_rate and rng.random() < self._error_rate:
            raise ProviderError(
                f"simulated 503 from `{model}` (error_rate={self._error_rate})",
                retryable=True,
                status_code=503,
            )
        raw = est.draw(rng, 1)
        if self._difficulty > 0 and est.samples:
            # Resampled attempts carry their own verdicts: this input's odds decide instead.
            raw = replace(raw, success=rng.random(1) < est.success_prob)
        capped = truncate(raw, max_tokens)
        return SimulatedDraw(
            success=bool(capped.success[0]),
            input_tokens=est.input_tokens if input_tokens is None else input_tokens,
            output_tokens=int(capped.output_tokens[0]),
            latency_s=float(capped.latency_s[0]) * self._time_scale,
            truncated=bool(capped.output_tokens[0] < raw.output_tokens[0]),
        )

    def input_difficulty(self, subtask: str) -> float:
        """The latent difficulty z of this run's input for `subtask` (0 without `difficulty`)."""
        if self._difficulty == 0:
            return 0.0
        rng = np.random.default_rng([self._seed, _stable_hash(subtask), _DIFFICULTY_STREAM])
        return float(rng.normal(0.0, self._difficulty))

    def _given_difficulty(self, subtask: str, model: str, est: AttemptEstimate) -> AttemptEstimate:
        key = (subtask, model)
        found = self._on_input.get(key)
        if found is None:
            p = est.success_prob
            if 0 < p < 1:
                scale = math.sqrt(1 + math.pi * self._difficulty**2 / 8)
                x = scale * math.log(p / (1 - p)) - self.input_difficulty(subtask)
                p = 0.5 * (1 + math.tanh(x / 2))  # sigmoid(x), without overflow
            found = replace(est, success_prob=p)
            self._on_input[key] = found
        return found

    async def generate(self, request: ChatRequest, progress: CallProgress, *, subtask: str) -> ChatResponse:
        """Play one call out on the loop's clock; on cancellation, `progress` holds the partial usage.

        The prompt is billed at its real size, counted as `orchestrator.tokens` counts it
        for simulated models (so a hold made from that count always covers the bill).
        """
        prompt_tokens = tiktoken_count(SIMULATED_ENCODING, request.messages)
        draw = self.draw(subtask, request.model.name, request.max_tokens, input_tokens=prompt_tokens)
        loop = asyncio.get_running_loop()
        start = loop.time()
        progress.input_tokens = draw.input_tokens
        ttft = _ttft(request.model, draw.latency_s)
        try:
            if request.timeout_s is not None and draw.latency_s > request.timeout_s:
                await asyncio.sleep(request.timeout_s)
                progress.output_tokens = math.floor(draw.output_tokens * request.timeout_s / draw.latency_s)
                raise ProviderError(
                    f"simulated call to `{request.model.name}` timed out after {request.timeout_s:.2f}s",
                    retryable=True,
                )
            await asyncio.sleep(draw.latency_s)
        except asyncio.CancelledError:
            elapsed = loop.time() - start
            fraction = min(1.0, elapsed / draw.latency_s) if draw.latency_s > 0 else 1.0
            progress.output_tokens = math.floor(draw.output_tokens * fraction)
            if elapsed >= ttft:
                progress.first_token_s = start + ttft
            raise
        progress.output_tokens = draw.output_tokens
        progress.first_token_s = start + ttft
        verdict = "PASS" if draw.success else "FAIL"
        text = (
            f"[simulated {request.model.name} output for `{subtask}`: {verdict},"
            f" {draw.output_tokens} tokens{', truncated' if draw.truncated else ''}]"
        )
        return ChatResponse(
            text=text,
            input_tokens=draw.input_tokens,
            output_tokens=draw.output_tokens,
            finish_reason="length" if draw.truncated else "stop",
            latency_s=draw.latency_s,
            ttft_s=ttft,
            provider="budgetflow-sim",
            simulated=True,
            simulated_success=draw.success,
        )


def _ttft(model: ModelSpec, latency_s: float) -> float:
    if model.latency is not None:
        return min(latency_s, model.latency.ttft_s)
    return latency_s * 0.1


class SimulatedClient:
    """A `ModelClient` answering every request from a `SimulatedBackend` (no litellm)."""

    def __init__(self, backend: SimulatedBackend) -> None:
        self.backend = backend

    async def prepare(self) -> None:
        """Load the tokenizer the backend bills prompts with (off the event loop)."""
        await asyncio.to_thread(load_encoding, SIMULATED_ENCODING)

    async def count_prompt_tokens(self, model: ModelSpec, messages: Sequence[ChatMessage]) -> PromptCount:
        """Exactly what the backend will bill."""
        return count_locally(model, messages)

    async def complete(self, request: ChatRequest, progress: CallProgress) -> ChatResponse:
        """Answer from the backend; the request's `sim_key` names the subtask."""
        if request.sim_key is None:
            raise ProviderError(
                "a simulated request needs `sim_key` (the subtask name); calls made through"
                " the executor's gateway set it",
                retryable=False,
            )
        return await self.backend.generate(request, progress, subtask=request.sim_key)

    async def aclose(self) -> None:
        """Nothing to release."""
