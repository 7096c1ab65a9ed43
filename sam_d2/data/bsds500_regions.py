"""BSDS500 human segmentations as instance masks: a small real dataset to train SAM from scratch.

Each of the 200 BSDS500 *test* images has 4-9 human segmentations (``groundTruth{k}.Segmentation``,
a label map). One annotator's map (the first by default) gives the image's objects: every label
region covering at least ``min_area_ratio`` of the image becomes one instance mask (COCO RLE).
The images, sorted by id, are split 150 / 50:

    bsds500_regions_train     the first 150 test images (training)
    bsds500_regions_heldout   the last 50 (evaluation with the point benchmark)

Layout (the same as :mod:`sam_d2.data.bsds500`)::

    <root>/bsds500/images/test/<id>.jpg
    <root>/bsds500/groundTruth/test/<id>.mat
"""

import os
from typing import Any, Dict, List, Optional

import numpy as np
import pycocotools.mask as mask_util
import scipy.io
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .bsds500 import load_bsds500_dicts

__all__ = ["BSDS_REGION_SPLITS", "load_bsds_regions", "register_bsds500_regions"]

#: Split name -> slice of the 200 test images sorted by id.
BSDS_REGION_SPLITS: Dict[str, slice] = {"train": slice(0, 150), "heldout": slice(150, 200)}


def _segmentation(mat_file: str, annotator: int) -> np.ndarray:
    """The label map (H, W) of one annotator of a BSDS ground-truth ``.mat``."""
    cells = scipy.io.loadmat(mat_file)["groundTruth"].ravel()
    if not 0 <= annotator < cells.size:
        raise ValueError(f"{mat_file}: annotator {annotator} out of range, it has {cells.size}")
    return np.asarray(cells[annotator]["Segmentation"].ravel()[0])


def load_bsds_regions(
    root: str, split: str, annotator: int = 0, min_area_ratio: float = 0.01
) -> List[Dict[str, Any]]:
    """Dataset dicts of one split, with one annotation per region of the human segmentation.

    Args:
        root: folder containing ``bsds500/``.
        split: "train" (150 images) or "heldout" (50 images).
        annotator: which human segmentation of each image (0 = the first).
        min_area_ratio: regions smaller than this fraction of the image are left out.

    Returns:
        Detectron2 dicts (``file_name``, ``image_id``, ``height``, ``width``, ``annotations``
        with ``segmentation`` as compressed RLE, ``bbox`` XYWH, ``area``, ``id`` = the label,
        ``category_id`` 0, ``iscrowd`` 0).
    """
    if split not in BSDS_REGION_SPLITS:
        raise ValueError(
            f"unknown BSDS500 regions split {split!r}; expected one of {list(BSDS_REGION_SPLITS)}"
        )
    dicts = load_bsds500_dicts(root, "test")[BSDS_REGION_SPLITS[split]]
    out = []
    for d in dicts:
        seg = _segmentation(d["edge_gt_file"], annotator)
        min_area = min_area_ratio * seg.size
        annotations = []
        for label in np.unique(seg):
            mask = seg == label
            if mask.sum() < min_area:
                continue
            rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append(
                {
                    "id": int(label),
                    "segmentation": rle,
                    "bbox": mask_util.toBbox(rle).tolist(),
                    "bbox_mode": BoxMode.XYWH_ABS,
                    "area": float(mask_util.area(rle)),
                    "category_id": 0,
                    "iscrowd": 0,
                }
            )
        record = {k: d[k] for k in ("file_name", "image_id", "height", "width")}
        record["annotations"] = annotations
        out.append(record)
    return out


def register_bsds500_regions(root: Optional[str] = None, min_area_ratio: float = 0.01) -> None:
    """Register ``bsds500_regions_{train,heldout}`` (lazily loaded; point-benchmark evaluator).

    Args:
        root: folder containing ``bsds500/``; defaults to ``$DETECTRON2_DATASETS`` or "datasets".
        min_area_ratio: regions smaller than this fraction of the image are left out (both
            splits; see :func:`load_bsds_regions`).
    """
    if not 0.0 <= min_area_ratio < 1.0:
        raise ValueError(f"min_area_ratio must be in [0, 1), got {min_area_ratio}")
    root = root or os.getenv("DETECTRON2_DATASETS", "datasets")
    for split in BSDS_REGION_SPLITS:
        name = f"bsds500_regions_{split}"
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(
            name,
            lambda split=split: load_bsds_regions(root, split, min_area_ratio=min_area_ratio),
        )
        MetadataCatalog.get(name).set(
            evaluator_type="point_miou", thing_classes=["region"], min_area_ratio=min_area_ratio
        )


register_bsds500_regions()  # lazy: bsds500_regions_{train,heldout} under $DETECTRON2_DATASETS
