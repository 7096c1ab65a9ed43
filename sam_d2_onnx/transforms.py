"""SAM's longest-side resize in numpy + Pillow (no torch), identical to sam_d2's and the official.

The output size rounds half up exactly as ``segment_anything``'s ``ResizeLongestSide``; the image is
resized by Pillow's bilinear filter, the same call sam_d2's Detectron2 transform makes, so the
encoder sees bit-identical pixels on either route.
"""

from typing import Tuple

import numpy as np
from PIL import Image

__all__ = ["ResizeLongestSide", "as_rgb_uint8"]


class ResizeLongestSide:
    """Scale images, points and boxes so that the image's longest side equals ``target_length``.

    The interface is the official one (``segment_anything.utils.transforms.ResizeLongestSide``):
    coordinates are converted from an image of ``original_size`` (H, W) to the resized frame.
    """

    def __init__(self, target_length: int) -> None:
        if target_length < 1:
            raise ValueError(f"target_length must be positive, got {target_length}")
        self.target_length = int(target_length)

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> Tuple[int, int]:
        """(h, w) after scaling the longest side of (oldh, oldw) to ``long_side_length``."""
        scale = long_side_length * 1.0 / max(oldh, oldw)
        return int(oldh * scale + 0.5), int(oldw * scale + 0.5)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (h, w, 3) uint8 with max(h, w) == ``target_length``."""
        h, w = self.get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))

    def apply_coords(self, coords: np.ndarray, original_size: Tuple[int, int]) -> np.ndarray:
        """(..., 2) XY pixels in an image of ``original_size`` -> the resized frame (float64)."""
        old_h, old_w = original_size
        new_h, new_w = self.get_preprocess_shape(old_h, old_w, self.target_length)
        out = np.array(coords, dtype=np.float64, copy=True)
        out[..., 0] *= new_w / old_w
        out[..., 1] *= new_h / old_h
        return out

    def apply_boxes(self, boxes: np.ndarray, original_size: Tuple[int, int]) -> np.ndarray:
        """(..., 4) XYXY boxes -> the resized frame (float64), corners scaled as points."""
        boxes = np.asarray(boxes, dtype=np.float64)
        return self.apply_coords(boxes.reshape(-1, 2, 2), original_size).reshape(boxes.shape)


def as_rgb_uint8(image: np.ndarray, image_format: str = "RGB") -> np.ndarray:
    """Validate an image and return it as a contiguous (H, W, 3) uint8 RGB array.

    Grayscale (H, W) or (H, W, 1) is replicated to three channels; an alpha channel is dropped.

    Raises:
        ValueError: naming the wrong format, shape or dtype.
    """
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype} (scale it to [0, 255] first)")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = image[..., :3]
    return np.ascontiguousarray(image[..., ::-1] if image_format == "BGR" else image)
