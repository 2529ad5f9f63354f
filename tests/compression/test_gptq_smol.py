"""GPTQ end to end on the embedded SmolLM2-135M through the shared calibration loop (small
calibration set; perplexity on bundled held-out prose)."""

import copy

import pytest
import torch

pytestmark = pytest.mark.slow

EVAL_SEQLEN, EVAL_WINDOWS = 256, 4


@pytest.fixture(scope="module")
def setup(smol):
    from kick_common.bundled import heldout_text
    from kick_models.compression.calibration import calibration_ids
    from kick_models.config import build_config
    from kick_testlib.perplexity import perplexity

    model, tokenizer = smol
    config = build_config({"method": "gptq", "wbits": 4, "nsamples": 4, "seqlen": 128, "calib": "bundled"})
    ids, _ = calibration_ids(tokenizer, config, embedded_model=True, max_length=None)
    held = torch.tensor(tokenizer(heldout_text())["input_ids"])[: EVAL_SEQLEN * EVAL_WINDOWS]
    return model, ids, held, perplexity(model, held, EVAL_SEQLEN)


def _gptq_perplexity(setup, bits):
    from kick_models.compression import compress_model
    from kick_models.config import build_config
    from kick_testlib.perplexity import perplexity

    model, ids, held, _ = setup
    config = build_config({"method": "gptq", "wbits": bits, "group_size": 128, "nsamples": 4, "seqlen": 128})
    work = copy.deepcopy(model)
    summary = compress_model(work, config, ids)
    assert summary["wbits"] == bits and summary["layers"] == 30 * 7
    return work, perplexity(work, held, EVAL_SEQLEN)


def test_8_bit_is_within_one_percent_of_dense(setup):
    _, ppl = _gptq_perplexity(setup, 8)
    assert abs(ppl / setup[3] - 1) < 0.01


def test_4_bit_costs_a_bounded_amount(setup):
    from kick_models.compression.blocks import find_decoder_blocks

    work, ppl = _gptq_perplexity(setup, 4)
    # every decoder Linear holds at most 16 distinct values per (row, 128-column group)
    w = find_decoder_blocks(work)[0].mlp.down_proj.weight  # [576, 1536]
    assert max(len(torch.unique(row)) for row in w[:8, :128]) <= 16
    # SmolLM2-135M is small and sensitive: 4-bit g128 costs tens of percent (peers: +37% at g64).
    # 512 calibration tokens are too few for GPTQ to beat round-to-nearest on held-out text
    # (down_proj has 1536 inputs); the kernel tests check that on a Linear with enough samples.
    assert setup[3] < ppl < 1.8 * setup[3]


def test_2_bit_is_much_worse(setup):
    _, ppl = _gptq_perplexity(setup, 2)
    assert ppl > 5 * setup[3]
