"""sam_d2_onnx: run sam_d2's ONNX export with numpy + Pillow + onnxruntime only (no torch).

A separate top-level package because ``import sam_d2.<anything>`` first runs ``sam_d2/__init__``,
which imports torch and Detectron2 (to register models and datasets). Nothing here imports
``sam_d2``; the folder can be copied alone into a deployment.
"""

from .predictor import OnnxModelError, PromptError, SamOnnxPredictor
from .transforms import ResizeLongestSide

__all__ = ["OnnxModelError", "PromptError", "ResizeLongestSide", "SamOnnxPredictor"]
