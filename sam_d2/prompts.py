"""Validation of SAM prompts: shapes, label values and coordinate ranges, with clear errors."""

from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ["check_prompts", "PromptError"]


class PromptError(ValueError):
    """A prompt has the wrong shape, an unknown label, or lies outside the image."""


def _check_range(name: str, xy: Tensor, image_hw: Tuple[int, int]) -> None:
    """xy (..., 2) must be finite and inside [0, W] x [0, H]."""
    if not torch.isfinite(xy).all():
        raise PromptError(f"{name} contain NaN or infinite values")
    h, w = image_hw
    out = (xy[..., 0] < 0) | (xy[..., 0] > w) | (xy[..., 1] < 0) | (xy[..., 1] > h)
    if out.any():
        idx = tuple(int(i) for i in out.nonzero()[0])
        raise PromptError(
            f"{name}{list(idx)} = {xy[idx].tolist()} lies outside the image (x in [0, {w}], "
            f"y in [0, {h}] in the resized input frame)"
        )


def check_prompts(
    point_coords: Optional[Tensor],
    point_labels: Optional[Tensor],
    boxes: Optional[Tensor],
    mask_inputs: Optional[Tensor],
    image_hw: Tuple[int, int],
    mask_input_hw: Tuple[int, int],
) -> int:
    """Check one set of prompts in the resized input frame and return the prompt count N.

    Args:
        point_coords: (N, P, 2) XY pixels; point_labels: (N, P) in {-1, 0, 1}.
        boxes: (N, 4) XYXY pixels with x0 <= x1 and y0 <= y1.
        mask_inputs: (N, 1, *mask_input_hw) logits.
        image_hw: (h, w) of the resized image the coordinates refer to.
        mask_input_hw: expected spatial size of mask prompts.

    Raises:
        PromptError: naming the offending prompt and what is wrong with it.
    """
    counts = {}
    if point_coords is None and point_labels is not None:
        raise PromptError("point_labels were given without point_coords")
    if point_coords is not None:
        if point_labels is None:
            raise PromptError("point_coords were given without point_labels")
        if point_coords.dim() != 3 or point_coords.shape[-1] != 2:
            raise PromptError(f"point_coords must be (N, P, 2), got {tuple(point_coords.shape)}")
        if tuple(point_labels.shape) != tuple(point_coords.shape[:2]):
            raise PromptError(
                f"point_labels must be (N, P) = {tuple(point_coords.shape[:2])} to match "
                f"point_coords, got {tuple(point_labels.shape)}"
            )
        bad = ~((point_labels == -1) | (point_labels == 0) | (point_labels == 1))
        if bad.any():
            raise PromptError(
                f"point_labels must be 1 (foreground), 0 (background) or -1 (padding); "
                f"found {sorted(set(point_labels[bad].tolist()))}"
            )
        _check_range("point_coords", point_coords, image_hw)
        counts["point_coords"] = point_coords.shape[0]
    if boxes is not None:
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise PromptError(f"boxes must be (N, 4) XYXY, got {tuple(boxes.shape)}")
        _check_range("boxes", boxes.reshape(-1, 2, 2), image_hw)
        flipped = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if flipped.any():
            i = int(flipped.nonzero()[0])
            raise PromptError(f"boxes[{i}] = {boxes[i].tolist()} is not XYXY (x0<=x1, y0<=y1)")
        counts["boxes"] = boxes.shape[0]
    if mask_inputs is not None:
        want = (1,) + tuple(mask_input_hw)
        if mask_inputs.dim() != 4 or tuple(mask_inputs.shape[1:]) != want:
            raise PromptError(
                f"mask_inputs must be (N, {', '.join(map(str, want))}), "
                f"got {tuple(mask_inputs.shape)}"
            )
        counts["mask_inputs"] = mask_inputs.shape[0]
    if not counts:
        raise PromptError("no prompt given: pass point_coords + point_labels, boxes or mask_inputs")
    if len(set(counts.values())) > 1:
        raise PromptError(f"prompt kinds disagree on the number of prompts N: {counts}")
    return next(iter(counts.values()))
