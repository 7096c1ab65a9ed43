"""BSDS500 boundary benchmark (ODS/OIS/AP/R50), by layer: ``matching`` (exact BSDS pixel
correspondence, per-threshold counts), ``metrics`` (the ``edgesEvalDir`` summary), ``plots``
(PR curve), ``evaluator`` (the Detectron2 evaluator); ``reference`` wraps pyEdgeEval's original
matcher for comparisons only."""

from .evaluator import BSDSEdgeEvaluator
from .matching import (
    BSDS_MAX_DIST,
    BSDS_NUM_THRESHOLDS,
    BoundaryMatcher,
    bsds_thresholds,
    correspond_pixels,
    edge_counts,
    edge_counts_from_file,
)
from .metrics import EdgeBenchmarkResult, summarize_edge_counts
from .plots import BSDS500_HUMAN_RP, check_plot_path, save_pr_curve

__all__ = [
    "BSDS500_HUMAN_RP",
    "BSDS_MAX_DIST",
    "BSDS_NUM_THRESHOLDS",
    "BSDSEdgeEvaluator",
    "BoundaryMatcher",
    "EdgeBenchmarkResult",
    "bsds_thresholds",
    "check_plot_path",
    "correspond_pixels",
    "edge_counts",
    "edge_counts_from_file",
    "save_pr_curve",
    "summarize_edge_counts",
]
