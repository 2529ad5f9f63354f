"""A cache hit is the model the compression made, for every built-in method and the example plug-in:
bit-identical logits, and a kick-compress export made from a hit equal to one made fresh."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

from kick_models import export
from kick_models.compression import registry
from kick_models.compression.methods import BUILTIN_METHODS

EXAMPLE_SRC = Path(__file__).resolve().parents[2] / "examples" / "kick-channel-prune" / "src"
COMMON = {"calib": "bundled", "nsamples": 4, "seqlen": 32, "dtype": "float32"}


def _configs() -> list[dict]:
    """One config per built-in method (a pruner at 50%, a quantizer at 4 bits in groups of 32, the tiny
    model being 64 wide), N:M for the pruners that take a pattern, a pruner composed with GPTQ, and
    the example plug-in."""
    configs = []
    for method in BUILTIN_METHODS:
        if method.prunes:
            configs.append({"method": method.name, "sparsity": 0.5})
        else:
            configs.append({"method": method.name, "wbits": 4, "group_size": 32})
    configs += [{"method": "wanda", "pattern": "2:4"}, {"method": "sparsegpt", "pattern": "2:4"},
                {"method": "sparsegpt", "sparsity": 0.5, "wbits": 4, "group_size": 32},
                {"method": "channel", "sparsity": 0.25}]
    return configs


def _label(config: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in config.items())


@pytest.fixture
def example_plugin(monkeypatch):
    """The example plug-in registered in-process, through the registry's entry-point hook."""
    monkeypatch.syspath_prepend(str(EXAMPLE_SRC))
    sys.modules.pop("kick_channel_prune", None)
    plugin = metadata.EntryPoint("channel", "kick_channel_prune:METHOD", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry.metadata, "entry_points",
                        lambda group=None: [plugin] if group == registry.ENTRY_POINT_GROUP else [])
    registry.reload()
    yield
    registry.reload()


def _model_args(tiny_llama_dir, config: dict, cache_dir: Path) -> str:
    pairs = {"pretrained": str(tiny_llama_dir), **COMMON, **config, "cache_dir": str(cache_dir)}
    return ",".join(f"{k}={v}" for k, v in pairs.items())


def _logits(lm) -> torch.Tensor:
    ids = torch.arange(3, 67)[None, :]
    with torch.no_grad():
        return lm.model(ids).logits


def _export(tiny_llama_dir, config: dict, cache_dir: Path, out: Path, *extra: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    rest = {k: v for k, v in {**COMMON, **config}.items() if k != "method"}
    args = ["--model", str(tiny_llama_dir), "--method", config["method"], "--out", str(out), "--cache_dir", str(cache_dir),
            *extra, "--model_args", ",".join(f"{k}={v}" for k, v in rest.items())]
    assert export.main(args) == 0
    return load_file(str(out / "model.safetensors"))


@pytest.mark.parametrize("config", _configs(), ids=_label)
def test_a_hit_is_the_fresh_model_and_exports_the_same(tiny_llama_dir, tmp_path, example_plugin, config):
    from kick_models.lm import KickHFLM

    args = _model_args(tiny_llama_dir, config, tmp_path / "cache")
    fresh = KickHFLM.create_from_arg_string(args, {"batch_size": 1, "device": "cpu"})
    hit = KickHFLM.create_from_arg_string(args, {"batch_size": 1, "device": "cpu"})
    fresh_result, hit_result = fresh.get_model_info()["kick"]["result"], hit.get_model_info()["kick"]["result"]
    assert fresh_result["cache"]["hit"] is False and fresh_result["cache"]["stored"] is True
    assert hit_result["cache"]["hit"] is True
    assert torch.equal(_logits(hit), _logits(fresh))
    for (name, a), (_, b) in zip(fresh.model.state_dict().items(), hit.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert hit_result["fidelity"]["verified"]["kl"] == pytest.approx(fresh_result["fidelity"]["kl_windows"][0],
                                                                      rel=1e-6, abs=1e-9)
    # what a hit reports as compressed is measured on its loaded weights, and matches the fresh accounting
    for key in ("achieved_sparsity", "matrices", "achieved_bits"):
        assert hit_result.get(key) == fresh_result.get(key), key

    from_hit = _export(tiny_llama_dir, config, tmp_path / "cache", tmp_path / "from_hit")
    made_fresh = _export(tiny_llama_dir, config, tmp_path / "unused", tmp_path / "fresh", "--no_cache")
    assert not (tmp_path / "unused").exists()
    assert set(from_hit) == set(made_fresh)
    for name, tensor in made_fresh.items():
        assert torch.equal(from_hit[name], tensor), name
