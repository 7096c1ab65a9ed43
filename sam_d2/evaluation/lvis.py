"""LVIS box and mask AP (AP, AP50, AP75, APs/m/l, APr/c/f) with faster-coco-eval's LVIS mode.

The official ``lvis`` API is pure Python (minutes on LVIS val, ``np.float`` patches on numpy 2);
faster-coco-eval's C++ ``COCOeval_faster(..., lvis_style=True)`` applies the same LVIS rules:
detections of categories neither verified present nor verified absent (``neg_category_ids``) in
an image are dropped, unmatched detections of not-exhaustively annotated categories
(``not_exhaustive_category_ids``) are ignored, and APr/APc/APf average the categories of each
frequency group. The one rule that lives outside it, LVIS's limit of 300 detections per image
across all categories (highest scores first, ties in submission order), is applied here. Equality
with ``LVISEval`` on the real LVIS v0.5 annotations is tested in ``tests/test_lvis_ap.py``.
"""

import copy
import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table
from faster_coco_eval import COCO as FasterCOCO
from faster_coco_eval import COCOeval_faster

from ..utils.atomic import atomic_open

__all__ = ["LVIS_MAX_DETS_PER_IMAGE", "LVISAPEvaluator", "evaluate_lvis", "limit_dets_per_image"]

logger = logging.getLogger(__name__)

#: LVIS's limit of detections per image, across categories.
LVIS_MAX_DETS_PER_IMAGE = 300
#: Our metric name -> faster-coco-eval's ``stats_as_dict`` key.
_METRICS = {
    "AP": "AP_all",
    "AP50": "AP_50",
    "AP75": "AP_75",
    "APs": "AP_small",
    "APm": "AP_medium",
    "APl": "AP_large",
    "APr": "APr",
    "APc": "APc",
    "APf": "APf",
}


def limit_dets_per_image(results: List[Dict[str, Any]], max_dets: int) -> List[Dict[str, Any]]:
    """The ``max_dets`` highest-scoring results of each image (stable: ties keep their order)."""
    by_image: Dict[Any, List[Dict[str, Any]]] = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    kept = []
    for image_results in by_image.values():
        kept += sorted(image_results, key=lambda r: r["score"], reverse=True)[:max_dets]
    return kept


def _verified(lvis_gt: FasterCOCO, results: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The results whose category is verified present or absent in their image (LVIS drops the
    others). faster-coco-eval's LVIS mode drops them too, but still computes their masks' RLE and
    fails (``unordered_map::at``) on images without any ground-truth annotation; so drop here."""
    verified: Dict[Any, set] = {}
    for image_id, image in lvis_gt.imgs.items():
        verified[image_id] = set(image.get("neg_category_ids", []))
    for ann in lvis_gt.anns.values():
        verified[ann["image_id"]].add(ann["category_id"])
    unknown = {r["image_id"] for r in results} - set(verified)
    if unknown:
        raise ValueError(
            f"{len(unknown)} result images are not in the LVIS ground truth, e.g. "
            f"{sorted(unknown, key=str)[:5]}"
        )
    return [r for r in results if r["category_id"] in verified[r["image_id"]]]


def evaluate_lvis(
    lvis_gt: FasterCOCO,
    results: List[Dict[str, Any]],
    iou_type: str,
    max_dets_per_image: int = LVIS_MAX_DETS_PER_IMAGE,
) -> Dict[str, float]:
    """LVIS AP of COCO-format results, in percent.

    Args:
        lvis_gt: the LVIS ground truth (images carry ``neg_category_ids`` and
            ``not_exhaustive_category_ids``, categories carry ``frequency``).
        results: COCO result dicts with dataset category ids; for "segm" each has a
            ``segmentation`` RLE. Not modified.
        iou_type: "bbox" or "segm".
        max_dets_per_image: LVIS limit of detections per image (300).

    Returns:
        ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"}``; NaN everywhere when
        there are no results.
    """
    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"LVIS AP is defined for 'bbox' and 'segm', got {iou_type!r}")
    if max_dets_per_image < 1:
        raise ValueError(f"max_dets_per_image must be >= 1, got {max_dets_per_image}")
    if not results:
        return {name: float("nan") for name in _METRICS}
    # Deep copy: loadRes adds and rewrites fields of the dicts it is given.
    results = copy.deepcopy(_verified(lvis_gt, limit_dets_per_image(results, max_dets_per_image)))
    if iou_type == "segm":
        # As LVISResults does for masks: the area (small / medium / large) is the mask's area.
        for r in results:
            r.pop("bbox", None)
    lvis_dt = lvis_gt.loadRes(results)
    lvis_eval = COCOeval_faster(
        lvis_gt, lvis_dt, iou_type, lvis_style=True, print_function=logger.info
    )
    lvis_eval.params.maxDets = [max_dets_per_image]
    lvis_eval.evaluate()
    lvis_eval.accumulate()
    lvis_eval.summarize()
    stats = lvis_eval.stats_as_dict
    return {name: float(stats[key] * 100) for name, key in _METRICS.items()}


class LVISAPEvaluator(DatasetEvaluator):
    """LVIS box / mask AP of a Detectron2 model, distributed-safe and resumable.

    Consumes ``outputs[i]["instances"]`` (``pred_boxes``, ``scores``, ``pred_classes`` and, for
    mask AP, ``pred_masks``), like Detectron2's ``LVISEvaluator``, whose result keys it keeps
    (``{"bbox": {...}, "segm": {...}}``, percent). Ground truth is the dataset metadata's
    ``json_file``, read when the evaluator is built (so a missing file fails before inference).
    ``take_records`` / ``restore_records`` let
    :class:`~sam_d2.evaluation.resumable.ResumableEvaluator` keep each image's detections.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        *,
        tasks: Optional[Sequence[str]] = None,
        distributed: bool = True,
        max_dets_per_image: int = LVIS_MAX_DETS_PER_IMAGE,
    ) -> None:
        """
        Args:
            dataset_name: a registered LVIS-format dataset with ``json_file`` metadata.
            output_dir: where to write ``lvis_instances_results.json``; None writes nothing.
            tasks: "bbox" and/or "segm"; default: "bbox", plus "segm" if predictions have masks.
            distributed: gather predictions from all ranks (False: this process only).
            max_dets_per_image: LVIS limit of detections per image (300).
        """
        self._metadata = MetadataCatalog.get(dataset_name)
        json_file = self._metadata.get("json_file")
        if not json_file:
            raise ValueError(f"dataset {dataset_name} has no 'json_file' metadata for LVIS AP")
        local = PathManager.get_local_path(json_file)
        if not os.path.isfile(local):
            raise FileNotFoundError(f"LVIS annotations {json_file} of {dataset_name} not found")
        self._lvis_gt = FasterCOCO(local)
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._tasks = tuple(tasks) if tasks else None
        self._distributed = distributed
        self._max_dets = max_dets_per_image
        self.reset()

    def reset(self) -> None:
        self._predictions: List[Tuple[Any, List[Dict[str, Any]]]] = []
        self._taken = 0

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for index, (inp, out) in enumerate(zip(inputs, outputs)):
            if "instances" not in out:
                raise KeyError(f"outputs[{index}] has no 'instances'; keys: {sorted(out)}")
            instances = out["instances"].to("cpu")
            self._predictions.append(
                (inp["image_id"], instances_to_coco_json(instances, inp["image_id"]))
            )

    def take_records(self, final: bool = False) -> List[Tuple[str, Any]]:
        """``(image_id, prediction)`` of the images processed since the last call."""
        records = self._predictions[self._taken :]
        self._taken = len(self._predictions)
        return [(str(image_id), (image_id, dets)) for image_id, dets in records]

    def restore_records(self, records: List[Tuple[str, Any]]) -> None:
        """Add records saved by :meth:`take_records` in an earlier (interrupted) run."""
        self._predictions.extend(record for _, record in records)
        self._taken = len(self._predictions)

    def _to_dataset_ids(self, results: List[Dict[str, Any]]) -> None:
        """Contiguous class indices -> the dataset's category ids, in place."""
        id_map = self._metadata.get("thing_dataset_id_to_contiguous_id")
        to_dataset = {v: k for k, v in id_map.items()} if id_map else None
        num_classes = len(to_dataset) if to_dataset else len(self._lvis_gt.getCatIds())
        for r in results:
            if not 0 <= r["category_id"] < num_classes:
                raise ValueError(
                    f"a prediction of image {r['image_id']} has class {r['category_id']}, but "
                    f"{self._dataset_name} has {num_classes} classes (0 .. {num_classes - 1})"
                )
            r["category_id"] = to_dataset[r["category_id"]] if to_dataset else r["category_id"] + 1

    def evaluate(self) -> "OrderedDict[str, Dict[str, float]]":
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return OrderedDict()
        by_image = dict(predictions)
        if len(by_image) != len(predictions):
            logger.warning(
                "%d images were evaluated more than once", len(predictions) - len(by_image)
            )
        results = [copy.copy(r) for _, dets in sorted(by_image.items()) for r in dets]
        self._to_dataset_ids(results)
        if self._output_dir:
            path = os.path.join(self._output_dir, "lvis_instances_results.json")
            with atomic_open(path) as f:
                json.dump(results, f)
            logger.info("LVIS results written to %s", path)
        tasks = self._tasks or (
            ("bbox", "segm") if any("segmentation" in r for r in results) else ("bbox",)
        )
        scores = OrderedDict()
        for task in sorted(tasks):
            scores[task] = evaluate_lvis(self._lvis_gt, results, task, self._max_dets)
            logger.info(
                "LVIS %s AP on %s (%d images):\n%s",
                task,
                self._dataset_name,
                len(by_image),
                create_small_table(scores[task]),
            )
        return scores
