"""SAM's resize: scale so the longest side equals the encoder input, rounding as SAM does."""

from typing import Tuple

import numpy as np
from detectron2.data.transforms import Augmentation, ResizeTransform
from PIL import Image

__all__ = ["ResizeLongestSide", "longest_side_shape"]


def longest_side_shape(height: int, width: int, long_side: int) -> Tuple[int, int]:
    """(h, w) after scaling the longest side to ``long_side`` (half-up rounding, like SAM)."""
    scale = long_side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


class ResizeLongestSide(Augmentation):
    """Resize so that the longest side is ``long_side`` (bilinear, PIL), keeping aspect ratio.

    Unlike ``ResizeShortestEdge(long_side, long_side)`` the output size is computed exactly as the
    official SAM transform does, so images, points and boxes land on the same pixels.
    """

    def __init__(self, long_side: int = 1024, interp: int = Image.BILINEAR) -> None:
        super().__init__()
        self.long_side = long_side
        self.interp = interp

    def get_transform(self, image: np.ndarray) -> ResizeTransform:
        h, w = image.shape[:2]
        new_h, new_w = longest_side_shape(h, w, self.long_side)
        return ResizeTransform(h, w, new_h, new_w, self.interp)
