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
        ("other: 1\n", ".yaml", "unknown top-level key `other`"),
        ("pools: []\n", ".yaml", "needs a top-level `models` list"),
        ("models:\n  - {name: a}\n", ".yaml", "the field `litellm_model` is missing"),
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


@pytest.mark.parametrize(
    ("content", "suffix", "fragment"),
    [
        ("models = 0\n", ".toml", "`models` must be a list (`[[models]]` tables in TOML"),
        ("models: []\npools: 3\n", ".yaml", "lists no models"),
        (
            "models:\n  - {name: a, litellm_model: x/a}\npools: 3\n",
            ".yaml",
            "`pools` must be a list",
        ),
        ('[[model]]\nname = "a"\n', ".toml", "unknown top-level key `model`; did you mean `models`?"),
        ("[1, 2]", ".json", "needs a top-level `models` list"),
        ('{"models": [5]}', ".json", "`models[0]` must be a table of fields"),
        ("[" * 100_000, ".json", "nests too deeply"),
        ('{"models": [{"context_window": ' + "9" * 5000 + "}]}", ".json", "cannot be read"),
        (
            '[[models]]\nname = "a b"\nlitellm_model = "x/a"\n',
            ".toml",
            "contains white space; use e.g. `a_b`",
        ),
        ('[[models]]\nname = " "\nlitellm_model = "x/a"\n', ".toml", "model name is blank"),
        (
            '[[models]]\nname = "a"\nlitellm_model = "x/a"\ninput_price = 1\n',
            ".toml",
            "`models[0]` (`a`): unknown field `input_price`; did you mean `input_price_per_mtok`?",
        ),
        (
            '[[models]]\nname = "a"\nlitellm_model = "x/a"\n[[models]]\nname = "a"\nlitellm_model = "x/b"\n',
            ".toml",
            "catalog file `",
        ),
    ],
)
def test_catalog_file_mistakes_name_file_entry_and_field(
    tmp_path: Path, content: str, suffix: str, fragment: str
) -> None:
    path = tmp_path / f"c{suffix}"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        Catalog.from_file(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


def test_a_catalog_file_that_is_not_utf8_says_so(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b'[[models]]\nname = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 0xe9 at offset 22\); save it as UTF-8"):
        Catalog.from_file(path)


def test_every_problem_of_every_entry_is_listed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("models:\n  - {name: a, litellm_model: x/a, input_price_per_mtok: abc}\n  - {name: b}\n")
    with pytest.raises(ConfigError, match="has 2 problems") as info:
        Catalog.from_file(path)
    assert "`models[0]` (`a`): field `input_price_per_mtok` = 'abc'" in str(info.value)
    assert "`models[1]` (`b`): the field `litellm_model` is missing" in str(info.value)


def test_null_pools_mean_no_pools(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("models:\n  - {name: a, litellm_model: x/a}\npools:\n")
    assert Catalog.from_file(path).pools == {}
