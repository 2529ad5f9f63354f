"""Load-time compression of decoder-only LMs: pruning (magnitude, Wanda, SparseGPT; unstructured,
N:M, OWL) and GPTQ quantization, all driven by one layer-wise calibration loop."""

from .engine import compress_model

__all__ = ["compress_model"]
