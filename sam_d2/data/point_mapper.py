"""Test-time mapper and loader of the single-point valid-mask benchmark.

Detectron2's ``DatasetMapper`` drops annotations at test time and, in training mode, transforms
the masks with the image; the point benchmark needs the opposite: the image resized for SAM and
the GT masks kept at the original resolution (IoU is measured there).
:class:`PointEvalDatasetMapper` does that; :func:`build_point_eval_loader` builds the test loader,
optionally over several datasets at once (each dict is tagged with its ``dataset_name`` so that
one evaluator can report every dataset and their mean).

Output dict of the mapper (the input contract of
:class:`sam_d2.modeling.meta_arch.click_benchmark.SamClickBenchmark`):
    image          (3, h, w) tensor in ``INPUT.FORMAT`` in the model's frame: uint8, longest side
                   ``MODEL.SAM.IMAGE_SIZE`` (SAM); float32 ``IMAGE_SIZE`` square (SAM 2)
    height, width  original size
    instances      ``Instances((height, width))`` with ``gt_masks`` ``BitMasks`` (M, height, width)
                   and ``object_ids`` (M,) int64 (the annotation's ``id`` if every annotation
                   has one, else its index in the dict's ``annotations``)
    num_empty_masks  number of annotations skipped because their mask has no pixel
plus ``file_name``, ``image_id`` and ``dataset_name`` when the dataset dict has them.
Crowd annotations (``iscrowd=1``) are not objects of the benchmark and are dropped silently.
"""

import copy
import logging
from typing import Any, Dict, List, Sequence, Union

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.data import detection_utils as utils
from detectron2.structures import BitMasks, Instances, polygons_to_bitmask

from .image_io import read_image_rgb
from .transforms import frame_transform, variant_frame

__all__ = [
    "PointEvalDatasetMapper",
    "annotation_to_mask",
    "build_point_eval_mapper",
    "build_point_eval_loader",
    "point_eval_dataset_dicts",
]

logger = logging.getLogger(__name__)


def annotation_to_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """Decode one annotation's ``segmentation`` to a (height, width) bool mask.

    Args:
        segmentation: COCO polygons (list of flat XY lists), COCO RLE (dict with ``size`` and
            compressed or uncompressed ``counts``) or a (height, width) array.
        height, width: the image size.

    Raises:
        ValueError: unknown format, or an RLE / array of another size.
    """
    if isinstance(segmentation, list):
        polygons = [np.asarray(p, dtype=np.float64) for p in segmentation]
        polygons = [p for p in polygons if p.size >= 6]  # a polygon needs 3 points
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        return polygons_to_bitmask(polygons, height, width)
    if isinstance(segmentation, dict):
        size = [int(s) for s in segmentation.get("size", ())]
        if size != [height, width]:
            raise ValueError(f"RLE of size {size} in an image of size {[height, width]}")
        rle = segmentation
        if isinstance(rle["counts"], list):  # uncompressed RLE
            rle = mask_util.frPyObjects(rle, height, width)
        return mask_util.decode(rle).astype(bool)
    if isinstance(segmentation, np.ndarray):
        if segmentation.shape != (height, width):
            raise ValueError(
                f"mask array of shape {segmentation.shape} in an image of size {(height, width)}"
            )
        return segmentation.astype(bool)
    raise ValueError(
        f"unknown segmentation format {type(segmentation).__name__}; expected COCO polygons, "
        "COCO RLE or a bool array"
    )


class PointEvalDatasetMapper:
    """Dataset dict -> model input for the point benchmark (see the module docstring)."""

    @configurable
    def __init__(
        self, *, image_size: int = 1024, image_format: str = "RGB", frame: str = "pad"
    ) -> None:
        """
        Args:
            image_size: side of SAM's encoder input.
            image_format: "RGB" or "BGR", the channel order of the output ``image``.
            frame: the model's frame, "pad" (longest side resized) or "stretch" (SAM 2: resized
                to the square); :mod:`sam_d2.data.transforms`.
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be RGB or BGR, got {image_format!r}")
        self.resize = frame_transform(frame, image_size)
        self.image_format = image_format

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        return {
            "image_size": cfg.MODEL.SAM.IMAGE_SIZE,
            "image_format": cfg.INPUT.FORMAT,
            "frame": variant_frame(cfg.MODEL.SAM.VARIANT),
        }

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        d = copy.copy(dataset_dict)  # annotations are read, never modified
        image = read_image_rgb(d["file_name"])
        utils.check_image_size(d, image)  # sets height/width if absent, raises on mismatch
        height, width = int(d["height"]), int(d["width"])
        if self.image_format == "BGR":
            image = image[..., ::-1]
        image = self.resize.get_transform(image).apply_image(image)
        d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        annos = [a for a in d.pop("annotations", []) if not a.get("iscrowd", 0)]
        use_ids = bool(annos) and all("id" in a for a in annos)
        masks, ids, empty = [], [], 0
        for index, anno in enumerate(annos):
            if "segmentation" not in anno:
                raise KeyError(
                    f"{d['file_name']}: annotation {index} has no 'segmentation'; the point "
                    "benchmark needs GT masks"
                )
            try:
                mask = annotation_to_mask(anno["segmentation"], height, width)
            except ValueError as e:
                raise ValueError(f"{d['file_name']}: annotation {index}: {e}") from None
            object_id = int(anno["id"]) if use_ids else index
            if not mask.any():
                empty += 1
                logger.warning(
                    "%s: skipping object %d (empty mask)", d.get("file_name", "?"), object_id
                )
                continue
            masks.append(mask)
            ids.append(object_id)
        instances = Instances((height, width))
        instances.gt_masks = BitMasks(
            torch.from_numpy(np.stack(masks))
            if masks
            else torch.zeros((0, height, width), dtype=torch.bool)
        )
        instances.object_ids = torch.as_tensor(ids, dtype=torch.int64)
        d["instances"] = instances
        d["num_empty_masks"] = empty
        return d


def build_point_eval_mapper(cfg: CfgNode) -> PointEvalDatasetMapper:
    """The test mapper of the point benchmark (``MODEL.SAM.IMAGE_SIZE`` and ``VARIANT``,
    ``INPUT.FORMAT``)."""
    return PointEvalDatasetMapper(cfg)


def point_eval_dataset_dicts(dataset_names: Union[str, Sequence[str]]) -> List[Dict[str, Any]]:
    """Dataset dicts of one or several registered datasets, each tagged with ``dataset_name``."""
    if isinstance(dataset_names, str):
        dataset_names = [dataset_names]
    if not dataset_names:
        raise ValueError("no dataset name given")
    dicts = []
    for name in dataset_names:
        records = DatasetCatalog.get(name)
        if not records:
            logger.warning("dataset %s has no image", name)
        dicts.extend(dict(r, dataset_name=name) for r in records)
    return dicts


def build_point_eval_loader(cfg: CfgNode, dataset_names: Union[str, Sequence[str]]):
    """Detectron2 test loader (batch size 1, inference sampler) of the point benchmark.

    Args:
        cfg: config with ``MODEL.SAM.IMAGE_SIZE``, ``MODEL.SAM.VARIANT`` (its frame),
            ``INPUT.FORMAT``, ``DATALOADER.NUM_WORKERS``.
        dataset_names: one registered dataset, or several evaluated as one loader (their dicts
            carry ``dataset_name``; pass the same names to ``PointMIoUEvaluator``).
    """
    return build_detection_test_loader(
        point_eval_dataset_dicts(dataset_names),
        mapper=build_point_eval_mapper(cfg),
        num_workers=cfg.DATALOADER.NUM_WORKERS,
    )
