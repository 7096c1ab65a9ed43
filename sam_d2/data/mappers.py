"""Dataset mappers: ViTDet's large-scale-jitter training input and detector-prompted SAM's inputs.

- :func:`build_lsj_augmentation` / :func:`build_lsj_mapper`: ViTDet's training augmentation
  (``projects/ViTDet/configs/common/coco_loader_lsj.py``), which Detectron2's yacs
  ``build_augmentation`` cannot express.
- :class:`DetectorPromptedSamMapper`: inputs of
  :class:`~sam_d2.modeling.meta_arch.detector_prompted.DetectorPromptedSam`. Besides the
  detector's ``"image"`` (Detectron2's own ``DatasetMapper`` with the detector's resize and channel
  order) every dict gets ``"sam_image"``: the *original* image resized by the SAM's own transform
  (its frame: longest side = ``MODEL.SAM.IMAGE_SIZE`` for SAM, the square for SAM 2; RGB). Each
  branch thus sees exactly the input it was trained on, with no double resampling (a Mask R-CNN R50
  detector sees 800/1333, SAM sees 1024). When boxes come from the ground truth
  (``MODEL.SAM_PROMPTED.BOX_SOURCE = "gt"``) the annotations are kept at test time, as
  ``"instances"`` in the frame of ``"image"`` (Detectron2's convention).
"""

import copy
import logging
from typing import Any, Dict, List, Union

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .transforms import frame_transform, variant_frame

__all__ = [
    "build_lsj_augmentation",
    "build_lsj_mapper",
    "DetectorPromptedSamMapper",
]

logger = logging.getLogger(__name__)


def build_lsj_augmentation(cfg: CfgNode) -> List[T.Augmentation]:
    """ViTDet's large-scale jitter: flip, random rescale of a square target, random crop.

    ``RandomFlip(horizontal)``, ``ResizeScale(MIN_SCALE, MAX_SCALE, S, S)``,
    ``FixedSizeCrop((S, S), pad=False)`` with ``S = cfg.INPUT.LSJ.IMAGE_SIZE`` (the model pads to
    the square itself, see ``MODEL.VIT.SQUARE_PAD``).
    """
    lsj = cfg.INPUT.LSJ
    size = lsj.IMAGE_SIZE
    return [
        T.RandomFlip(horizontal=True),
        T.ResizeScale(
            min_scale=lsj.MIN_SCALE, max_scale=lsj.MAX_SCALE, target_height=size, target_width=size
        ),
        T.FixedSizeCrop(crop_size=(size, size), pad=False),
    ]


def build_lsj_mapper(cfg: CfgNode) -> DatasetMapper:
    """ViTDet's training mapper: Detectron2's ``DatasetMapper`` with :func:`build_lsj_augmentation`
    and boxes recomputed from the cropped masks (upstream's ``recompute_boxes=True``)."""
    return DatasetMapper(
        cfg,
        is_train=True,
        augmentations=build_lsj_augmentation(cfg),
        recompute_boxes=cfg.MODEL.MASK_ON,
    )


def _to_rgb(image: np.ndarray, image_format: str) -> np.ndarray:
    """(H, W, 3) uint8 in ``image_format`` ("RGB" or "BGR") -> RGB."""
    if image_format == "RGB":
        return image
    if image_format == "BGR":
        return image[:, :, ::-1]
    raise ValueError(
        f"DetectorPromptedSamMapper: INPUT.FORMAT must be 'RGB' or 'BGR', got {image_format!r}"
    )


class DetectorPromptedSamMapper(DatasetMapper):
    """Detectron2's ``DatasetMapper`` plus ``"sam_image"`` (and, for oracle boxes, ground truth).

    Output keys: those of ``DatasetMapper`` at inference (``"image"`` in the detector's resize and
    ``INPUT.FORMAT``, ``"height"``, ``"width"``, ``"image_id"``, ...), plus
        sam_image   (3, h, w) RGB: the original image resized into the SAM's frame of side
                    ``sam_image_size`` (uint8, longest side, as SAM does; float32 square for
                    SAM 2, :func:`~sam_d2.data.transforms.frame_transform`);
        instances   only with ``keep_gt``: non-crowd ground truth (``gt_boxes``, ``gt_classes``)
                    in the pixel frame of ``"image"``.
    """

    @configurable
    def __init__(
        self,
        is_train: bool,
        *,
        augmentations: List[Union[T.Augmentation, T.Transform]],
        image_format: str,
        sam_image_size: int = 1024,
        sam_frame: str = "pad",
        keep_gt: bool = False,
    ) -> None:
        """
        Args:
            is_train: must be False (the detector-prompted model is evaluation-only).
            augmentations: the detector's test-time transforms (e.g. ResizeShortestEdge).
            image_format: the detector's channel order, "RGB" or "BGR".
            sam_image_size: side of the SAM's input (``MODEL.SAM.IMAGE_SIZE``).
            sam_frame: the SAM's frame, "pad" or "stretch" (of ``MODEL.SAM.VARIANT``).
            keep_gt: keep the ground-truth boxes and classes as ``"instances"``.
        """
        if is_train:
            raise ValueError(
                "DetectorPromptedSamMapper is for inference only: DetectorPromptedSam does not "
                "train; train the detector with its own META_ARCHITECTURE"
            )
        _to_rgb(np.zeros((1, 1, 3), np.uint8), image_format)  # validates the format
        super().__init__(
            is_train=False,
            augmentations=augmentations,
            image_format=image_format,
            use_instance_mask=False,
            use_keypoint=False,
        )
        self.sam_resize = frame_transform(sam_frame, sam_image_size)
        self.keep_gt = keep_gt

    @classmethod
    def from_config(cls, cfg: CfgNode, is_train: bool = False) -> Dict[str, Any]:
        return {
            "is_train": is_train,
            "augmentations": utils.build_augmentation(cfg, is_train=False),
            "image_format": cfg.INPUT.FORMAT,
            "sam_image_size": cfg.MODEL.SAM.IMAGE_SIZE,
            "sam_frame": variant_frame(cfg.MODEL.SAM.VARIANT),
            "keep_gt": cfg.MODEL.SAM_PROMPTED.BOX_SOURCE == "gt",
        }

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        dataset_dict.setdefault("height", image.shape[0])
        dataset_dict.setdefault("width", image.shape[1])

        rgb = _to_rgb(image, self.image_format)
        sam = self.sam_resize.get_transform(rgb).apply_image(rgb)
        dataset_dict["sam_image"] = torch.as_tensor(np.ascontiguousarray(sam.transpose(2, 0, 1)))

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        dataset_dict.pop("sem_seg_file_name", None)
        if self.keep_gt:
            if "annotations" not in dataset_dict:
                raise KeyError(
                    f"{dataset_dict['file_name']}: MODEL.SAM_PROMPTED.BOX_SOURCE='gt' needs "
                    "'annotations' in the dataset dicts"
                )
            for anno in dataset_dict["annotations"]:
                # Integer boxes (allowed in COCO json) would be scaled in place as integers by
                # Detectron2's transforms, i.e. truncated; the oracle needs them exact.
                anno["bbox"] = [float(v) for v in anno["bbox"]]
            self._transform_annotations(dataset_dict, transforms, image.shape[:2])
        else:
            dataset_dict.pop("annotations", None)
        return dataset_dict
