"""The resizes into SAM's encoder frame: SAM's longest side (padded) and SAM 2's stretch.

Two frame conventions exist in the SAM family (``Sam.frame``):

- ``"pad"`` (SAM, MobileSAM, HQ-SAM): :class:`ResizeLongestSide` scales the longest side to the
  encoder input S (bilinear, PIL, uint8, rounding the size as SAM does); the model zero-pads the
  bottom/right to S x S.
- ``"stretch"`` (SAM 2): :class:`StretchToSquare` resizes every image to S x S, aspect not kept
  (bilinear with antialiasing on the float image, not rounded to uint8, as ``sam2``'s
  ``SAM2Transforms`` does); coordinates scale by (S / W, S / H).

Both are Detectron2 ``Augmentation`` s (for mappers) and drop-ins for
``segment_anything.utils.transforms.ResizeLongestSide`` (``apply_image``, ``apply_coords``,
``apply_boxes`` and their ``*_torch`` twins, ``get_preprocess_shape``, ``target_length``), so
``SamPredictor.transform`` supports the official recipes unchanged. :func:`frame_transform` picks
the one of a frame.
"""

from typing import Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data.transforms import Augmentation, ResizeTransform
from PIL import Image
from torch import Tensor

__all__ = [
    "FRAMES",
    "ResizeLongestSide",
    "StretchToSquare",
    "StretchTransform",
    "frame_input_size",
    "frame_transform",
    "longest_side_shape",
    "variant_frame",
]

#: The frame conventions of the SAM family (module docstring).
FRAMES = ("pad", "stretch")


def variant_frame(variant: str) -> str:
    """The frame of a ``MODEL.SAM.VARIANT``, for mappers that have only the config: "stretch" for
    SAM 2's variants (named ``sam2*``), "pad" for every other. The built model says the same
    (``Sam.frame``, from its encoder; ``FAMILY_VARIANTS[variant].frame``; tested to agree)."""
    return "stretch" if variant.startswith("sam2") else "pad"


def longest_side_shape(height: int, width: int, long_side: int) -> Tuple[int, int]:
    """(h, w) after scaling the longest side to ``long_side`` (half-up rounding, like SAM).

    A side that would round to 0 pixels (e.g. a 1 x 5000 image) is kept at 1 pixel; the official
    package returns 0 there and then fails on the empty image.
    """
    if min(height, width) < 1:
        raise ValueError(f"cannot resize an empty image of height {height}, width {width}")
    scale = long_side * 1.0 / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def _check_frame(frame: str) -> str:
    if frame not in FRAMES:
        raise ValueError(f"unknown frame {frame!r}; expected one of {FRAMES}")
    return frame


def frame_input_size(frame: str, height: int, width: int, size: int) -> Tuple[int, int]:
    """(h, w) of an (height, width) image in the encoder frame of side ``size``, before padding:
    the longest side scaled to ``size`` ("pad"), or (size, size) ("stretch")."""
    if _check_frame(frame) == "pad":
        return longest_side_shape(height, width, size)
    if min(height, width) < 1:
        raise ValueError(f"cannot resize an empty image of height {height}, width {width}")
    return size, size


def _original_hw(original_size: Sequence[int]) -> Tuple[int, int]:
    """Validate an (H, W) ``original_size`` argument."""
    if len(original_size) != 2 or min(original_size) < 1:
        raise ValueError(f"original_size must be (H, W) of the image, got {tuple(original_size)}")
    return int(original_size[0]), int(original_size[1])


class _FrameResize(Augmentation):
    """The official transform's API for a resize of side ``target_length`` in one ``frame``;
    subclasses give the image resize (``get_transform``, ``apply_image_torch``)."""

    frame: str

    def __init__(self, target_length: int) -> None:
        super().__init__()
        if int(target_length) < 1:
            raise ValueError(f"target_length must be positive, got {target_length}")
        self._side = int(target_length)

    @property
    def target_length(self) -> int:
        """Side of the square encoder input."""
        return self._side

    def output_shape(self, height: int, width: int) -> Tuple[int, int]:
        """(h, w) of an (height, width) image after this resize."""
        return frame_input_size(self.frame, height, width, self._side)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) image -> (h, w, C) in the encoder frame (a writable array, as official)."""
        return np.array(self.get_transform(image).apply_image(image))

    def _scale(self, original_size: Sequence[int]) -> Tuple[float, float]:
        """(x, y) factors from the original frame to the resized one."""
        old_h, old_w = _original_hw(original_size)
        new_h, new_w = self.output_shape(old_h, old_w)
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

        For the pad frame this may differ slightly from :meth:`apply_image` (PIL, uint8), which
        is what SAM expects, as in the official method; for the stretch frame both are the same
        resize. The official method reads the target size from the batch and channel
        dimensions; this one uses (H, W).
        """
        if image.dim() != 4:
            raise ValueError(f"apply_image_torch expects (B, C, H, W), got {tuple(image.shape)}")
        size = self.output_shape(image.shape[2], image.shape[3])
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


class ResizeLongestSide(_FrameResize):
    """Resize so that the longest side is ``long_side`` (bilinear, PIL), keeping aspect ratio.

    Unlike ``ResizeShortestEdge(long_side, long_side)`` the output size is computed exactly as the
    official SAM transform does, so images, points and boxes land on the same pixels.
    """

    frame = "pad"

    def __init__(self, long_side: int = 1024, interp: int = Image.BILINEAR) -> None:
        super().__init__(long_side)
        self.long_side = long_side
        self.interp = interp

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> Tuple[int, int]:
        """(h, w) after resizing (oldh, oldw): the official name of :func:`longest_side_shape`."""
        return longest_side_shape(oldh, oldw, long_side_length)

    def get_transform(self, image: np.ndarray) -> ResizeTransform:
        h, w = image.shape[:2]
        new_h, new_w = longest_side_shape(h, w, self.long_side)
        return ResizeTransform(h, w, new_h, new_w, self.interp)


class StretchTransform(ResizeTransform):
    """Detectron2 resize whose image resize is SAM 2's: bilinear with antialiasing on the float
    image, output float32 (not rounded). Coordinates, polygons and segmentations (nearest) as
    ``ResizeTransform``."""

    def apply_image(self, img: np.ndarray) -> np.ndarray:
        """(H, W, C) or (H, W) image, any dtype -> (new_h, new_w[, C]) float32, same value range."""
        if img.shape[:2] != (self.h, self.w):
            raise ValueError(f"image of size {img.shape[:2]}, expected {(self.h, self.w)}")
        x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
        x = x[None, None] if x.dim() == 2 else x.permute(2, 0, 1)[None]
        x = F.interpolate(
            x, (self.new_h, self.new_w), mode="bilinear", align_corners=False, antialias=True
        )
        return x[0, 0].numpy() if img.ndim == 2 else x[0].permute(1, 2, 0).numpy()

    def apply_segmentation(self, segmentation: np.ndarray) -> np.ndarray:
        """(H, W) label map -> (new_h, new_w), nearest neighbour (PIL), dtype kept."""
        return super().apply_image(segmentation, interp=Image.NEAREST)


class StretchToSquare(_FrameResize):
    """SAM 2's resize: every image to ``size`` x ``size``, aspect not kept (module docstring)."""

    frame = "stretch"

    def __init__(self, size: int = 1024) -> None:
        super().__init__(size)
        self.size = size

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> Tuple[int, int]:
        """(h, w) after resizing (oldh, oldw): (long_side_length, long_side_length)."""
        return frame_input_size("stretch", oldh, oldw, long_side_length)

    def get_transform(self, image: np.ndarray) -> StretchTransform:
        h, w = image.shape[:2]
        return StretchTransform(h, w, self.size, self.size)


def frame_transform(frame: str, size: int) -> Union[ResizeLongestSide, StretchToSquare]:
    """The resize into the encoder frame ``frame`` ("pad" or "stretch") of side ``size``."""
    return ResizeLongestSide(size) if _check_frame(frame) == "pad" else StretchToSquare(size)
