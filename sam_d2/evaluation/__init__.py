"""Evaluators (Detectron2 ``DatasetEvaluator``s) for SAM's zero-shot benchmarks."""
from .build import EVALUATOR_TYPES, build_evaluator
from .lvis_mask_ar import LVISMaskProposalEvaluator, greedy_match, image_recall_counts

__all__ = [
    "build_evaluator",
    "EVALUATOR_TYPES",
    "LVISMaskProposalEvaluator",
    "greedy_match",
    "image_recall_counts",
]
