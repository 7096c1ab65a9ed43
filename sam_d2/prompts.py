"""Validation of SAM prompts: shapes, label values and coordinate ranges, with clear errors.

Messages quote the offending values in the frame the caller gave them in (``frame``): the
original image for ``SamPredictor.predict``, the resized input image for ``predict_torch`` and
the meta-architectures.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ["check_prompts", "PromptError"]

INPUT_FRAME = "resized input image"


class PromptError(ValueError):
    """A prompt has the wrong shape, an unknown label, or lies outside the image."""


def _fmt(values: Tensor) -> str:
    """'(x, y, ...)' with the caller's numbers (float32 noise rounded away)."""
    return "(" + ", ".join(repr(round(float(v), 4)) for v in values.reshape(-1)) + ")"


def _where(kind: str, index: Tuple[int, ...], n_prompts: int) -> str:
    """'point 3' for a single prompt, 'point 3 of prompt 1' (or 'box 1') in a batch."""
    if kind == "box":
        return f"box {index[0]}"
    return f"point {index[1]}" if n_prompts == 1 else f"point {index[1]} of prompt {index[0]}"


def _check_range(kind: str, xy: Tensor, image_hw: Tuple[int, int], frame: str) -> None:
    """xy (N, K, 2) must be finite and inside [0, W] x [0, H]; kind "box": K = 2 corners."""
    h, w = image_hw
    x, y = xy[..., 0], xy[..., 1]
    checks = (
        (~torch.isfinite(xy).all(dim=-1), "contains NaN or infinity"),
        (
            (x < 0) | (x > w) | (y < 0) | (y > h),
            f"lies outside the {frame} of width {w}, height {h}",
        ),
    )
    for bad, problem in checks:
        if kind == "box":
            bad = bad.any(dim=1, keepdim=True)
        if bad.any():
            idx = tuple(int(i) for i in bad.nonzero()[0])
            value = xy[idx[0]] if kind == "box" else xy[idx]
            raise PromptError(f"{_where(kind, idx, xy.shape[0])} {_fmt(value)} {problem}")


def check_prompts(
    point_coords: Optional[Tensor],
    point_labels: Optional[Tensor],
    boxes: Optional[Tensor],
    mask_inputs: Optional[Tensor],
    image_hw: Tuple[int, int],
    mask_input_hw: Tuple[int, int],
    frame: str = INPUT_FRAME,
) -> int:
    """Check one set of prompts and return the prompt count N.

    Args:
        point_coords: (N, P, 2) XY pixels; point_labels: (N, P) in {-1, 0, 1} (any dtype:
            a float label such as 0.5 is rejected, not truncated).
        boxes: (N, 4) XYXY pixels with x0 <= x1 and y0 <= y1.
        mask_inputs: (N, 1, *mask_input_hw) logits.
        image_hw: (h, w) of the image the coordinates refer to.
        mask_input_hw: expected spatial size of mask prompts.
        frame: how messages name that image, e.g. "image" or "resized input image".

    Raises:
        PromptError: naming the offending prompt, its values in the caller's frame, and what is
            wrong with it.
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
            found = sorted(set(point_labels[bad].tolist()))
            raise PromptError(
                f"point_labels must be 1 (foreground), 0 (background) or -1 (padding); "
                f"found {found}"
            )
        _check_range("point", point_coords, image_hw, frame)
        counts["point_coords"] = point_coords.shape[0]
    if boxes is not None:
        if boxes.dim() != 2 or boxes.shape[-1] != 4:
            raise PromptError(f"boxes must be (N, 4) XYXY, got {tuple(boxes.shape)}")
        _check_range("box", boxes.reshape(-1, 2, 2), image_hw, frame)
        flipped = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
        if flipped.any():
            i = int(flipped.nonzero()[0])
            raise PromptError(f"box {i} {_fmt(boxes[i])} is not XYXY (needs x0 <= x1 and y0 <= y1)")
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
