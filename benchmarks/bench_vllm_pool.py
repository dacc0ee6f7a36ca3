"""Benchmark the vLLM pool routers on a multi-agent workload over real vLLM CPU replicas.

Workload (seeded, identical for every router): `--workflows` workflows run at once;
each is a chain of agent steps (planner, coder, tester, coder, reviewer, ...). Every
agent role has a long system prompt (1-2k tokens, shared by all workflows), every
workflow has a shared context document (shared by all its steps), and each step also
sees its parent's output. Parent outputs are synthetic (seeded) so that every router
gets exactly the same prompts; the model still generates `--output-tokens` tokens.

For each router strategy, on `--replicas` replicas with a small KV cache (so eviction
happens), after resetting every prefix cache:

* prefix-cache hit rate from vLLM's own counters
  (`vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total` deltas),
* TTFT p50/p95 (client side), end-to-end throughput (requests/s over the makespan),
* load imbalance: max/mean requests per replica.

The ideal hit rate comes from the same workload (same requests, same workflow order,
same concurrency) on a single replica whose KV cache is the SUM of the pool's
(`--replicas x --kv-blocks` blocks): no router can beat one cache of the same total
size, since a pool can only lose hits by splitting or duplicating prefixes. With
`--unbounded-ideal` the same workload is also run on one replica with
`--unbounded-kv-blocks` blocks (never evicts), as a reference for what eviction costs.
`prefix_load+nobalance` is `prefix_load` without its share bound (`balance_slack=None`).
`<router>+warm` is that router plus workflow-aware warm-up: when a step starts, the
next step's prefix (role prompt + shared context) is warmed on the replica the router
would choose, if that replica's load is at most `--warm-max-load`.

Every row is the median over `--repeats` runs (each on a freshly reset prefix cache);
the JSON also keeps every run.

Usage (starts and stops its own replicas; about 10 minutes on 2 cores):

    .venv/bin/python benchmarks/bench_vllm_pool.py --repeats 3 --unbounded-ideal

Writes `benchmarks/results/vllm_pool.json` and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from orchestrator.catalog import ModelSpec, PoolSpec  # noqa: E402
from orchestrator.model_client import CallProgress, ChatMessage, ChatRequest, ChatResponse  # noqa: E402
from orchestrator.pool import (  # noqa: E402
    STRATEGIES,
    PooledLiteLLMCaller,
    ReplicaMetrics,
    RouterConfig,
    Strategy,
    fetch_metrics,
)

TEAM_SIZE = 4
"""Agent roles per workflow; a workflow's steps cycle through its team."""


# -- workload ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    workflow: int
    index: int
    role: int
    messages: tuple[ChatMessage, ...]
    warm_prefix: tuple[ChatMessage, ...]


class Words:
    """Seeded pseudo-English whose token count is measured with the model's tokenizer."""

    def __init__(self, tokenizer_path: Path, seed: int) -> None:
        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(tokenizer_path))
        rng = random.Random(seed)
        syll = [a + b for a in "bcdfghjklmnprstvwz" for b in ("a", "e", "i", "o", "u", "ai", "ou")]
        self._vocab = ["".join(rng.choices(syll, k=rng.randint(1, 3))) for _ in range(3000)]

    def tokens(self, text: str) -> int:
        return len(self._tok.encode(text).ids)

    def text(self, rng: random.Random, n_tokens: int) -> str:
        words: list[str] = []
        # ~1.6 tokens per word for this vocabulary; top up until the count is reached.
        while True:
            words += rng.choices(self._vocab, k=max(8, (n_tokens - self.tokens(" ".join(words))) // 2))
            if self.tokens(" ".join(words)) >= n_tokens:
                return " ".join(words)


def build_workload(
    words: Words, *, roles: int, workflows: int, steps: int, seed: int
) -> tuple[list[list[Step]], float]:
    """Per workflow, its chain of steps; and the measured characters per token.

    Each workflow draws a team of `TEAM_SIZE` roles; step k is done by team[k % TEAM_SIZE],
    so with more steps than team members an agent comes back to the same workflow.
    """
    rng = random.Random(seed)
    system = [
        f"You are agent {r} of a software team. Rules:\n" + words.text(rng, rng.randint(1000, 2000))
        for r in range(roles)
    ]
    chains: list[list[Step]] = []
    chars = tokens = 0
    for w in range(workflows):
        team = rng.sample(range(roles), TEAM_SIZE)
        context = f"Shared context of workflow {w}:\n{words.text(rng, rng.randint(300, 600))}"
        chain: list[Step] = []
        for k in range(steps):
            role = team[k % TEAM_SIZE]
            parent = words.text(rng, rng.randint(60, 150)) if k else "(none)"
            prefix: tuple[ChatMessage, ...] = (
                {"role": "system", "content": system[role]},
                {"role": "user", "content": context},
            )
            user = f"{context}\n\nOutput of the previous step:\n{parent}\n\nDo step {k} as agent {role}."
            messages: tuple[ChatMessage, ...] = (
                {"role": "system", "content": system[role]},
                {"role": "user", "content": user},
            )
            chain.append(Step(workflow=w, index=k, role=role, messages=messages, warm_prefix=prefix))
            text = system[role] + user
            chars += len(text)
            tokens += words.tokens(text)
        chains.append(chain)
    return chains, chars / tokens


# -- one run ----------------------------------------------------------------------------


@dataclass
class RunResult:
    router: str
    replicas: int
    requests: int
    hit_rate: float
    client_hit_rate: float
    ttft_p50_s: float
    ttft_p95_s: float
    makespan_s: float
    throughput_rps: float
    load_imbalance: float
    requests_per_replica: list[int]
    prompt_tokens: int
    computed_prompt_tokens: int
    warm_requests: int = 0
    warm_prompt_tokens: int = 0
    hit_rate_excl_warm: float = 0.0
    spilled: int = 0
    rebalanced: int = 0
    homed_groups: list[int] | None = None


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _metrics(http: httpx.AsyncClient, urls: list[str]) -> dict[str, ReplicaMetrics]:
    return {u: await fetch_metrics(http, u) for u in urls}


async def run_once(
    label: str,
    strategy: Strategy,
    urls: list[str],
    chains: list[list[Step]],
    *,
    chars_per_token: float,
    output_tokens: int,
    warm: bool,
    seed: int,
    concurrency: int,
    load_scale: float,
    warm_max_load: int,
    balance: bool = True,
) -> RunResult:
    pool = PoolSpec(name="bench", served_model="tiny-llama", replicas=tuple(urls), block_size_tokens=32)
    model = ModelSpec(
        name="tiny",
        litellm_model="hosted_vllm/tiny-llama",
        input_price_per_mtok=Decimal("0.1"),
        output_price_per_mtok=Decimal("0.4"),
        pool="bench",
    )
    config = RouterConfig(
        strategy=strategy,
        seed=seed,
        chars_per_token=chars_per_token,
        load_scale=load_scale,
        warm_max_load=warm_max_load,
        balance_slack=RouterConfig().balance_slack if balance else None,
    )
    async with httpx.AsyncClient(timeout=30) as http:
        for url in urls:
            (await http.post(f"{url}/reset_prefix_cache")).raise_for_status()
        before = await _metrics(http, urls)
        responses: list[ChatResponse] = []
        warms: list[Any] = []
        async with PooledLiteLLMCaller(
            pool, router_config=config, extra_body={"ignore_eos": True}, health_interval_s=0.25
        ) as caller:
            slots = asyncio.Semaphore(concurrency)

            async def workflow(chain: list[Step]) -> None:
                async with slots:
                    await steps(chain)

            async def steps(chain: list[Step]) -> None:
                for k, step in enumerate(chain):
                    warm_task = None
                    if warm and k + 1 < len(chain):
                        warm_task = asyncio.create_task(caller.warm(chain[k + 1].warm_prefix))
                    request = ChatRequest(
                        model=model, messages=step.messages, max_tokens=output_tokens, temperature=0.0
                    )
                    responses.append(await caller.complete(request, CallProgress()))
                    if warm_task is not None:
                        warms.append(await warm_task)

            started = time.monotonic()
            await asyncio.gather(*(workflow(c) for c in chains))
            makespan = time.monotonic() - started
            router_stats = caller.router.stats()
        finished = sum(m.requests_finished for m in before.values()) + len(responses)
        finished += sum(1 for w in warms if w is not None)
        deadline = time.monotonic() + 30
        while True:  # vLLM publishes counters per engine step; wait until all are counted
            after = await _metrics(http, urls)
            if sum(m.requests_finished for m in after.values()) >= finished or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    hits = sum(after[u].prefix_cache_hits - before[u].prefix_cache_hits for u in urls)
    queries = sum(after[u].prefix_cache_queries - before[u].prefix_cache_queries for u in urls)
    per_replica = Counter(r.replica for r in responses)
    counts = [per_replica.get(u, 0) for u in urls]
    prompt = sum(r.input_tokens for r in responses)
    cached = sum(r.cached_tokens for r in responses)
    ttfts = [r.ttft_s for r in responses if r.ttft_s is not None]
    done_warms = [w for w in warms if w is not None]
    warm_prompt = sum(w.prompt_tokens for w in done_warms)
    warm_cached = sum(w.cached_tokens for w in done_warms)
    return RunResult(
        router=label,
        replicas=len(urls),
        requests=len(responses),
        hit_rate=hits / queries if queries else 0.0,
        client_hit_rate=cached / prompt if prompt else 0.0,
        ttft_p50_s=statistics.median(ttfts),
        ttft_p95_s=_pct(ttfts, 0.95),
        makespan_s=makespan,
        throughput_rps=len(responses) / makespan,
        load_imbalance=max(counts) / statistics.mean(counts),
        requests_per_replica=counts,
        prompt_tokens=prompt,
        computed_prompt_tokens=int(queries - hits),
        warm_requests=len(done_warms),
        warm_prompt_tokens=warm_prompt,
        # vLLM's counters minus the warm-up requests' own lookups: the real requests' hit rate.
        hit_rate_excl_warm=(hits - warm_cached) / (queries - warm_prompt) if queries > warm_prompt else 0.0,
        spilled=sum(s.spilled_in for s in router_stats.values()),
        rebalanced=sum(s.rebalanced_in for s in router_stats.values()),
        homed_groups=[router_stats[u].homed_groups for u in urls],
    )


# -- driver -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RunSettings:
    """What every `run_once` of one benchmark shares besides the replicas and the routers."""

    chars_per_token: float
    """Measured characters per token of the workload (for the router's block hashing)."""
    output_tokens: int
    """Tokens generated per request."""
    seed: int
    """Base seed; repeat `i` runs with `seed + i`."""
    concurrency: int
    """Workflows running at once."""
    load_scale: float
    """`RouterConfig.load_scale`."""
    warm_max_load: int
    """`RouterConfig.warm_max_load` for the `+warm` rows."""


async def run_routers(
    urls: list[str], chains: list[list[Step]], labels: list[str], repeats: int, settings: RunSettings
) -> dict[str, list[RunResult]]:
    """Run every label `repeats` times on `urls`, after one discarded warm-up run.

    A label is a strategy, optionally with `+warm` (warm-up on) and/or `+nobalance`
    (`prefix_load` without its share bound, `RouterConfig.balance_slack=None`); any other
    label (a reference row on one replica, where every strategy routes alike) runs
    `prefix_load`. Returns every run, per label, in order.
    """
    # One discarded run first: the first requests of a fresh vLLM process are slow.
    await run_once(
        "warmup",
        "round_robin",
        urls,
        chains[:2],
        chars_per_token=settings.chars_per_token,
        output_tokens=settings.output_tokens,
        warm=False,
        seed=settings.seed,
        concurrency=settings.concurrency,
        load_scale=settings.load_scale,
        warm_max_load=settings.warm_max_load,
    )
    out: dict[str, list[RunResult]] = {label: [] for label in labels}
    # Routers interleaved within each repeat, so that a slow phase of the shared
    # machine hits every router alike instead of one router's three runs.
    for i in range(repeats):
        for label in labels:
            name = label.split("+")[0]
            strategy: Any = name if name in STRATEGIES else "prefix_load"
            run = await run_once(
                label,
                strategy,
                urls,
                chains,
                chars_per_token=settings.chars_per_token,
                output_tokens=settings.output_tokens,
                warm="+warm" in label,
                seed=settings.seed + i,
                concurrency=settings.concurrency,
                load_scale=settings.load_scale,
                warm_max_load=settings.warm_max_load,
                balance="+nobalance" not in label,
            )
            out[label].append(run)
            print(f"[{i + 1}/{repeats}] " + _table([run], None, None).splitlines()[-1], flush=True)
    return out


def _table(results: list[RunResult], ideal: float | None, rr: float | None) -> str:
    head = (
        f"{'router':<22} {'hit rate':>8} {'/ideal':>7} {'x RR':>5} {'no-warm':>7} {'client':>7}"
        f" {'TTFT p50':>9} {'TTFT p95':>9} {'req/s':>6} {'imbal':>6} {'computed tok':>12}"
        f" {'warm':>5} {'moved':>5}  per replica"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        share = f"{r.hit_rate / ideal:.1%}" if ideal else "-"
        vs_rr = f"{r.hit_rate / rr:.2f}" if rr else "-"
        lines.append(
            f"{r.router:<22} {r.hit_rate:>8.1%} {share:>7} {vs_rr:>5} {r.hit_rate_excl_warm:>7.1%}"
            f" {r.client_hit_rate:>7.1%} {r.ttft_p50_s * 1000:>7.0f}ms {r.ttft_p95_s * 1000:>7.0f}ms"
            f" {r.throughput_rps:>6.2f}"
            f" {r.load_imbalance:>6.2f} {r.computed_prompt_tokens:>12} {r.warm_requests:>5}"
            f" {r.spilled + r.rebalanced:>5}  {r.requests_per_replica}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--roles", type=int, default=10, help="agent roles (system prompts)")
    parser.add_argument("--workflows", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=6, help="workflows running at once")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--output-tokens", type=int, default=16)
    parser.add_argument("--kv-blocks", type=int, default=400, help="KV blocks (32 tokens) per replica")
    parser.add_argument(
        "--ideal-kv-blocks", type=int, default=None, help="default: replicas x kv-blocks (the pool's sum)"
    )
    parser.add_argument("--unbounded-ideal", action="store_true", help="also run a never-evicting replica")
    parser.add_argument("--unbounded-kv-blocks", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=1, help="runs per router (medians reported)")
    parser.add_argument("--warm-max-load", type=int, default=2, help="load at which `+warm` still warms")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--load-scale", type=float, default=RouterConfig().load_scale)
    parser.add_argument(
        "--routers",
        default=",".join([*STRATEGIES, "prefix_load+nobalance", "prefix_load+warm", "prefix_home+warm"]),
    )
    parser.add_argument("--no-ideal", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "vllm_pool.json")
    args = parser.parse_args(argv)
    ideal_blocks = args.ideal_kv_blocks or args.replicas * args.kv_blocks

    replicas_mod = importlib.import_module("vllm_replicas")
    model_dir = importlib.import_module("build_tiny_model").ensure_tiny_model()
    words = Words(model_dir / "tokenizer.json", seed=args.seed)
    chains, chars_per_token = build_workload(
        words, roles=args.roles, workflows=args.workflows, steps=args.steps, seed=args.seed
    )
    n_requests = sum(len(c) for c in chains)
    print(
        f"workload: {args.workflows} workflows x {args.steps} steps = {n_requests} requests,"
        f" {args.roles} roles, {args.concurrency} at once, {chars_per_token:.2f} chars/token",
        flush=True,
    )
    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    options = replicas_mod.ReplicaOptions(kv_blocks=args.kv_blocks, block_size=32, max_model_len=4096)
    results: list[RunResult] = []
    raw: dict[str, list[RunResult]] = {}

    settings = RunSettings(
        chars_per_token=chars_per_token,
        output_tokens=args.output_tokens,
        seed=args.seed,
        concurrency=args.concurrency,
        load_scale=args.load_scale,
        warm_max_load=args.warm_max_load,
    )

    async def run_all(urls: list[str], labels: list[str], repeats: int) -> list[RunResult]:
        out = await run_routers(urls, chains, labels, repeats, settings)
        raw.update(out)
        return [median_run(runs) for runs in out.values()]

    started = time.monotonic()
    with replicas_mod.VLLMReplicas(args.replicas, options=options) as pool:
        print(f"pool replicas: {pool.urls} ({args.kv_blocks} KV blocks of 32 tokens each)", flush=True)
        results = asyncio.run(run_all(pool.urls, routers, args.repeats))
    references: list[RunResult] = []
    ideal: RunResult | None = None
    runs = [(f"ideal {ideal_blocks}", ideal_blocks)] if not args.no_ideal else []
    if args.unbounded_ideal:
        runs.append((f"no-evict {args.unbounded_kv_blocks}", args.unbounded_kv_blocks))
    for label, blocks in runs:
        big = replicas_mod.ReplicaOptions(kv_blocks=blocks, block_size=32, max_model_len=4096)
        with replicas_mod.VLLMReplicas(1, options=big) as single:
            print(f"{label}: 1 replica with {blocks} KV blocks", flush=True)
            reference = asyncio.run(run_all(single.urls, [label], args.repeats))[0]
        references.append(reference)
        if label.startswith("ideal"):
            ideal = reference
    ideal_rate = ideal.hit_rate if ideal else None
    rr_rate = next((r.hit_rate for r in results if r.router == "round_robin"), None)
    table = _table([*results, *references], ideal_rate, rr_rate)
    print()
    print(table)
    summary = _summary(results, ideal_rate)
    for line in summary["checks"]:
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": " ".join(
            ["python benchmarks/bench_vllm_pool.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "config": {
            "replicas": args.replicas,
            "workflows": args.workflows,
            "steps": args.steps,
            "requests": n_requests,
            "roles": args.roles,
            "concurrency": args.concurrency,
            "output_tokens": args.output_tokens,
            "kv_blocks_per_replica": args.kv_blocks,
            "kv_block_tokens": 32,
            "ideal_kv_blocks": ideal_blocks,
            "unbounded_kv_blocks": args.unbounded_kv_blocks if args.unbounded_ideal else None,
            "warm_max_load": args.warm_max_load,
            "chars_per_token": round(chars_per_token, 3),
            "repeats": args.repeats,
            "seed": args.seed,
            "load_scale": args.load_scale,
        },
        "results": [asdict(r) for r in results],
        "ideal": asdict(ideal) if ideal else None,
        "references": [asdict(r) for r in references],
        "runs": {label: [asdict(r) for r in runs] for label, runs in raw.items()},
        "summary": summary,
        "wall_s": round(time.monotonic() - started, 1),
        "table": table,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


def median_run(runs: list[RunResult]) -> RunResult:
    """Per-field median of the runs (counts too); per-replica lists from the median-hit-rate run."""
    if len(runs) == 1:
        return runs[0]
    by_hits = sorted(runs, key=lambda r: r.hit_rate)[len(runs) // 2]
    fields: dict[str, Any] = asdict(by_hits)
    for key, value in fields.items():
        if isinstance(value, bool) or key == "router":
            continue
        if isinstance(value, float):
            fields[key] = statistics.median(getattr(r, key) for r in runs)
        elif isinstance(value, int):
            fields[key] = round(statistics.median(getattr(r, key) for r in runs))
    return RunResult(**fields)


def _summary(results: list[RunResult], ideal: float | None) -> dict[str, Any]:
    by = {r.router: r for r in results}
    checks: list[str] = []
    out: dict[str, Any] = {"checks": checks}
    rr = by.get("round_robin")
    for name in ("prefix_home", "prefix_load"):
        aware = by.get(name)
        if aware is None:
            continue
        if ideal:
            out[f"{name}_vs_ideal"] = aware.hit_rate / ideal
            checks.append(f"{name} hit rate / ideal = {aware.hit_rate / ideal:.1%} (target >= 95%)")
        if rr and rr.hit_rate:
            out[f"{name}_vs_round_robin"] = ratio = aware.hit_rate / rr.hit_rate
            checks.append(f"{name} hit rate / round_robin = {ratio:.2f}x (target >= 1.5x)")
        out[f"{name}_imbalance"] = aware.load_imbalance
        checks.append(f"{name} load imbalance = {aware.load_imbalance:.2f} (target <= 1.25)")
        if rr:
            checks.append(
                f"{name} vs round_robin: TTFT p50 {aware.ttft_p50_s * 1000:.0f} vs"
                f" {rr.ttft_p50_s * 1000:.0f} ms, p95 {aware.ttft_p95_s * 1000:.0f} vs"
                f" {rr.ttft_p95_s * 1000:.0f} ms, {aware.throughput_rps:.2f} vs {rr.throughput_rps:.2f} req/s"
            )
        warm = by.get(f"{name}+warm")
        if warm:
            out[f"{name}_warm_ttft_p50_ratio"] = warm.ttft_p50_s / aware.ttft_p50_s
            out[f"{name}_warm_makespan_ratio"] = warm.makespan_s / aware.makespan_s
            checks.append(
                f"{name} warm-up ({warm.warm_requests} warm requests): hit rate {warm.hit_rate_excl_warm:.1%}"
                f" vs {aware.hit_rate:.1%}, TTFT p50 {warm.ttft_p50_s * 1000:.0f}ms vs"
                f" {aware.ttft_p50_s * 1000:.0f}ms, p95 {warm.ttft_p95_s * 1000:.0f}ms vs"
                f" {aware.ttft_p95_s * 1000:.0f}ms,"
                f" makespan {warm.makespan_s:.1f}s vs {aware.makespan_s:.1f}s"
            )
    return out


if __name__ == "__main__":
    sys.exit(main())
