"""Deployment exports of sam_d2 models (ONNX); the torch-free runtime is ``sam_d2_onnx``."""

from .onnx_export import (
    OPSET,
    ExportError,
    SamOnnxDecoder,
    SamOnnxEncoder,
    export_sam,
    export_sam_decoder,
    export_sam_encoder,
    export_vitdet_backbone,
    quantize_decoder,
    weights_fingerprint,
)

__all__ = [
    "OPSET",
    "ExportError",
    "SamOnnxDecoder",
    "SamOnnxEncoder",
    "export_sam",
    "export_sam_decoder",
    "export_sam_encoder",
    "export_vitdet_backbone",
    "quantize_decoder",
    "weights_fingerprint",
]
