"""The learning benchmark's workload: one recurring workflow whose inputs say how hard they are.

Every input is a bug report (`issue`) with a topic and a length. The topic shows in the
text (topic words), the length in its size; a further part of its difficulty is hidden.
Per input, the true distribution of every (subtask, model) attempt follows from these
(docs/learning_curve.md has the equations):

```text
topic t ~ Uniform(TOPICS)          words n = clip(round(exp(N(log 120, 0.6))), 30, 600)
hidden η ~ N(0, HIDDEN_SD)         difficulty d = LENGTH_SLOPE·log(n/120) + TOPIC_DIFFICULTY[t] + η
logit P(pass | s, m) = BASE[s][m] + AFFINITY[m][t] − SENSITIVITY[m]·d
output tokens ~ LogNormal(mean = OUT_BASE[s]·VERBOSITY[m]·sqrt(n/120), sd = 0.3·mean)
latency      ~ LogNormal(mean = TTFT[m] + tokens / SPEED[m], sd = 0.3·mean)
```

The planner does not know this. Its priors (`prior_estimates`) are wrong on purpose:
they believe the cheap model nearly as good as the strong one everywhere and every
answer shorter than it is. What it can learn: the topic words and the length are in
the prompt (what a per-input estimator embeds and measures); η is not, so a run's own
failures are the only evidence of it (what in-run updates pick up).

Everything is a pure function of a seed: `make_input(seed, index)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from agents import LLMAgent
from orchestrator.catalog import Catalog, ModelSpec
from orchestrator.estimates import AttemptEstimate, LogNormal
from orchestrator.workflow import Workflow

__all__ = [
    "MODELS",
    "SUBTASKS",
    "WORKFLOW",
    "LearningInput",
    "catalog",
    "make_input",
    "prior_estimates",
    "true_estimates",
    "workflow_for",
]

WORKFLOW = "issue-fix"
"""The workflow's name (the same for every input: what is learned is learned per workflow)."""
SUBTASKS: tuple[str, ...] = ("diagnose", "patch", "review")
"""A chain: each subtask runs after the one before."""
MODELS: tuple[str, ...] = ("small", "medium", "large")
"""Cheapest first."""

TOPICS: tuple[str, ...] = ("database", "frontend", "concurrency", "docs")
_TOPIC_WORDS: dict[str, tuple[str, ...]] = {
    "database": ("sql", "query", "index", "migration", "transaction", "schema", "join", "postgres"),
    "frontend": ("css", "button", "layout", "render", "component", "browser", "click", "modal"),
    "concurrency": ("thread", "lock", "race", "deadlock", "mutex", "async", "atomic", "scheduler"),
    "docs": ("readme", "typo", "docstring", "tutorial", "example", "wording", "link", "guide"),
}
_FILLER = [
    "the",
    "when",
    "after",
    "we",
    "see",
    "it",
    "this",
    "that",
    "error",
    "fails",
    "again",
    "users",
    "report",
    "should",
    "expected",
    "actual",
    "version",
    "steps",
    "reproduce",
    "running",
    "on",
    "with",
    "from",
    "but",
    "not",
    "always",
    "sometimes",
    "since",
    "update",
    "release",
    "log",
    "output",
    "shows",
    "value",
    "wrong",
    "returns",
    "none",
    "instead",
    "please",
    "fix",
    "see",
    "attached",
    "trace",
]
TOPIC_WORD_SHARE = 0.3
"""Share of an issue's words drawn from its topic's words (the rest is filler)."""

TOPIC_DIFFICULTY: dict[str, float] = {"database": 0.3, "frontend": -0.3, "concurrency": 1.0, "docs": -0.9}
LENGTH_SLOPE = 0.9
"""Difficulty added per unit of log(words / 120): long reports are harder."""
HIDDEN_SD = 0.8
"""σ of the hidden part η of the difficulty (not in the text)."""
BASE: dict[str, dict[str, float]] = {
    "diagnose": {"small": 1.4, "medium": 2.0, "large": 3.0},
    "patch": {"small": 0.2, "medium": 1.1, "large": 2.2},
    "review": {"small": 1.1, "medium": 1.8, "large": 2.8},
}
"""Log-odds of a pass at difficulty 0, per subtask and model."""
AFFINITY: dict[str, dict[str, float]] = {
    "small": {"database": 0.0, "frontend": 0.2, "concurrency": -0.6, "docs": 0.9},
    "medium": {"database": -0.2, "frontend": 1.0, "concurrency": -1.0, "docs": 0.3},
    "large": {"database": 0.0, "frontend": 0.0, "concurrency": 0.0, "docs": 0.0},
}
"""Per-model, per-topic log-odds: `medium` is good at front-end work and poor at concurrency."""
SENSITIVITY: dict[str, float] = {"small": 1.4, "medium": 1.0, "large": 0.6}
"""How much each model's log-odds fall per unit of difficulty."""
OUT_BASE: dict[str, float] = {"diagnose": 250.0, "patch": 450.0, "review": 200.0}
VERBOSITY: dict[str, float] = {"small": 0.9, "medium": 1.0, "large": 1.2}
TTFT_S: dict[str, float] = {"small": 0.3, "medium": 0.5, "large": 0.8}
SPEED_TPS: dict[str, float] = {"small": 120.0, "medium": 80.0, "large": 50.0}
SPREAD = 0.3
"""Relative standard deviation of output tokens and latency."""
_PRICES: dict[str, tuple[str, str]] = {
    "small": ("0.10", "0.40"),
    "medium": ("0.60", "2.40"),
    "large": ("2.50", "10.00"),
}
"""USD per million input and output tokens."""
_INSTRUCTIONS: dict[str, str] = {
    "diagnose": "Find the root cause of this bug report.",
    "patch": "Write a patch that fixes this bug report.",
    "review": "Review the fix for this bug report and list what it misses.",
}


@dataclass(frozen=True, kw_only=True)
class LearningInput:
    """One bug report and its latent truth."""

    index: int
    """Its number in its stream."""
    seed: int
    """The run seed it is run with (common random numbers across methods)."""
    topic: str
    """Its topic (shown by its words)."""
    words: int
    """Its length in words (shown by its size)."""
    hidden: float
    """η, the part of its difficulty that nothing in the text shows."""
    text: str
    """The report itself: the run's input `issue`."""

    @property
    def difficulty(self) -> float:
        """d = LENGTH_SLOPE·log(n/120) + TOPIC_DIFFICULTY[t] + η."""
        return LENGTH_SLOPE * math.log(self.words / 120) + TOPIC_DIFFICULTY[self.topic] + self.hidden


def make_input(seed: int, index: int) -> LearningInput:
    """The `index`-th input of stream `seed` (a pure function of both)."""
    rng = np.random.default_rng([seed, index, 0x1EA2])
    topic = TOPICS[int(rng.integers(len(TOPICS)))]
    words = int(np.clip(round(math.exp(rng.normal(math.log(120), 0.6))), 30, 600))
    hidden = float(rng.normal(0.0, HIDDEN_SD))
    vocab = _TOPIC_WORDS[topic]
    body = [
        vocab[int(rng.integers(len(vocab)))]
        if rng.random() < TOPIC_WORD_SHARE
        else _FILLER[int(rng.integers(len(_FILLER)))]
        for _ in range(words)
    ]
    return LearningInput(
        index=index,
        seed=seed * 1_000_003 + index,
        topic=topic,
        words=words,
        hidden=hidden,
        text=f"Issue {index}: " + " ".join(body),
    )


def _sigmoid(x: float) -> float:
    return 0.5 * (1 + math.tanh(x / 2))


def _estimate(p: float, tokens: float, model: str) -> AttemptEstimate:
    latency = TTFT_S[model] + tokens / SPEED_TPS[model]
    return AttemptEstimate(
        success_prob=p,
        output_tokens=LogNormal(mean=tokens, std=SPREAD * tokens),
        latency_s=LogNormal(mean=latency, std=SPREAD * latency),
        input_tokens=200,
    )


def true_estimates(item: LearningInput) -> dict[tuple[str, str], AttemptEstimate]:
    """The true distribution of one attempt of every (subtask, model) on this input."""
    d = item.difficulty
    out = {}
    for s in SUBTASKS:
        for m in MODELS:
            p = _sigmoid(BASE[s][m] + AFFINITY[m][item.topic] - SENSITIVITY[m] * d)
            tokens = OUT_BASE[s] * VERBOSITY[m] * math.sqrt(item.words / 120)
            out[(s, m)] = _estimate(p, tokens, m)
    return out


def prior_estimates() -> dict[tuple[str, str], AttemptEstimate]:
    """What the planner believes before any run: wrong on purpose.

    The cheap models look almost as reliable as `large` (0.85 / 0.88 / 0.92) on every
    subtask, and every answer looks 200 tokens long (shorter than most are).
    """
    believed = {"small": 0.85, "medium": 0.88, "large": 0.92}
    return {(s, m): _estimate(believed[m], 200.0, m) for s in SUBTASKS for m in MODELS}


def catalog() -> Catalog:
    """Three simulated models, priced like a small, a mid-size and a frontier hosted model."""
    return Catalog.of(
        *(
            ModelSpec(
                name=m,
                litellm_model=f"budgetflow-sim/{m}",
                input_price_per_mtok=_PRICES[m][0],
                output_price_per_mtok=_PRICES[m][1],
                tier="cheap" if m == "small" else "strong" if m == "large" else "other",
            )
            for m in MODELS
        )
    )


def workflow_for(truth: dict[tuple[str, str], AttemptEstimate]) -> Workflow:
    """The workflow, with `truth` as its subtasks' estimates: what the simulated backend draws from.

    The planner never sees these: every run passes an estimator that answers for every
    (subtask, model), so the subtasks' own estimates are only the simulation's truth.
    """
    wf = Workflow(WORKFLOW, inputs=["issue"])
    previous: list[str] = []
    for s in SUBTASKS:
        wf.subtask(
            s,
            LLMAgent(prompt=_INSTRUCTIONS[s] + "\n\n{issue}"),
            models=list(MODELS),
            after=previous,
            estimates={m: truth[(s, m)] for m in MODELS},
        )
        previous = [s]
    return wf
