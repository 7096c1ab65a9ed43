"""Evaluators (Detectron2 ``DatasetEvaluator``s) for SAM's zero-shot benchmarks."""

from .bsds import (
    BSDSEdgeEvaluator,
    EdgeBenchmarkResult,
    bsds_thresholds,
    edge_counts,
    edge_counts_from_file,
    save_pr_curve,
    summarize_edge_counts,
)
from .build import EVALUATOR_TYPES, build_evaluator
from .lvis_mask_ar import LVISMaskProposalEvaluator, greedy_match, image_recall_counts

__all__ = [
    "BSDSEdgeEvaluator",
    "EdgeBenchmarkResult",
    "bsds_thresholds",
    "edge_counts",
    "edge_counts_from_file",
    "save_pr_curve",
    "summarize_edge_counts",
    "build_evaluator",
    "EVALUATOR_TYPES",
    "LVISMaskProposalEvaluator",
    "greedy_match",
    "image_recall_counts",
]
