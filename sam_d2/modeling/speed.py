"""Inference speed switches of a :class:`~sam_d2.modeling.sam.Sam`: compute precision and
``torch.compile``.

Precision is autocast (weights stay fp32, matmuls and convolutions run in the reduced type):
``"bf16"`` on CPU and GPU, ``"fp16"`` on GPU only. :func:`compile_sam` compiles the image encoder
and the mask decoder in place (``nn.Module.compile``: parameter names and checkpoints are
unchanged); the decoder is compiled with dynamic shapes since the number of prompts varies.
"""

import contextlib
from typing import ContextManager, Dict, Optional, Union

import torch
from torch import nn

__all__ = ["DTYPES", "autocast", "check_dtype", "compile_sam"]

#: Precision names accepted by the config (``MODEL.SAM.*_DTYPE``), the tools and the generator.
DTYPES: Dict[str, Optional[torch.dtype]] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def check_dtype(name: str, device: Union[str, torch.device]) -> Optional[torch.dtype]:
    """The autocast dtype of a precision name (None for fp32), checked against the device.

    Raises:
        ValueError: unknown name, or fp16 on a CPU.
    """
    if name not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {name!r}")
    if name == "fp16" and torch.device(device).type == "cpu":
        raise ValueError("fp16 autocast is not supported on CPU; use bf16 (or fp32)")
    return DTYPES[name]


def autocast(device: Union[str, torch.device], name: str) -> ContextManager:
    """Autocast context for precision ``name`` on ``device`` (a no-op for fp32)."""
    dtype = check_dtype(name, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def compile_sam(sam: nn.Module, mode: Optional[str] = None) -> nn.Module:
    """Compile ``sam.image_encoder`` and ``sam.mask_decoder`` in place with ``torch.compile``.

    The first call of each compiled part is slow (compilation); later calls with the same
    input shapes (and, for the decoder, any number of prompts) reuse the compiled code.

    Args:
        sam: a model with ``image_encoder`` and ``mask_decoder`` attributes (sam_d2's ``Sam``
            or the official one).
        mode: ``torch.compile`` mode, e.g. "max-autotune" on GPU; None for the default.

    Returns:
        ``sam`` itself.
    """
    for name in ("image_encoder", "mask_decoder"):
        if not isinstance(getattr(sam, name, None), nn.Module):
            raise ValueError(f"compile_sam: the model has no {name} module")
    sam.image_encoder.compile(mode=mode, dynamic=False)
    sam.mask_decoder.compile(mode=mode, dynamic=True)
    return sam
