"""Choose a dataset's evaluator from ``TEST.EVALUATOR`` or the dataset's ``evaluator_type``."""

from typing import Callable, Dict

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator

__all__ = ["build_evaluator", "EVALUATOR_TYPES"]


def _coco(cfg: CfgNode, name: str, out: str) -> DatasetEvaluator:
    from .coco import build_coco_evaluator

    return build_coco_evaluator(cfg, name, out)


def _lvis(cfg: CfgNode, name: str, out: str) -> DatasetEvaluator:
    from .lvis import LVISAPEvaluator  # faster-coco-eval's LVIS mode, equal to lvis-api

    return LVISAPEvaluator(name, out)


def _lvis_mask_ar(cfg: CfgNode, name: str, out: str) -> DatasetEvaluator:
    from .lvis_mask_ar import LVISMaskProposalEvaluator

    return LVISMaskProposalEvaluator(name, out, max_proposals=cfg.SAM_AUTO.MAX_PROPOSALS)


def _bsds(cfg: CfgNode, name: str, out: str) -> DatasetEvaluator:
    from .bsds import BSDSEdgeEvaluator

    e = cfg.TEST.EDGES
    return BSDSEdgeEvaluator(
        name,
        out,
        num_thresholds=e.NUM_THRESHOLDS,
        max_dist=e.MAX_DIST,
        thin=e.THIN,
        num_workers=e.NUM_WORKERS,
        save_pr_curve=e.SAVE_PR_CURVE,
    )


def _point(cfg: CfgNode, name: str, out: str) -> DatasetEvaluator:
    from .point_miou import PointMIoUEvaluator

    return PointMIoUEvaluator(name, out, num_points=tuple(cfg.TEST.POINT_EVAL.NUM_POINTS))


EVALUATOR_TYPES: Dict[str, Callable[[CfgNode, str, str], DatasetEvaluator]] = {
    "coco": _coco,
    "lvis": _lvis,
    "lvis_mask_ar": _lvis_mask_ar,
    "bsds_edges": _bsds,
    "point_miou": _point,
}


def build_evaluator(cfg: CfgNode, dataset_name: str, output_folder: str) -> DatasetEvaluator:
    """The evaluator for ``dataset_name``: ``cfg.TEST.EVALUATOR`` if set, else its metadata's
    ``evaluator_type``."""
    kind = cfg.TEST.EVALUATOR or MetadataCatalog.get(dataset_name).get("evaluator_type", "")
    if kind not in EVALUATOR_TYPES:
        raise ValueError(
            f"no evaluator for dataset '{dataset_name}' (evaluator type {kind!r}); set "
            f"TEST.EVALUATOR to one of {sorted(EVALUATOR_TYPES)}"
        )
    return EVALUATOR_TYPES[kind](cfg, dataset_name, output_folder)
