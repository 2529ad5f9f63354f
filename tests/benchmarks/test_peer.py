"""benchmarks/peer.py and span.py, what the peer comparisons measure with: a worker script assembled for a
peer's virtualenv runs and reports its span's wall and CPU seconds apart, and kick's compression is split
into time inside block forwards and the rest."""

import sys
import textwrap
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))  # the scripts' own imports, as run
import peer  # noqa: E402


def test_worker_script_reports_a_sleep_as_wall_time_not_cpu_time(tmp_path):
    # the assembled script must compile with perplexity.py's __future__ import first, and Span must not
    # count waiting as work: on a shared machine only CPU seconds compare
    body = textwrap.dedent("""
        import json, time
        with Span() as span:
            time.sleep(0.3)
        ids = torch.arange(64) % 7
        model = lambda chunk, use_cache: type("Out", (), {"logits": torch.zeros(*chunk.shape, 7)})()
        model.get_input_embeddings = lambda: torch.nn.Embedding(7, 2)
        print("RESULT " + json.dumps({**span.record(), "ppl": perplexity(model, ids, 16)}))
    """)
    result = peer.run_worker(sys.executable, peer.worker_source(body), [], tmp_path)
    assert "error" not in result, result
    assert result["wall_s"] >= 0.3 and result["cpu_s"] < 0.2
    assert abs(result["ppl"] - 7.0) < 1e-4  # uniform logits over 7 tokens
    assert len(result["load"]) == 2


def test_compress_with_phases_splits_forward_time_from_the_rest(tiny_llama):
    from kick_models.config import build_config

    model = tiny_llama()
    ids = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(0))
    config = build_config({"method": "sparsegpt", "sparsity": 0.5, "nsamples": 4, "seqlen": 32})
    timing = peer.compress_with_phases(model, config, ids)
    assert 0 < timing["forward_cpu_s"] <= timing["cpu_s"] and 0 < timing["forward_wall_s"] <= timing["wall_s"]
    weight = model.model.layers[0].mlp.up_proj.weight
    assert (weight == 0).float().mean().item() == 0.5
    assert "forward" not in model.model.layers[0].__dict__  # the clocks are taken off again


def test_ratio_is_kick_over_peer_and_empty_without_one():
    assert peer.ratio({"cpu_s": 3.0}, {"cpu_s": 6.0}, "cpu_s") == "0.50"
    assert peer.ratio({"cpu_s": 3.0}, None, "cpu_s") == ""
    assert peer.load_text({"load": [1.234, 7.0]}) == "1.2-7.0"
