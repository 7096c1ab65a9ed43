"""Where the automatic generator looks: point-prompt grids and the crop windows of each layer.

Layer 0 is the whole image. Layer ``k >= 1`` tiles the image with ``2**k x 2**k`` overlapping
windows; neighbouring windows of layer 1 overlap by ``overlap_ratio`` times the image's short
side, and deeper layers scale that overlap by ``2 / 2**k``. Each layer has its own point grid
(normalised to [0, 1]) whose side is ``points_per_side // downscale**k``; the grid is scaled to
each window of its layer. The arithmetic (integer truncation, rounding up of window lengths,
window order: x outer, y inner) is SAM's, so the windows and points land on the same pixels.
"""

import math
from typing import List, Sequence, Tuple

import numpy as np

__all__ = ["point_grid", "layer_point_grids", "crop_boxes", "scale_grid_to_crop"]


def point_grid(points_per_side: int) -> np.ndarray:
    """Regular grid of cell centres in the unit square.

    Args:
        points_per_side: number of points along each side (n).

    Returns:
        (n * n, 2) float64 array of (x, y) in (0, 1); x varies fastest (row-major over y).
    """
    n = int(points_per_side)
    if n < 1:
        raise ValueError(f"points_per_side must be >= 1, got {points_per_side}")
    half_cell = 1.0 / (2 * n)
    centres = np.linspace(half_cell, 1.0 - half_cell, n)
    xs, ys = np.meshgrid(centres, centres)  # xs[i, j] = centres[j], ys[i, j] = centres[i]
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def layer_point_grids(
    points_per_side: int, crop_n_layers: int, downscale_factor: int = 1
) -> List[np.ndarray]:
    """One normalised point grid per crop layer (layer k has ``n // downscale**k`` per side).

    Args:
        points_per_side: points per side on layer 0 (the whole image).
        crop_n_layers: number of crop layers after layer 0.
        downscale_factor: per-layer division of the points per side.

    Returns:
        ``crop_n_layers + 1`` arrays of shape (m_k * m_k, 2).
    """
    if crop_n_layers < 0:
        raise ValueError(f"crop_n_layers must be >= 0, got {crop_n_layers}")
    if downscale_factor < 1:
        raise ValueError(f"crop_n_points_downscale_factor must be >= 1, got {downscale_factor}")
    grids = []
    for layer in range(crop_n_layers + 1):
        side = int(points_per_side / (downscale_factor**layer))
        if side < 1:
            raise ValueError(
                f"crop layer {layer} would have {points_per_side}/{downscale_factor}**{layer} < 1 "
                "points per side; lower crop_n_layers or crop_n_points_downscale_factor"
            )
        grids.append(point_grid(side))
    return grids


def crop_boxes(
    image_hw: Sequence[int], crop_n_layers: int, overlap_ratio: float
) -> Tuple[List[List[int]], List[int]]:
    """Crop windows of every layer, whole image first.

    Args:
        image_hw: (H, W) of the image.
        crop_n_layers: number of crop layers after the whole image.
        overlap_ratio: overlap of neighbouring layer-1 windows, as a fraction of the short side.

    Returns:
        boxes: ``1 + sum_k 4**k`` windows as [x0, y0, x1, y1] integer pixel boxes (x1, y1
            exclusive), and layers: the layer index of each window.
    """
    height, width = int(image_hw[0]), int(image_hw[1])
    boxes: List[List[int]] = [[0, 0, width, height]]
    layers: List[int] = [0]
    short_side = min(height, width)
    for layer in range(1, crop_n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = _window_length(width, per_side, overlap)
        crop_h = _window_length(height, per_side, overlap)
        starts_x = [(crop_w - overlap) * i for i in range(per_side)]
        starts_y = [(crop_h - overlap) * j for j in range(per_side)]
        for x0 in starts_x:
            for y0 in starts_y:
                boxes.append([x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height)])
                layers.append(layer)
    return boxes, layers


def _window_length(length: int, count: int, overlap: int) -> int:
    """Length of ``count`` equal windows covering ``length`` with ``overlap`` between neighbours."""
    return int(math.ceil((length + overlap * (count - 1)) / count))


def scale_grid_to_crop(grid: np.ndarray, crop_box: Sequence[int]) -> np.ndarray:
    """Normalised (P, 2) grid -> (P, 2) float64 pixel (x, y) in the crop's own frame."""
    x0, y0, x1, y1 = crop_box
    return grid * np.array([[x1 - x0, y1 - y0]], dtype=np.float64)
