"""End to end on the embedded SmolLM2-135M: held-out perplexity per method and sparsity."""

import copy

import pytest
import torch

from kick_common.bundled import heldout_text
from kick_models.compression import compress_model
from kick_models.compression.calibration import calibration_ids
from kick_models.config import build_config
from kick_testlib.perplexity import perplexity

pytestmark = pytest.mark.slow

SETTINGS = ("0.25", "0.5", "2:4")  # 2:4 is 50% with a structure constraint, so it comes last


@pytest.fixture(scope="module")
def smol_ppl(smol):
    """ppl(method, setting) with memoisation, so the cross-method test reuses the per-method runs."""
    model, tok = smol
    held = torch.tensor(tok(heldout_text())["input_ids"])[: 3 * 256]
    calib = build_config({"method": "wanda", "sparsity": 0.5, "nsamples": 8, "seqlen": 128})
    ids, _ = calibration_ids(tok, calib, embedded_model=True, max_length=None)  # same ids for every run
    cache: dict = {}

    def ppl(method: str, setting: str) -> float:
        if (method, setting) not in cache:
            if method == "dense":
                cache[method, setting] = perplexity(model, held, 256)
            else:
                key = "pattern" if ":" in setting else "sparsity"
                config = build_config({"method": method, key: setting, "nsamples": 8, "seqlen": 128})
                pruned = copy.deepcopy(model)
                summary = compress_model(pruned, config, ids if config.needs_calibration else None)
                assert summary["achieved_sparsity"] == pytest.approx(config.target_sparsity, abs=2e-3)
                cache[method, setting] = perplexity(pruned, held, 256)
        return cache[method, setting]

    return ppl


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_perplexity_rises_with_sparsity(smol_ppl, method):
    curve = [smol_ppl("dense", "")] + [smol_ppl(method, s) for s in SETTINGS]
    assert all(a < b for a, b in zip(curve, curve[1:])), dict(zip(("dense",) + SETTINGS, curve))


@pytest.mark.parametrize("setting", ["0.5", "2:4"])
def test_magnitude_is_worst(smol_ppl, setting):
    mag = smol_ppl("magnitude", setting)
    assert mag > smol_ppl("wanda", setting) and mag > smol_ppl("sparsegpt", setting)
