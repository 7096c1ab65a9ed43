"""SAM's resize: scale so the longest side equals the encoder input, rounding as SAM does.

:class:`ResizeLongestSide` is both a Detectron2 ``Augmentation`` (for mappers) and a drop-in for
``segment_anything.utils.transforms.ResizeLongestSide`` (``apply_image``, ``apply_coords``,
``apply_boxes`` and their ``*_torch`` twins, ``get_preprocess_shape``, ``target_length``), so
``SamPredictor.transform`` supports the official recipes unchanged.
"""

from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data.transforms import Augmentation, ResizeTransform
from PIL import Image
from torch import Tensor

__all__ = ["ResizeLongestSide", "longest_side_shape"]


def longest_side_shape(height: int, width: int, long_side: int) -> Tuple[int, int]:
    """(h, w) after scaling the longest side to ``long_side`` (half-up rounding, like SAM).

    A side that would round to 0 pixels (e.g. a 1 x 5000 image) is kept at 1 pixel; the official
    package returns 0 there and then fails on the empty image.
    """
    if min(height, width) < 1:
        raise ValueError(f"cannot resize an empty image of height {height}, width {width}")
    scale = long_side * 1.0 / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def _original_hw(original_size: Sequence[int]) -> Tuple[int, int]:
    """Validate an (H, W) ``original_size`` argument."""
    if len(original_size) != 2 or min(original_size) < 1:
        raise ValueError(f"original_size must be (H, W) of the image, got {tuple(original_size)}")
    return int(original_size[0]), int(original_size[1])


class ResizeLongestSide(Augmentation):
    """Resize so that the longest side is ``long_side`` (bilinear, PIL), keeping aspect ratio.

    Unlike ``ResizeShortestEdge(long_side, long_side)`` the output size is computed exactly as the
    official SAM transform does, so images, points and boxes land on the same pixels.
    """

    def __init__(self, long_side: int = 1024, interp: int = Image.BILINEAR) -> None:
        super().__init__()
        self.long_side = long_side
        self.interp = interp

    @property
    def target_length(self) -> int:
        """The official transform's name for ``long_side``."""
        return self.long_side

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> Tuple[int, int]:
        """(h, w) after resizing (oldh, oldw): the official name of :func:`longest_side_shape`."""
        return longest_side_shape(oldh, oldw, long_side_length)

    def get_transform(self, image: np.ndarray) -> ResizeTransform:
        h, w = image.shape[:2]
        new_h, new_w = longest_side_shape(h, w, self.long_side)
        return ResizeTransform(h, w, new_h, new_w, self.interp)

    # ------------------------------------------------- the official transform's methods
    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) uint8 image -> (h, w, C) uint8, longest side ``long_side``."""
        return np.array(self.get_transform(image).apply_image(image))  # writable, as official

    def _scale(self, original_size: Sequence[int]) -> Tuple[float, float]:
        """(x, y) factors from the original frame to the resized one."""
        old_h, old_w = _original_hw(original_size)
        new_h, new_w = longest_side_shape(old_h, old_w, self.long_side)
        return new_w / old_w, new_h / old_h

    def apply_coords(self, coords: np.ndarray, original_size: Sequence[int]) -> np.ndarray:
        """(..., 2) XY pixels of an (H, W) = ``original_size`` image -> float64 resized frame."""
        coords = np.array(coords, dtype=np.float64)  # a copy, as the official method makes
        if coords.ndim == 0 or coords.shape[-1] != 2:
            raise ValueError(f"coords must be (..., 2) XY, got shape {coords.shape}")
        sx, sy = self._scale(original_size)
        coords[..., 0] *= sx
        coords[..., 1] *= sy
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: Sequence[int]) -> np.ndarray:
        """(B, 4) or (4,) XYXY boxes -> (B, 4) float64 in the resized frame."""
        boxes = np.asarray(boxes)
        if boxes.size % 4:
            raise ValueError(f"boxes must be (B, 4) XYXY, got shape {boxes.shape}")
        return self.apply_coords(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_image_torch(self, image: Tensor) -> Tensor:
        """(B, C, H, W) float images -> (B, C, h, w), bilinear with antialiasing.

        Like the official method this may differ slightly from :meth:`apply_image` (PIL), which is
        what the model expects. The official method reads the target size from the batch and
        channel dimensions; this one uses (H, W).
        """
        if image.dim() != 4:
            raise ValueError(f"apply_image_torch expects (B, C, H, W), got {tuple(image.shape)}")
        size = longest_side_shape(image.shape[2], image.shape[3], self.long_side)
        return F.interpolate(image, size, mode="bilinear", align_corners=False, antialias=True)

    def apply_coords_torch(self, coords: Tensor, original_size: Sequence[int]) -> Tensor:
        """(..., 2) XY pixels -> float32 resized frame (same device)."""
        if coords.dim() == 0 or coords.shape[-1] != 2:
            raise ValueError(f"coords must be (..., 2) XY, got shape {tuple(coords.shape)}")
        sx, sy = self._scale(original_size)
        coords = coords.to(torch.float, copy=True)
        coords[..., 0] *= sx
        coords[..., 1] *= sy
        return coords

    def apply_boxes_torch(self, boxes: Tensor, original_size: Sequence[int]) -> Tensor:
        """(B, 4) XYXY boxes -> (B, 4) float32 in the resized frame."""
        if boxes.numel() % 4:
            raise ValueError(f"boxes must be (B, 4) XYXY, got shape {tuple(boxes.shape)}")
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)
