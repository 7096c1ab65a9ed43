"""Evaluators (Detectron2 ``DatasetEvaluator``s) for SAM's zero-shot benchmarks."""

from .bsds_edges import (
    BSDSEdgeEvaluator,
    EdgeBenchmarkResult,
    bsds_thresholds,
    edge_counts,
    edge_counts_from_file,
    save_pr_curve,
    summarize_edge_counts,
)
from .build import EVALUATOR_TYPES, build_evaluator
from .edge_map import edge_nms, masks_to_edge_map, sam_edge_map, thin_edge_map
from .lvis_mask_ar import LVISMaskProposalEvaluator, greedy_match, image_recall_counts

__all__ = [
    "BSDSEdgeEvaluator",
    "EdgeBenchmarkResult",
    "bsds_thresholds",
    "edge_counts",
    "edge_counts_from_file",
    "save_pr_curve",
    "summarize_edge_counts",
    "edge_nms",
    "masks_to_edge_map",
    "sam_edge_map",
    "thin_edge_map",
    "build_evaluator",
    "EVALUATOR_TYPES",
    "LVISMaskProposalEvaluator",
    "greedy_match",
    "image_recall_counts",
]
