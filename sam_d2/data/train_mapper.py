"""Training mapper of ``PromptableSam``: one simulated first interaction per ground-truth mask.

Per image: read as RGB, resize the longest side to the encoder size (optionally flip), keep at most
``max_masks`` non-empty instance masks, and prompt each with either a noisy box (SAM paper:
noise of std 10% of the box side, at most 20 px) or one point drawn uniformly from the mask. One
prompt kind per image, since prompts decoded together share their kinds.
"""

import copy
from typing import Any, Dict, List

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from .image_io import read_image_rgb
from .transforms import ResizeLongestSide

__all__ = ["SamTrainMapper", "noisy_boxes", "sample_points"]


def noisy_boxes(
    masks: np.ndarray, rng: np.random.Generator, std: float, max_px: float
) -> np.ndarray:
    """Tight boxes of masks (N, H, W) with Gaussian corner noise: (N, 4) XYXY, clipped."""
    n, h, w = masks.shape
    boxes = np.zeros((n, 4), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        boxes[i] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    sides = np.stack([bw, bh, bw, bh], axis=1)
    noise = np.clip(rng.normal(0.0, std, (n, 4)) * sides, -max_px, max_px)
    boxes = boxes + noise
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
    x0, x1 = np.minimum(boxes[:, 0], boxes[:, 2]), np.maximum(boxes[:, 0], boxes[:, 2])
    y0, y1 = np.minimum(boxes[:, 1], boxes[:, 3]), np.maximum(boxes[:, 1], boxes[:, 3])
    return np.stack([x0, y0, x1, y1], axis=1)


def sample_points(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One pixel-centre point drawn uniformly inside each mask (N, H, W): (N, 1, 2) XY."""
    points = np.zeros((masks.shape[0], 1, 2), np.float32)
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        j = rng.integers(len(xs))
        points[i, 0] = (xs[j], ys[j])
    return points


class SamTrainMapper:
    """Dataset dict -> PromptableSam training input (see module docstring)."""

    @configurable
    def __init__(
        self,
        *,
        image_size: int,
        image_format: str,
        max_masks: int = 64,
        box_prompt_prob: float = 0.5,
        box_noise_std: float = 0.1,
        box_noise_max: float = 20.0,
        random_flip: bool = True,
        seed: int = 0,
    ) -> None:
        """
        Args:
            image_size: encoder input side; images are resized to this longest side.
            image_format: channel order of the produced ``"image"`` ("RGB" or "BGR").
            max_masks: masks kept per image (the paper uses at most 64 per GPU).
            box_prompt_prob: probability that an image's prompts are boxes (else points).
            box_noise_std, box_noise_max: box corner noise (fraction of side, cap in pixels).
            random_flip: horizontal flip augmentation.
            seed: seed of the prompt sampler (each worker derives its own stream).
        """
        augs: List[T.Augmentation] = [ResizeLongestSide(image_size)]
        if random_flip:
            augs.append(T.RandomFlip(horizontal=True))
        self.augmentations = T.AugmentationList(augs)
        self.image_format = image_format
        self.max_masks = max_masks
        self.box_prompt_prob = box_prompt_prob
        self.box_noise = (box_noise_std, box_noise_max)
        self.rng = np.random.default_rng(seed)

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        t = cfg.MODEL.SAM.TRAIN
        return dict(
            image_size=cfg.MODEL.SAM.IMAGE_SIZE,
            image_format=cfg.INPUT.FORMAT,
            max_masks=t.MAX_MASKS_PER_IMAGE,
            box_prompt_prob=t.BOX_PROMPT_PROB,
            box_noise_std=t.BOX_NOISE_STD,
            box_noise_max=t.BOX_NOISE_MAX,
            random_flip=cfg.INPUT.RANDOM_FLIP == "horizontal",
            seed=cfg.SEED if cfg.SEED >= 0 else 0,
        )

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        d = copy.deepcopy(dataset_dict)
        image = read_image_rgb(d["file_name"])
        aug = T.AugInput(image)
        transforms = self.augmentations(aug)
        image = aug.image
        h, w = image.shape[:2]
        annos = [
            utils.transform_instance_annotations(a, transforms, (h, w))
            for a in d.pop("annotations", [])
            if a.get("iscrowd", 0) == 0
        ]
        instances = utils.annotations_to_instances(annos, (h, w), mask_format="bitmask")
        masks = instances.gt_masks.tensor.numpy() if len(instances) else np.zeros((0, h, w), bool)
        masks = masks[masks.reshape(len(masks), -1).any(axis=1)]
        if len(masks) > self.max_masks:
            masks = masks[np.sort(self.rng.choice(len(masks), self.max_masks, replace=False))]
        if self.image_format == "BGR":
            image = image[..., ::-1]
        d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        d["gt_masks"] = torch.as_tensor(masks)
        if self.rng.random() < self.box_prompt_prob:
            d["boxes"] = torch.as_tensor(noisy_boxes(masks, self.rng, *self.box_noise))
        else:
            d["point_coords"] = torch.as_tensor(sample_points(masks, self.rng))
            d["point_labels"] = torch.ones(len(masks), 1, dtype=torch.int32)
        return d
