"""COCO box/mask AP through Detectron2's ``COCOEvaluator``, computed by faster-coco-eval.

Detectron2's own fast COCOeval is compiled C++ (``detectron2._C``) and often unavailable; then
``COCOEvaluator`` falls back to pycocotools' pure-Python evaluation, which takes minutes on COCO
val. :class:`FastCOCOEvaluator` keeps everything of ``COCOEvaluator`` (dataset conversion and
caching, distributed gathering, the json dump, the per-category table) and replaces only the
AP computation with faster-coco-eval's C++ ``COCOeval_faster`` (same definitions and numbers as
pycocotools; checked by ``tests/test_prompted.py``). Nothing is patched globally: pycocotools stays
what other code imports. One deliberate difference: ground truth with an annotation id 0 (which
the COCO API confuses with "unmatched") is renumbered instead of silently losing matches.
"""

import copy
import itertools
import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from detectron2.config import CfgNode
from detectron2.evaluation import COCOEvaluator
from faster_coco_eval import COCO as FasterCOCO
from faster_coco_eval import COCOeval_faster

from ..utils.atomic import atomic_open

__all__ = ["FastCOCOEvaluator", "evaluate_coco", "build_coco_evaluator"]

logger = logging.getLogger(__name__)


def evaluate_coco(
    coco_gt: FasterCOCO,
    results: List[Dict[str, Any]],
    iou_type: str,
    max_dets: Sequence[int] = (1, 10, 100),
    img_ids: Optional[Sequence[int]] = None,
    kpt_oks_sigmas: Sequence[float] = (),
) -> COCOeval_faster:
    """Run COCO evaluation of ``results`` (COCO result dicts) with faster-coco-eval.

    Args:
        coco_gt: ground truth.
        results: detections; non-empty.
        iou_type: "bbox", "segm" or "keypoints".
        max_dets: detection limits; AP uses the last one.
        img_ids: evaluate only these images (default: all).
        kpt_oks_sigmas: keypoint OKS sigmas (default: COCO's).

    Returns:
        the evaluated ``COCOeval_faster`` (``stats``, ``eval["precision"]`` as in pycocotools).
    """
    if not results:
        raise ValueError("evaluate_coco needs at least one result")
    if iou_type == "segm":
        # As Detectron2 does: without "bbox", the area of a result is its mask's area, which is
        # what small / medium / large mean for masks.
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    coco_dt = coco_gt.loadRes(copy.deepcopy(results))
    coco_eval = COCOeval_faster(coco_gt, coco_dt, iou_type, print_function=logger.info)
    if iou_type != "keypoints":
        coco_eval.params.maxDets = list(max_dets)
    elif kpt_oks_sigmas:
        coco_eval.params.kpt_oks_sigmas = np.array(kpt_oks_sigmas)
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval


def _positive_annotation_ids(dataset: Dict[str, Any], name: str) -> Dict[str, Any]:
    """The COCO API stores the *id* of a detection's matched annotation and reads 0 as "no
    match", so an annotation with id 0 silently turns its true positives into false positives.
    Such ground truth is renumbered 1..N here (ids are used for matching only)."""
    annotations = dataset.get("annotations", [])
    if all(a.get("id", 0) > 0 for a in annotations):
        return dataset
    logger.warning(
        f"{name}: ground truth has annotation ids <= 0, which the COCO API takes for 'unmatched';"
        f" renumbering the {len(annotations)} annotations 1..N for evaluation"
    )
    renumbered = [dict(a, id=i + 1) for i, a in enumerate(annotations)]
    return dict(dataset, annotations=renumbered)


class FastCOCOEvaluator(COCOEvaluator):
    """``COCOEvaluator`` whose AP comes from faster-coco-eval (see module docstring).

    Same constructor as Detectron2's ``COCOEvaluator`` (``use_fast_impl`` is accepted and
    ignored: the C++ evaluator is always used).
    """

    def __init__(
        self,
        dataset_name: str,
        tasks=None,
        distributed: bool = True,
        output_dir: Optional[str] = None,
        **kwargs: Any,
    ) -> None:
        kwargs["use_fast_impl"] = False  # Detectron2's own fast path needs detectron2._C
        super().__init__(dataset_name, tasks, distributed, output_dir, **kwargs)
        # Ground truth as a faster-coco-eval COCO (same dataset dict; json read once).
        self._coco_api = FasterCOCO(_positive_annotation_ids(self._coco_api.dataset, dataset_name))

    def _eval_predictions(self, predictions: List[Dict[str, Any]], img_ids=None) -> None:
        results = list(itertools.chain.from_iterable(p["instances"] for p in predictions))
        tasks = self._tasks or self._tasks_from_predictions(results)

        id_map = getattr(self._metadata, "thing_dataset_id_to_contiguous_id", None)
        if id_map is not None:
            to_dataset_id = {contiguous: ds for ds, contiguous in id_map.items()}
            for r in results:
                if r["category_id"] not in to_dataset_id:
                    raise ValueError(
                        f"a prediction has class {r['category_id']}, but {self._metadata.name} "
                        f"has {len(to_dataset_id)} classes (0 .. {len(to_dataset_id) - 1})"
                    )
                r["category_id"] = to_dataset_id[r["category_id"]]

        if self._output_dir:
            path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info(f"Saving results to {path}")
            with atomic_open(path, "w") as f:
                f.write(json.dumps(results))
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return

        self._logger.info("Evaluating predictions with faster-coco-eval ...")
        for task in sorted(tasks):
            if task not in ("bbox", "segm", "keypoints"):
                raise ValueError(f"unknown COCO task {task!r}")
            coco_eval = (
                evaluate_coco(
                    self._coco_api,
                    results,
                    task,
                    max_dets=self._max_dets_per_image,
                    img_ids=img_ids,
                    kpt_oks_sigmas=self._kpt_oks_sigmas,
                )
                if results
                else None
            )
            self._results[task] = self._derive_coco_results(
                coco_eval, task, class_names=self._metadata.get("thing_classes")
            )


def build_coco_evaluator(cfg: CfgNode, dataset_name: str, output_dir: str) -> FastCOCOEvaluator:
    """The evaluator of datasets with ``evaluator_type == "coco"``: box and mask AP (tasks taken
    from the predictions), COCO's standard limit of 100 detections per image."""
    return FastCOCOEvaluator(dataset_name, output_dir=output_dir)
