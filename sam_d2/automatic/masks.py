"""Batched mask measurements and filters of the automatic generator, plus the small-region clean-up.

Everything except :func:`remove_small_regions` / :func:`clean_mask` works on whole batches of
masks on the model's device. Boxes are SAM's: integer XYXY where (x1, y1) is the last pixel
*inside* the mask (inclusive), and an empty mask has the box [0, 0, 0, 0].
"""

from typing import Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = [
    "stability_score",
    "masks_to_boxes",
    "near_crop_edge",
    "covers_image",
    "remove_small_regions",
    "clean_mask",
]


def stability_score(logits: Tensor, mask_threshold: float, offset: float) -> Tensor:
    """IoU between the masks thresholded at ``mask_threshold + offset`` and ``- offset``.

    The high-threshold mask lies inside the low-threshold one, so the IoU is the ratio of their
    areas. An all-background low mask gives 0/0 = NaN (it fails every threshold).

    Args:
        logits: (N, H, W) mask logits.
        mask_threshold: logit threshold of the binary mask.
        offset: shift of the threshold in both directions.

    Returns:
        (N,) float32 scores.
    """
    flat = logits.flatten(1)
    inner = (flat > (mask_threshold + offset)).sum(1, dtype=torch.int32)
    outer = (flat > (mask_threshold - offset)).sum(1, dtype=torch.int32)
    return inner.float() / outer.float()


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight inclusive boxes of binary masks.

    Args:
        masks: (..., H, W) bool.

    Returns:
        (..., 4) int64 [x0, y0, x1, y1] with (x1, y1) the last covered column / row;
        [0, 0, 0, 0] for empty masks.
    """
    h, w = masks.shape[-2:]
    lead = masks.shape[:-2]
    if masks.numel() == 0:
        return torch.zeros(*lead, 4, dtype=torch.int64, device=masks.device)
    flat = masks.reshape(-1, h, w)
    rows = flat.any(dim=2)  # (N, H): row holds a mask pixel
    cols = flat.any(dim=1)  # (N, W)
    y_idx = torch.arange(h, device=masks.device)
    x_idx = torch.arange(w, device=masks.device)
    # first / last occupied index: min over occupied indexes, max over occupied indexes
    y0 = torch.where(rows, y_idx, h).amin(dim=1)
    y1 = torch.where(rows, y_idx, -1).amax(dim=1)
    x0 = torch.where(cols, x_idx, w).amin(dim=1)
    x1 = torch.where(cols, x_idx, -1).amax(dim=1)
    boxes = torch.stack([x0, y0, x1, y1], dim=1)
    boxes = torch.where(rows.any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))
    return boxes.reshape(*lead, 4)


def near_crop_edge(
    boxes: Tensor, crop_box: Sequence[int], image_box: Sequence[int], tolerance: float = 20.0
) -> Tensor:
    """Which boxes come within ``tolerance`` pixels of a crop border that is not an image border.

    Such masks are probably cut by the crop and are dropped; a crop border that coincides with
    the image border does not count.

    Args:
        boxes: (N, 4) XYXY boxes in the image frame.
        crop_box: [x0, y0, x1, y1] of the crop in the image frame.
        image_box: [0, 0, W, H] of the image.
        tolerance: distance in pixels.

    Returns:
        (N,) bool.
    """
    b = boxes.float()
    crop = torch.as_tensor(crop_box, dtype=torch.float32, device=boxes.device)
    image = torch.as_tensor(image_box, dtype=torch.float32, device=boxes.device)
    at_crop = (b - crop).abs() <= tolerance
    at_image = (b - image).abs() <= tolerance
    return (at_crop & ~at_image).any(dim=1)


def covers_image(areas: Tensor, image_area: int, max_ratio: Optional[float]) -> Tensor:
    """(N,) bool: masks whose area is at least ``max_ratio`` of the image (False if disabled)."""
    if max_ratio is None or max_ratio <= 0:
        return torch.zeros_like(areas, dtype=torch.bool)
    return areas.double() >= max_ratio * float(image_area)


def remove_small_regions(mask: np.ndarray, min_area: float, mode: str) -> Tuple[np.ndarray, bool]:
    """Fill small holes or delete small islands of one binary mask (8-connectivity).

    Args:
        mask: (H, W) bool.
        min_area: regions with fewer pixels are changed.
        mode: "holes" fills background components smaller than ``min_area`` (a background
            component touching the image border counts too); "islands" deletes foreground
            components smaller than ``min_area``, keeping the largest one if all are small.

    Returns:
        the new mask and whether any region was below ``min_area`` (as in SAM, the flag is set
        even when the only island is kept because it is the largest).
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    mask = np.asarray(mask, dtype=bool)
    target = ~mask if mode == "holes" else mask
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(target.astype(np.uint8), 8)
    sizes = stats[1:, cv2.CC_STAT_AREA]  # label 0 is everything outside ``target``
    small = sizes < min_area
    if not small.any():
        return mask, False
    on = np.zeros(n_labels, dtype=bool)  # new mask value of every label
    if mode == "holes":
        on[0] = True  # the mask itself
        on[1:] = small  # small background components become foreground
    else:
        on[1:] = ~small
        if not on.any():
            on[1 + int(np.argmax(sizes))] = True
    return on[labels], True


def clean_mask(mask: np.ndarray, min_area: float) -> Tuple[np.ndarray, bool]:
    """Fill holes, then delete islands, smaller than ``min_area``; returns (mask, changed)."""
    mask, filled = remove_small_regions(mask, min_area, "holes")
    mask, removed = remove_small_regions(mask, min_area, "islands")
    return mask, filled or removed
