"""Load-time compression of decoder-only LMs: the methods of ``registry`` (pruning, quantization,
unstructured, N:M, OWL), all driven by one layer-wise calibration loop."""

__all__ = ["compress_model"]


def __getattr__(name):
    # lazy, so that reading the method registry (config validation) does not import torch
    if name == "compress_model":
        from .engine import compress_model

        return compress_model
    raise AttributeError(name)
