"""The model catalog: files, prices, errors."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from orchestrator import Catalog, ConfigError, ModelSpec, PoolSpec


def test_toml_and_yaml_catalogs_load_the_same(tmp_path: Path) -> None:
    toml = tmp_path / "models.toml"
    toml.write_text(
        '[[models]]\nname = "small"\nlitellm_model = "openai/gpt-4o-mini"\n'
        "input_price_per_mtok = 0.15\noutput_price_per_mtok = 0.6\n"
        "[models.latency]\nttft_s = 0.4\ntokens_per_s = 90\n"
        '[[models]]\nname = "local"\nlitellm_model = "hosted_vllm/tiny"\npool = "gpu"\n'
        "input_price_per_mtok = 0.02\noutput_price_per_mtok = 0.05\n"
        '[[pools]]\nname = "gpu"\nserved_model = "tiny"\nreplicas = ["http://127.0.0.1:8001"]\n'
    )
    yaml = tmp_path / "models.yaml"
    yaml.write_text(
        "models:\n"
        "  - {name: small, litellm_model: openai/gpt-4o-mini, input_price_per_mtok: 0.15,"
        " output_price_per_mtok: 0.6, latency: {ttft_s: 0.4, tokens_per_s: 90}}\n"
        "  - {name: local, litellm_model: hosted_vllm/tiny, pool: gpu, input_price_per_mtok: 0.02,"
        " output_price_per_mtok: 0.05}\n"
        "pools:\n  - {name: gpu, served_model: tiny, replicas: ['http://127.0.0.1:8001']}\n"
    )
    a, b = Catalog.from_file(toml), Catalog.from_file(yaml)
    assert a == b
    small = a.get("small")
    assert small.provider == "openai" and not small.simulated
    assert small.input_nano_per_token() == 150 and small.output_nano_per_token() == 600
    assert small.cost_nano(input_tokens=1000, output_tokens=100) == 150_000 + 60_000
    assert a.pools["gpu"].replicas == ("http://127.0.0.1:8001",)


def test_cached_tokens_are_priced_at_the_cached_rate() -> None:
    spec = ModelSpec(
        name="m",
        litellm_model="x/m",
        input_price_per_mtok="1",
        cached_input_price_per_mtok="0.1",
        output_price_per_mtok="2",
    )
    assert (
        spec.cost_nano(input_tokens=1000, output_tokens=10, cached_tokens=600)
        == 400 * 1000 + 600 * 100 + 20_000
    )


def test_prices_come_from_litellm_when_missing() -> None:
    catalog = Catalog.of(ModelSpec(name="mini", litellm_model="openai/gpt-4o-mini"))
    resolved = catalog.resolve_prices().get("mini")
    assert resolved.input_price_per_mtok is not None and resolved.input_price_per_mtok > 0
    assert resolved.output_price_per_mtok is not None and resolved.output_price_per_mtok > Decimal(0)


def test_unknown_local_model_must_be_priced() -> None:
    catalog = Catalog.of(ModelSpec(name="local", litellm_model="hosted_vllm/my-own-model"))
    with pytest.raises(ConfigError, match=r"`local`.*set `input_price_per_mtok` and `output_price_per_mtok`"):
        catalog.resolve_prices()


@pytest.mark.parametrize(
    ("content", "suffix", "fragment"),
    [
        ("models = [", ".toml", "is not valid toml"),
        ("other: 1\n", ".yaml", "needs a top-level `models` list"),
        ("models:\n  - {name: a}\n", ".yaml", "litellm_model"),
        ("{}", ".ini", "use .toml, .yaml or .json"),
    ],
)
def test_bad_catalog_files(tmp_path: Path, content: str, suffix: str, fragment: str) -> None:
    path = tmp_path / f"c{suffix}"
    path.write_text(content)
    with pytest.raises(ConfigError, match=fragment):
        Catalog.from_file(path)


def test_catalog_consistency_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Catalog.from_file(tmp_path / "nope.toml")
    spec = ModelSpec(name="a", litellm_model="x/a", input_price_per_mtok=1, output_price_per_mtok=1)
    with pytest.raises(ConfigError, match="declared twice"):
        Catalog.of(spec, spec)
    with pytest.raises(ConfigError, match=r"pool `gpus`, which is not declared; did you mean `gpu`"):
        Catalog.of(
            spec.model_copy(update={"pool": "gpus"}),
            pools=(PoolSpec(name="gpu", served_model="m", replicas=("http://x",)),),
        )
    with pytest.raises(ConfigError, match=r"model `smal` is not in the catalog; did you mean `small`"):
        Catalog.of(spec.model_copy(update={"name": "small"})).get("smal")
