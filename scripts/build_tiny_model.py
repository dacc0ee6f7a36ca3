"""Build a tiny random-weight Llama model and its tokenizer, locally, with no downloads.

vLLM needs a real Hugging Face model folder to serve. For tests and benchmarks of the
pool router we want one that starts fast and fits in little memory; what it says does
not matter. This script:

1. generates pseudo-English text from a seeded word list,
2. trains a byte-level BPE tokenizer on it with `tokenizers` (any input text encodes),
3. gives the tokenizer a chat template (`<|system|>`, `<|user|>`, `<|assistant|>`),
4. builds a `transformers` `LlamaConfig` with tiny dimensions and random weights,
5. saves model + tokenizer to a folder (default `~/.cache/budgetflow/tiny-llama`).

It needs `torch`, `transformers` and `tokenizers`, which live in the vLLM virtual
environment, not in the project's. Run from the project venv, it re-executes itself
with the vLLM venv's interpreter. Idempotent: an existing complete folder is re-used
unless `--force` is given.

Usage:
    python scripts/build_tiny_model.py [--out DIR] [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

__all__ = ["default_model_dir", "ensure_tiny_model", "main"]

_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|eot|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
_SPECIAL = ["<|pad|>", "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>", "<|eot|>"]
_REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


def default_model_dir() -> Path:
    """Where the tiny model lives unless told otherwise."""
    return Path(os.environ.get("BUDGETFLOW_TINY_MODEL", "~/.cache/budgetflow/tiny-llama")).expanduser()


def _default_venv() -> Path:
    return Path(os.environ.get("BUDGETFLOW_VLLM_VENV", "~/.cache/budgetflow/vllm-venv")).expanduser()


def _corpus(seed: int, n_lines: int) -> list[str]:
    """Deterministic pseudo-English: syllable words, sentences, some code-like lines."""
    rng = random.Random(seed)
    syllables = [a + b for a in "bcdfghjklmnprstvwz" for b in ("a", "e", "i", "o", "u", "ai", "ou")]
    words = ["".join(rng.choices(syllables, k=rng.randint(1, 3))) for _ in range(3000)]
    words += ["the", "a", "of", "and", "to", "in", "is", "you", "agent", "plan", "code", "test"]
    lines = []
    for _ in range(n_lines):
        n = rng.randint(5, 25)
        sentence = " ".join(rng.choices(words, k=n))
        if rng.random() < 0.2:
            sentence = f"def {rng.choice(words)}({rng.choice(words)}): return {rng.randint(0, 999)}"
        lines.append(sentence.capitalize() + rng.choice([".", "?", "!", ":", ";", ","]))
    return lines


def _build(out: Path, *, seed: int, vocab_size: int) -> None:
    # torch and transformers exist only in the vLLM venv, where this function runs.
    import torch  # type: ignore[import-not-found, unused-ignore]
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (  # type: ignore[import-not-found, unused-ignore]
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    torch.manual_seed(seed)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed, 20_000), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|eot|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>", "<|eos|>"],
    )
    fast.chat_template = _CHAT_TEMPLATE
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)

    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=8192,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
        torch_dtype="bfloat16",
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": fast.bos_token_id, "eos_token_id": fast.eos_token_id})
    )


def _complete(out: Path) -> bool:
    return all((out / name).is_file() for name in _REQUIRED_FILES) and any(out.glob("*.safetensors"))


def ensure_tiny_model(out: Path | None = None, *, force: bool = False) -> Path:
    """Return the tiny model folder, building it first if missing (or when `force`).

    Runs the build in the vLLM venv's interpreter when this one lacks `transformers`.
    """
    target = (out or default_model_dir()).expanduser()
    if _complete(target) and not force:
        return target
    try:
        import transformers  # type: ignore[import-not-found, unused-ignore]  # noqa: F401
    except ImportError:
        python = _default_venv() / "bin" / "python"
        if not python.is_file():
            raise SystemExit(
                f"`transformers` is not importable here and the vLLM venv `{python}` is missing;"
                " run `scripts/setup_vllm.sh` first"
            ) from None
        argv = [str(python), str(Path(__file__).resolve()), "--out", str(target)]
        subprocess.run([*argv, *(["--force"] if force else [])], check=True, stdout=subprocess.DEVNULL)
        return target
    _build(target, seed=0, vocab_size=2048)
    return target


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--force", action="store_true", help="rebuild even if present")
    args = parser.parse_args(argv)
    path = ensure_tiny_model(args.out, force=args.force)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
