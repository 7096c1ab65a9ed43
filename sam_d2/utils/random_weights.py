"""Fully random weights for parity tests and benchmarks (no pretrained weights exist here)."""

from typing import Dict

import torch

__all__ = ["randomize_state_dict"]

# Affine scales of normalisation layers (named "norm*" in transformers; numbered in the conv necks).
_SCALE_PARTS = ("norm", "neck.1.", "neck.3.", "upscaling.1.", "downscaling.1.", "downscaling.4.")


def randomize_state_dict(state: Dict[str, torch.Tensor], seed: int = 0) -> Dict[str, torch.Tensor]:
    """Replace every floating tensor of a SAM-like state dict with random values.

    Matrices ~ N(0, 1/fan_in); normalisation scales ~ 1 + N(0, 0.2); everything else (biases,
    rel-pos tables, position and prompt embeddings, the Fourier matrix) ~ N(0, 0.2). Zero
    defaults (rel-pos, biases) are thus replaced too, so no code path is hidden by zeros.
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if not value.is_floating_point():
            out[key] = value
            continue
        noise = torch.randn(value.shape, generator=g)
        if value.dim() >= 2 and key.endswith("weight"):
            out[key] = noise / (value[0].numel() ** 0.5)
        elif key.endswith("weight") and any(p in key for p in _SCALE_PARTS):
            out[key] = 1.0 + 0.2 * noise
        else:
            out[key] = 0.2 * noise
    return out
