"""On the embedded SmolLM2-135M: KL(dense ‖ compressed) on held-out text grows as compression gets harsher."""

import copy

import pytest

from kick_models import fidelity
from kick_models.compression import compress_model
from kick_models.compression.calibration import calibration_ids
from kick_models.config import build_config

pytestmark = pytest.mark.slow


def test_kl_grows_dense_wanda30_wanda50_2of4(smol):
    model, tok = smol
    windows = fidelity.fidelity_windows(tok, tokens=1024)
    reference = fidelity.dense_reference(model, windows)
    calib = build_config({"method": "wanda", "sparsity": 0.5, "nsamples": 8, "seqlen": 128})
    ids, _ = calibration_ids(tok, calib, embedded_model=True, max_length=None)
    curve = {"dense": fidelity.compare(model, reference, windows)}
    for label, args in (("wanda 30%", {"sparsity": 0.3}), ("wanda 50%", {"sparsity": 0.5}),
                        ("wanda 2:4", {"pattern": "2:4"})):
        pruned = copy.deepcopy(model)
        compress_model(pruned, build_config({"method": "wanda", "nsamples": 8, "seqlen": 128, **args}), ids)
        curve[label] = fidelity.compare(pruned, reference, windows)
    kl = [c["kl_mean"] for c in curve.values()]
    top1 = [c["top1_agreement"] for c in curve.values()]
    assert kl[0] == 0.0 and top1[0] == 1.0
    assert all(a < b for a, b in zip(kl, kl[1:])), dict(zip(curve, kl))
    assert all(a > b for a, b in zip(top1, top1[1:])), dict(zip(curve, top1))
