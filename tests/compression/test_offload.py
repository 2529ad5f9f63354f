"""A model whose blocks accelerate offloaded to disk (weights on ``meta``) compresses exactly like the
same model held in memory; the compressed weights stay in effect and the checkpoint is not touched."""

import hashlib

import pytest
import torch

from kick_models.compression import compress_model
from kick_models.compression.offload import is_offloaded
from kick_models.config import build_config


def ids(n=6, seq=32, seed=0):
    return torch.randint(0, 128, (n, seq), generator=torch.Generator().manual_seed(seed))


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.mark.parametrize("args", [
    {"method": "magnitude", "sparsity": 0.5},
    {"method": "wanda", "sparsity": 0.5},
    {"method": "sparsegpt", "pattern": "2:4"},
    {"method": "gptq", "wbits": 4, "group_size": 32, "true_sequential": True},
])
def test_disk_offloaded_blocks_compress_like_resident_ones(tiny_llama, tmp_path, args):
    from transformers import AutoModelForCausalLM

    tiny_llama().save_pretrained(tmp_path / "ckpt")
    before = _digest(tmp_path / "ckpt")
    resident = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", dtype=torch.float32).eval()
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
                  "model.layers.1": "disk", "model.layers.2": "disk", "model.norm": "cpu", "lm_head": "cpu"}
    offloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", dtype=torch.float32, device_map=device_map,
                                                     offload_folder=str(tmp_path / "offload")).eval()
    blocks = offloaded.model.layers
    assert is_offloaded(blocks[1]) and not is_offloaded(blocks[0])
    assert blocks[1].mlp.up_proj.weight.device.type == "meta"

    config = build_config({**args, "nsamples": 6, "seqlen": 32})
    expected = compress_model(resident, config, ids())
    got = compress_model(offloaded, config, ids())
    assert got["achieved_sparsity"] == pytest.approx(expected["achieved_sparsity"], abs=1e-9)
    assert got["achieved_sparsity"] >= 0.5 or args["method"] == "gptq"

    probe = ids(2, 16, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(offloaded(probe).logits, resident(probe).logits, rtol=1e-5, atol=1e-5)
    assert blocks[1].mlp.up_proj.weight.device.type == "meta"  # still offloaded afterwards
    assert _digest(tmp_path / "ckpt") == before
