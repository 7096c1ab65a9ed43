"""Training mapper of ``PromptableSam``: an image and its ground-truth masks, nothing else.

Prompts are not sampled here: the model simulates the paper's interactive rounds on its device
from the masks (:mod:`sam_d2.modeling.interactive_training`). Per image the mapper

1. reads the annotations: the dataset dict's ``annotations`` (COCO-style; polygons or RLE), or,
   for lazily registered per-image JSON files (:mod:`sam_d2.data.sa1b`), the file named by
   ``sa1b_json``;
2. applies the paper's data rules: crowd annotations and masks covering more than
   ``max_mask_area_ratio`` of the image are dropped, then at most ``max_masks`` are kept, drawn at
   random (only those are decoded);
3. reads the image as RGB and resizes it into the model's frame (longest side = the encoder size
   for SAM; the encoder square for SAM 2, :mod:`sam_d2.data.transforms`), or, with ``lsj``,
   applies large-scale jitter (random scale of the square, random crop, padded by the model; the
   same in both frames); optional flip;
4. returns ``image`` (3, h, w) in ``image_format`` (uint8; float32 for SAM 2's stretch) and
   ``gt_masks`` (N, h, w) bool in the same frame (masks emptied by a crop are dropped).

Randomness: flips and jitter use numpy's global RNG, which Detectron2 seeds per DataLoader
worker; the mask subset uses the mapper's own generator, derived per (seed, distributed rank,
worker id) on first use in each process, so workers never repeat each other's draws.
"""

import copy
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.utils import comm

from .image_io import read_image_rgb
from .sa1b import read_sa1b_json
from .transforms import frame_transform, variant_frame

__all__ = ["SamTrainMapper", "annotation_area"]


def annotation_area(ann: Dict[str, Any], height: int, width: int) -> float:
    """Pixel area of an annotation: its ``area`` field, else the area of its mask.

    Args:
        ann: COCO-style annotation with ``segmentation`` (polygons or RLE).
        height, width: image size.
    """
    if "area" in ann:
        return float(ann["area"])
    seg = ann["segmentation"]
    if isinstance(seg, list):
        rle = mask_util.merge(mask_util.frPyObjects(seg, height, width))
    elif isinstance(seg.get("counts"), list):
        rle = mask_util.frPyObjects(seg, height, width)
    else:
        rle = seg
    return float(mask_util.area(rle))


class SamTrainMapper:
    """Dataset dict -> PromptableSam training input (see module docstring)."""

    @configurable
    def __init__(
        self,
        *,
        image_size: int,
        image_format: str,
        max_masks: int = 64,
        max_mask_area_ratio: float = 0.9,
        lsj_scale: Optional[Tuple[float, float]] = None,
        random_flip: bool = True,
        seed: int = 0,
        frame: str = "pad",
    ) -> None:
        """
        Args:
            image_size: encoder input side (the resize's side; LSJ crop size).
            image_format: channel order of the produced ``"image"`` ("RGB" or "BGR").
            max_masks: masks kept per image, drawn at random (the paper: at most 64 per GPU).
            max_mask_area_ratio: masks covering more of the image are dropped (paper: 0.9).
            lsj_scale: (min, max) scale of large-scale jitter (paper: (0.1, 2.0)), or None to
                resize the longest side to ``image_size``.
            random_flip: horizontal flip augmentation.
            seed: seed of the mask subset; each (rank, worker) derives its own stream.
            frame: the model's frame without ``lsj``: "pad" (SAM) or "stretch" (SAM 2).
        """
        if max_masks < 1:
            raise ValueError(f"max_masks must be >= 1, got {max_masks}")
        augs: List[T.Augmentation] = []
        if lsj_scale is not None:
            augs += [
                T.ResizeScale(lsj_scale[0], lsj_scale[1], image_size, image_size),
                T.FixedSizeCrop((image_size, image_size), pad=False),
            ]
        else:
            augs.append(frame_transform(frame, image_size))
        if random_flip:
            augs.append(T.RandomFlip(horizontal=True))
        self.augmentations = T.AugmentationList(augs)
        self.image_format = image_format
        self.max_masks = max_masks
        self.max_mask_area_ratio = max_mask_area_ratio
        self.seed = seed
        self._rng: Optional[np.random.Generator] = None
        self._rng_key: Optional[Tuple[int, int]] = None

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        t = cfg.MODEL.SAM.TRAIN
        return dict(
            image_size=cfg.MODEL.SAM.IMAGE_SIZE,
            image_format=cfg.INPUT.FORMAT,
            max_masks=t.MAX_MASKS_PER_IMAGE,
            max_mask_area_ratio=t.MAX_MASK_AREA_RATIO,
            lsj_scale=(cfg.INPUT.LSJ.MIN_SCALE, cfg.INPUT.LSJ.MAX_SCALE) if t.LSJ else None,
            random_flip=cfg.INPUT.RANDOM_FLIP == "horizontal",
            seed=cfg.SEED if cfg.SEED >= 0 else 0,
            frame=variant_frame(cfg.MODEL.SAM.VARIANT),
        )

    @property
    def rng(self) -> np.random.Generator:
        """The generator of this process: (re)derived when the (rank, worker) changes."""
        info = torch.utils.data.get_worker_info()
        key = (comm.get_rank(), info.id if info is not None else -1)
        if self._rng is None or self._rng_key != key:
            self._rng = np.random.default_rng([self.seed, key[0], key[1] + 1])
            self._rng_key = key
        return self._rng

    def select(self, annotations: List[Dict[str, Any]], height: int, width: int) -> List[Dict]:
        """The annotations kept for one image: no crowd, not too large, at most ``max_masks``."""
        limit = self.max_mask_area_ratio * height * width
        kept = [
            a
            for a in annotations
            if a.get("iscrowd", 0) == 0 and annotation_area(a, height, width) <= limit
        ]
        if len(kept) > self.max_masks:
            idx = np.sort(self.rng.choice(len(kept), self.max_masks, replace=False))
            kept = [kept[i] for i in idx]
        return kept

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        d = copy.deepcopy(dataset_dict)
        image = read_image_rgb(d["file_name"])
        height, width = image.shape[:2]
        if "annotations" in d:
            annotations = d.pop("annotations")
        elif "sa1b_json" in d:
            record = read_sa1b_json(d["sa1b_json"])
            if (record["height"], record["width"]) != (height, width):
                raise ValueError(
                    f"{d['sa1b_json']}: masks are {record['height']}x{record['width']} but the "
                    f"image {d['file_name']} is {height}x{width}"
                )
            annotations = record["annotations"]
        else:
            raise KeyError(
                f"dataset dict of {d['file_name']} has neither 'annotations' nor 'sa1b_json'"
            )
        annotations = self.select(annotations, height, width)
        aug = T.AugInput(image)
        transforms = self.augmentations(aug)
        image = aug.image
        h, w = image.shape[:2]
        annos = [utils.transform_instance_annotations(a, transforms, (h, w)) for a in annotations]
        instances = utils.annotations_to_instances(annos, (h, w), mask_format="bitmask")
        masks = instances.gt_masks.tensor.numpy() if len(instances) else np.zeros((0, h, w), bool)
        masks = masks[masks.reshape(len(masks), -1).any(axis=1)]
        if self.image_format == "BGR":
            image = image[..., ::-1]
        d.setdefault("height", height)
        d.setdefault("width", width)
        d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        d["gt_masks"] = torch.as_tensor(masks)
        return d
