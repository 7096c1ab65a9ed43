"""Mask AR@1000 of class-agnostic object proposals on LVIS (SAM paper, Table 4).

Definition (what the numbers mean)
----------------------------------
Proposals carry no category, so recall is computed class-agnostically, per image, with the
matching rules of the LVIS API (``lvis.LVISEval.evaluate_img``) applied to a single category
that contains every ground-truth (GT) instance of the image:

* Each image keeps its ``max_proposals`` (default 1000) highest-scoring proposals (stable sort,
  as ``lvis.LVISResults.limit_dets_per_image``). IoU is mask IoU on RLE (``pycocotools``).
* At each IoU threshold t in 0.50:0.05:0.95 proposals are matched greedily in descending score
  order; a proposal takes the still unmatched GT with the highest IoU >= t, preferring GT that
  is not ignored (ties: the later annotation, as in LVISEval). A proposal matched to an ignored
  GT does not count; unmatched proposals are never penalised (this is recall).
* recall(t) = matched non-ignored GT / non-ignored GT, both summed over all evaluated images
  (instance-pooled, the standard proposal AR), and AR = 100 * mean over the 10 thresholds.
* Size buckets use LVIS's area ranges on the annotation's json ``area``: small [0, 32^2],
  medium [32^2, 96^2], large [96^2, 1e10] (bounds inclusive, as LVISEval). In a size bucket the
  GT outside the range become ignore regions (they may absorb a proposal but are not counted),
  exactly the COCO/LVIS convention.
* Frequency buckets (f / c / r, from each category's ``frequency`` field, LVIS v0.5 and v1 alike)
  follow the SAM paper (appendix D.3): the same AR@1000, measured against a GT set that contains
  only the instances of that frequency group; the other GT are removed, not ignored, so proposals
  are matched independently per group.

Why: the paper reports the standard mask AR@1000 of proposals on LVIS v1, i.e. class-agnostic
recall pooled over instances; its numbers agree (AR "all" sits next to AR_f, because frequent
instances dominate LVIS, whereas a per-category average would sit near the mean of f/c/r). The
LVIS API itself cannot be used as-is: its ``use_cats=0`` path reads the wrong dictionary key
(no GT at all), it has no per-frequency AR, ``accumulate`` uses ``np.float`` (gone since numpy
1.24), and its pure-Python matching over 1000 proposals x 20k images x 4 areas x 10 thresholds
is far too slow; the tests check this module against its ``evaluate_img`` matching. Here the
matching is done once per image in :meth:`LVISMaskProposalEvaluator.process` (on the worker that
produced the masks) and only integer counts are gathered, so the numbers are identical on 1 or N
processes.

LVIS fields and class-agnostic proposals
----------------------------------------
* ``neg_category_ids``: LVISEval only uses it to decide which *detections of a category* are
  evaluated in an image; proposals have no category and recall depends on GT only, so it has no
  effect.
* ``not_exhaustive_category_ids``: LVISEval ignores *unmatched detections* of such categories
  (no false positives); their GT instances still count as positives. Here too: every GT counts,
  and unmatched proposals are never penalised anyway.
* Crowd: LVIS has no crowd regions (LVISEval computes IoU with ``iscrowd=False``). The optional
  per-annotation ``ignore`` flag that LVISEval honours is honoured here the same way.
* Images: recall is computed over the images given to :meth:`process` (all of the dataset in a
  normal evaluation); an image whose GT are never proposed counts its GT as missed.
"""

import copy
import itertools
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BitMasks, Instances
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table
from lvis import LVIS

from ..utils.atomic import atomic_open

__all__ = ["LVISMaskProposalEvaluator", "greedy_match", "image_recall_counts"]

logger = logging.getLogger(__name__)

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
# LVISEval's Params.area_rng; the keys name the buckets in the metric names (AR@K, AR_s@K, ...).
AREA_RANGES: Dict[str, Tuple[float, float]] = {
    "all": (0.0, 1e5**2),
    "s": (0.0, 32.0**2),
    "m": (32.0**2, 96.0**2),
    "l": (96.0**2, 1e5**2),
}
FREQUENCY_GROUPS = ("f", "c", "r")
# Order of the rows of the per-image counts: the 4 area buckets, then the 3 frequency groups.
BUCKETS = tuple(AREA_RANGES) + FREQUENCY_GROUPS
_ENCODE_CHUNK = 64


def greedy_match(
    ious: np.ndarray, gt_ignore: np.ndarray, iou_thresholds: Sequence[float] = IOU_THRESHOLDS
) -> np.ndarray:
    """Match score-sorted proposals to GT with LVISEval's greedy rule, at several thresholds.

    Args:
        ious: (D, G) float IoU between proposals, sorted by descending score, and GT.
        gt_ignore: (G,) bool, GT that are ignore regions (may absorb a proposal, not counted).
        iou_thresholds: (T,) IoU thresholds; a match needs IoU >= threshold.

    Returns:
        (T, G) bool: which GT are matched at each threshold.
    """
    num_dt, num_gt = ious.shape
    if gt_ignore.shape != (num_gt,):
        raise ValueError(f"gt_ignore has shape {gt_ignore.shape}, expected ({num_gt},)")
    matched = np.zeros((len(iou_thresholds), num_gt), dtype=bool)
    if num_dt == 0 or num_gt == 0:
        return matched
    # Proposals below the lowest threshold with every GT can never match: skip them.
    ious = ious[ious.max(axis=1) >= min(iou_thresholds)]
    for t_idx, threshold in enumerate(iou_thresholds):
        taken = matched[t_idx]
        above = ious >= min(threshold, 1 - 1e-10)
        for row, row_above in zip(ious, above, strict=True):
            free = row_above & ~taken
            if not free.any():
                continue
            pool = free & ~gt_ignore
            if not pool.any():
                pool = free
            # Highest IoU in the pool; on ties the last GT wins, as in LVISEval's loop.
            reversed_scores = np.where(pool, row, -1.0)[::-1]
            taken[num_gt - 1 - int(np.argmax(reversed_scores))] = True
    return matched


def image_recall_counts(
    proposal_rles: List[Dict[str, Any]],
    gt_rles: List[Dict[str, Any]],
    gt_areas: np.ndarray,
    gt_frequencies: Sequence[str],
    gt_ignore: np.ndarray,
) -> Tuple[np.ndarray, np.ndarray]:
    """Per-bucket GT counts and matched-GT counts of one image (see the module docstring).

    Args:
        proposal_rles: D RLEs, sorted by descending score and already cut to the max proposals.
        gt_rles: G RLEs of the image's GT instances, in annotation order.
        gt_areas: (G,) the annotations' json ``area``.
        gt_frequencies: G frequency groups ("f", "c" or "r") of the GT categories.
        gt_ignore: (G,) bool, the annotations' LVIS ``ignore`` flag.

    Returns:
        num_gt: (B,) int64, non-ignored GT per bucket (B = len(BUCKETS)).
        num_matched: (B, T) int64, matched non-ignored GT per bucket and IoU threshold.
    """
    num_gt = np.zeros(len(BUCKETS), dtype=np.int64)
    num_matched = np.zeros((len(BUCKETS), len(IOU_THRESHOLDS)), dtype=np.int64)
    if len(gt_rles) == 0:
        return num_gt, num_matched
    if proposal_rles:
        ious = np.asarray(mask_util.iou(proposal_rles, gt_rles, [0] * len(gt_rles)))
    else:
        ious = np.zeros((0, len(gt_rles)))
    frequencies = np.asarray(gt_frequencies)
    for b_idx, bucket in enumerate(BUCKETS):
        if bucket in AREA_RANGES:
            low, high = AREA_RANGES[bucket]
            keep = np.ones(len(gt_rles), dtype=bool)
            ignore = gt_ignore | (gt_areas < low) | (gt_areas > high)
        else:
            keep = frequencies == bucket
            ignore = gt_ignore[keep]
        matched = greedy_match(ious[:, keep], ignore)
        num_gt[b_idx] = np.count_nonzero(~ignore)
        num_matched[b_idx] = np.count_nonzero(matched & ~ignore, axis=1)
    return num_gt, num_matched


def _encode_masks(masks: torch.Tensor, order: np.ndarray) -> List[Dict[str, Any]]:
    """RLE-encode ``masks[order]`` chunk by chunk (bounded memory).

    Args:
        masks: (N, H, W) bool masks on any device; the gather and the transposition to the
            column-major layout of RLE happen there (fast on a GPU) before the copy to the CPU.
        order: (K,) indices into the N masks.

    Returns:
        K COCO RLEs (``counts`` as bytes), in the order of ``order``.
    """
    rles: List[Dict[str, Any]] = []
    for start in range(0, len(order), _ENCODE_CHUNK):
        index = torch.as_tensor(order[start : start + _ENCODE_CHUNK], device=masks.device)
        # (k, W, H) C-contiguous is (H, W, k) Fortran-contiguous once its axes are reversed.
        chunk = masks[index].transpose(1, 2).contiguous().cpu().numpy()
        rles.extend(mask_util.encode(chunk.view(np.uint8).transpose(2, 1, 0)))
    return rles


class LVISMaskProposalEvaluator(DatasetEvaluator):
    """Mask AR@K (all / s / m / l / f / c / r) of class-agnostic mask proposals on LVIS.

    ``process`` takes Detectron2 inputs (with "image_id") and outputs holding
    ``{"proposals": Instances}`` or ``{"instances": Instances}`` with ``pred_masks`` (N, H, W)
    bool at the image's original resolution and ``scores`` (N,). ``evaluate`` returns
    ``{"proposals_mask": {"AR@K", "AR_s@K", "AR_m@K", "AR_l@K", "AR_f@K", "AR_c@K", "AR_r@K"}}``
    in percent. The exact definition is in the module docstring.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        *,
        max_proposals: int = 1000,
        distributed: bool = True,
    ):
        """
        Args:
            dataset_name: a registered dataset whose metadata has ``json_file``, an LVIS
                (v0.5 or v1) annotation file with annotations.
            output_dir: if given, the per-image recall counts are saved there as
                ``lvis_mask_proposal_recall.pth``.
            max_proposals: K, the number of highest-scoring proposals kept per image.
            distributed: gather the counts of all ranks to rank 0 before evaluating.
        """
        if not isinstance(max_proposals, int) or max_proposals <= 0:
            raise ValueError(f"max_proposals must be a positive int, got {max_proposals!r}")
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._max_proposals = max_proposals
        self._distributed = distributed

        metadata = MetadataCatalog.get(dataset_name)
        if not hasattr(metadata, "json_file"):
            raise ValueError(
                f"Dataset '{dataset_name}' has no 'json_file' in its metadata; register it with "
                "detectron2.data.datasets.register_lvis_instances (or set json_file)."
            )
        json_file = PathManager.get_local_path(metadata.json_file)
        if not os.path.isfile(json_file):
            raise FileNotFoundError(
                f"LVIS annotation file of dataset '{dataset_name}' not found: {json_file}"
            )
        self._json_file = json_file
        self._lvis = LVIS(json_file)
        if not self._lvis.imgs or not self._lvis.anns:
            raise ValueError(
                f"LVIS annotation file {json_file} has {len(self._lvis.imgs)} images and "
                f"{len(self._lvis.anns)} annotations: nothing to evaluate proposals against."
            )
        self._frequency = self._category_frequencies()
        self.reset()

    def _category_frequencies(self) -> Dict[int, str]:
        """Frequency group of every category that has annotations; validates the json."""
        frequency: Dict[int, str] = {}
        for ann in self._lvis.anns.values():
            cat_id = ann["category_id"]
            if "area" not in ann:
                raise ValueError(f"{self._json_file}: annotation {ann['id']} has no 'area'")
            if cat_id in frequency:
                continue
            cat = self._lvis.cats.get(cat_id)
            if cat is None or cat.get("frequency") not in FREQUENCY_GROUPS:
                raise ValueError(
                    f"{self._json_file}: category {cat_id} (annotation {ann['id']}) needs a "
                    f"'frequency' in {FREQUENCY_GROUPS}, got "
                    f"{None if cat is None else cat.get('frequency')!r}"
                )
            frequency[cat_id] = cat["frequency"]
        return frequency

    def reset(self) -> None:
        self._predictions: List[Dict[str, Any]] = []

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        """Match each image's top-K proposals to its GT and store the recall counts.

        Args:
            inputs: Detectron2 input dicts, each with "image_id".
            outputs: dicts with "proposals" or "instances": an :class:`Instances` with
                ``pred_masks`` (N, H, W) bool (or :class:`BitMasks`) and ``scores`` (N,).
        """
        if len(inputs) != len(outputs):
            raise ValueError(f"got {len(inputs)} inputs but {len(outputs)} outputs")
        for inp, out in zip(inputs, outputs, strict=True):
            image_id = inp["image_id"]
            image = self._lvis.imgs.get(image_id)
            if image is None:
                raise ValueError(f"image_id {image_id!r} is not an image of {self._json_file}")
            masks, scores = self._masks_and_scores(out, image)
            order = np.argsort(-scores, kind="stable")[: self._max_proposals]
            proposal_rles = _encode_masks(masks, order)

            anns = self._lvis.img_ann_map[image_id]
            num_gt, num_matched = image_recall_counts(
                proposal_rles,
                [self._lvis.ann_to_rle(ann) for ann in anns],
                np.array([ann["area"] for ann in anns], dtype=np.float64),
                [self._frequency[ann["category_id"]] for ann in anns],
                np.array([bool(ann.get("ignore", 0)) for ann in anns], dtype=bool),
            )
            self._predictions.append(
                {
                    "image_id": image_id,
                    "num_proposals": len(scores),
                    "num_gt": num_gt,
                    "num_matched": num_matched,
                }
            )

    def _masks_and_scores(
        self, output: Dict[str, Any], image: Dict[str, Any]
    ) -> Tuple[torch.Tensor, np.ndarray]:
        """Validated (N, H, W) bool masks (on their device) and (N,) float64 CPU scores."""
        image_id = image["id"]
        key = "proposals" if "proposals" in output else "instances"
        if key not in output:
            raise KeyError(
                f"image {image_id}: outputs need 'proposals' or 'instances', got {sorted(output)}"
            )
        instances: Instances = output[key]
        for field in ("pred_masks", "scores"):
            if not instances.has(field):
                raise KeyError(
                    f"image {image_id}: outputs['{key}'] needs field '{field}', has "
                    f"{sorted(instances.get_fields())}"
                )
        masks = instances.pred_masks
        if isinstance(masks, BitMasks):
            masks = masks.tensor
        scores = instances.scores.detach().to("cpu", torch.float64).numpy()
        expected = (len(scores), image["height"], image["width"])
        if masks.dim() != 3 or tuple(masks.shape) != expected:
            raise ValueError(
                f"image {image_id}: pred_masks has shape {tuple(masks.shape)}, expected (N, H, W) "
                f"= {expected} (N scores; H, W from {self._json_file})"
            )
        if masks.dtype != torch.bool:
            raise TypeError(
                f"image {image_id}: pred_masks must be bool (threshold them first), "
                f"got {masks.dtype}"
            )
        if not np.isfinite(scores).all():
            raise ValueError(f"image {image_id}: scores contain NaN or inf")
        return masks, scores

    def evaluate(self) -> Dict[str, "OrderedDict[str, float]"]:
        """Gather the per-image counts to rank 0 and compute AR (empty dict on other ranks)."""
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions
        if not predictions:
            raise ValueError(
                f"LVISMaskProposalEvaluator on '{self._dataset_name}' received no predictions: "
                "process() was never called (empty dataset or data loader?)"
            )
        image_ids = [p["image_id"] for p in predictions]
        if len(set(image_ids)) != len(image_ids):
            duplicates = sorted({i for i in image_ids if image_ids.count(i) > 1})[:10]
            raise ValueError(f"images processed more than once: {duplicates}")

        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "lvis_mask_proposal_recall.pth")
            with atomic_open(path, "wb") as f:
                torch.save(predictions, f)

        num_gt = np.sum([p["num_gt"] for p in predictions], axis=0)
        num_matched = np.sum([p["num_matched"] for p in predictions], axis=0)
        k = self._max_proposals
        results: "OrderedDict[str, float]" = OrderedDict()
        for b_idx, bucket in enumerate(BUCKETS):
            name = f"AR@{k}" if bucket == "all" else f"AR_{bucket}@{k}"
            if num_gt[b_idx] == 0:
                logger.warning(f"No ground truth in bucket '{name}' on the evaluated images: NaN.")
                results[name] = float("nan")
            else:
                results[name] = float(100.0 * np.mean(num_matched[b_idx] / num_gt[b_idx]))

        num_proposals = np.array([p["num_proposals"] for p in predictions])
        logger.info(
            f"Mask proposal recall on {len(predictions)} images of '{self._dataset_name}': "
            f"{np.mean(num_proposals):.1f} proposals per image, "
            f"{np.count_nonzero(num_proposals > k)} images cut to the top {k}; GT per bucket "
            + ", ".join(f"{b}={n}" for b, n in zip(BUCKETS, num_gt, strict=True))
        )
        logger.info("Mask proposal AR (%):\n" + create_small_table(results))
        return copy.deepcopy({"proposals_mask": results})
