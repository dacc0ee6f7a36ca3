"""The model catalog shared by the examples: a cheap and a strong hosted model.

Without `OPENAI_API_KEY` the CLI serves both from the seeded simulated
backend under the same names and prices, so the examples run anywhere.
"""

from budgetflow import AttemptEstimate, Catalog, LatencyProfile, LogNormal, ModelSpec

catalog = Catalog.of(
    ModelSpec(
        name="mini",
        litellm_model="openai/gpt-4o-mini",
        input_price_per_mtok="0.15",
        output_price_per_mtok="0.60",
        context_window=128_000,
        latency=LatencyProfile(ttft_s=0.4, tokens_per_s=90),
        tier="cheap",
    ),
    ModelSpec(
        name="4o",
        litellm_model="openai/gpt-4o",
        input_price_per_mtok="2.50",
        output_price_per_mtok="10.00",
        context_window=128_000,
        latency=LatencyProfile(ttft_s=0.6, tokens_per_s=60),
        tier="strong",
    ),
)


def estimate(p: float, tokens: float, seconds: float, *, spread: float, input_tokens: int) -> AttemptEstimate:
    """Prior beliefs for one attempt: success probability, output tokens and latency (relative spread)."""
    return AttemptEstimate(
        success_prob=p,
        output_tokens=LogNormal(mean=tokens, std=tokens * spread),
        latency_s=LogNormal(mean=seconds, std=seconds * spread),
        input_tokens=input_tokens,
    )
