"""Simulated clicks of the single-point valid-mask benchmark (SAM paper §7.1, appendix D.1).

Pure numpy/scipy; every function works on a batch of N objects of one image, masks (N, H, W)
bool at the image's original resolution. Points are returned as integer pixel indices, XY order
(``x`` = column, ``y`` = row), in that original frame.

The protocol, exactly (it is RITM's evaluation clicker, Sofiiuk et al. 2022,
``isegm/inference/clicker.py``, which the SAM paper follows):

* **Distance to the boundary.** For a region ``R`` (bool mask), ``d(p)`` is the Euclidean
  distance from pixel ``p`` in ``R`` to the nearest pixel *not* in ``R``, where the image is
  surrounded by a one-pixel ring of background: pixels outside the image count as "not in R", so
  the image border is a boundary (a region touching the border is not infinitely deep there).
  ``d`` is the exact Euclidean distance transform of the zero-padded region, 0 outside ``R``;
  the smallest value inside a non-empty region is 1. By default it is computed with RITM's call,
  ``cv2.distanceTransform(padded, DIST_L2, DIST_MASK_PRECISE)`` (~3x faster than scipy), whose
  float32 output carries ~1 ulp of position-dependent error; it is snapped to the exact value
  ``sqrt(round(d**2))`` (squared distances are integers), so exact ties stay ties and the result
  equals ``method="scipy"`` (``scipy.ndimage.distance_transform_edt``, float64) bit for bit as
  long as distances stay below ~1400 px (regions under ~2800 px wide or high; the rounding
  could be off by one squared pixel beyond). The tests check both engines on real masks.
* **Farthest point.** The pixel of maximal ``d``; ties go to the first pixel in raster order
  (smallest row, then smallest column), like ``np.where(dt == dt.max())[0]`` in RITM.
  Already-clicked pixels of the object are excluded (their ``d`` is set to 0, RITM's
  ``not_clicked_map``) when ``clicked`` is given.
* **First point** (``"center"``, the default): the farthest point of the GT mask. It is the
  next-click rule below applied to an empty prediction (the whole object is false negative).
  Variant ``"random"``: a pixel of the GT mask drawn uniformly with a per-object seed
  (:func:`random_points`).
* **Next point**: with ``FN = GT & ~pred`` (missed) and ``FP = ~GT & pred`` (spurious), take the
  farthest point of each; the click goes to the region whose maximal ``d`` is larger: a
  foreground click (label 1) in FN if ``max d_FN > max d_FP``, otherwise a background click
  (label 0) in FP (ties go to FP, as in RITM's ``is_positive = fn_max_dist > fp_max_dist``).
  When both regions are empty (the prediction is perfect) or only already-clicked pixels remain,
  no click is made (``valid`` False); the evaluator then keeps that object's prediction.

Distance transforms are computed on the bounding box of the region plus the one-pixel ring, which
gives exactly the full-image padded transform: outside the box the region is empty, so the ring
is background either way.
"""

import zlib
from typing import Any, NamedTuple, Optional, Sequence, Tuple

import cv2
import numpy as np
from scipy.ndimage import distance_transform_edt

__all__ = [
    "Clicks",
    "padded_distance_transform",
    "farthest_point",
    "center_points",
    "random_points",
    "next_clicks",
    "object_seed",
    "DISTANCE_METHODS",
]

#: Engines of the distance transform: "cv2" (RITM's, default) or "scipy" (float64 reference).
DISTANCE_METHODS = ("cv2", "scipy")


class Clicks(NamedTuple):
    """One click per object.

    Attributes:
        coords: (N, 2) int64 XY pixel indices in the original image frame (0 where not valid).
        labels: (N,) int64: 1 foreground, 0 background, -1 no click.
        valid: (N,) bool: a click was made.
        distance: (N,) float64 boundary distance ``d`` of the clicked pixel (0 where not valid).
    """

    coords: np.ndarray
    labels: np.ndarray
    valid: np.ndarray
    distance: np.ndarray


def _bbox(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) inclusive bounds of a 2-D bool mask, or None if it is empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _crop_distance(
    mask: np.ndarray, box: Tuple[int, int, int, int], method: str = "cv2"
) -> np.ndarray:
    """Padded distance transform of ``mask`` restricted to ``box`` (see module docstring)."""
    y0, y1, x0, x1 = box
    crop = np.zeros((y1 - y0 + 3, x1 - x0 + 3), dtype=bool)  # one-pixel background ring
    crop[1:-1, 1:-1] = mask[y0 : y1 + 1, x0 : x1 + 1]
    if method == "cv2":
        dist = cv2.distanceTransform(crop.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        dist = np.sqrt(np.rint(np.square(dist, dtype=np.float64)))  # exact: d**2 is an integer
    elif method == "scipy":
        dist = distance_transform_edt(crop)
    else:
        raise ValueError(f"method must be one of {DISTANCE_METHODS}, got {method!r}")
    return dist[1:-1, 1:-1]


def padded_distance_transform(mask: np.ndarray, method: str = "cv2") -> np.ndarray:
    """Distance of every pixel of a region to its boundary, the image border counting as boundary.

    Args:
        mask: (H, W) bool region.
        method: "cv2" or "scipy" (module docstring).

    Returns:
        (H, W) float64: Euclidean distance to the nearest pixel outside the region or outside
        the image (>= 1 inside the region, 0 outside).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    out = np.zeros(mask.shape, dtype=np.float64)
    box = _bbox(mask)
    if box is not None:
        y0, y1, x0, x1 = box
        out[y0 : y1 + 1, x0 : x1 + 1] = _crop_distance(mask, box, method)
    return out


def farthest_point(
    mask: np.ndarray, clicked: Optional[np.ndarray] = None, method: str = "cv2"
) -> Tuple[Optional[Tuple[int, int]], float]:
    """The pixel of a region farthest from its boundary (first in raster order on ties).

    Args:
        mask: (H, W) bool region.
        clicked: optional (P, 2) int XY pixels to exclude (their distance counts as 0); rows with
            negative coordinates are ignored (padding).
        method: "cv2" or "scipy" (module docstring).

    Returns:
        ((x, y), distance), or (None, 0.0) when the region is empty or only excluded pixels are
        left in it.
    """
    box = _bbox(mask)
    if box is None:
        return None, 0.0
    y0, y1, x0, x1 = box
    dist = _crop_distance(mask, box, method)
    if clicked is not None and len(clicked):
        clicked = np.asarray(clicked, dtype=np.int64).reshape(-1, 2)
        cx, cy = clicked[:, 0] - x0, clicked[:, 1] - y0
        inside = (clicked[:, 0] >= 0) & (cx >= 0) & (cx <= x1 - x0) & (cy >= 0) & (cy <= y1 - y0)
        dist[cy[inside], cx[inside]] = 0.0
    flat = int(np.argmax(dist))  # first maximum in raster order
    best = float(dist.flat[flat])
    if best <= 0.0:
        return None, 0.0
    y, x = divmod(flat, dist.shape[1])
    return (x + x0, y + y0), best


def _check_masks(name: str, masks: np.ndarray) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"{name} must be (N, H, W), got shape {masks.shape}")
    return masks.astype(bool, copy=False)


def _empty_clicks(n: int) -> Clicks:
    return Clicks(
        coords=np.zeros((n, 2), dtype=np.int64),
        labels=np.full((n,), -1, dtype=np.int64),
        valid=np.zeros((n,), dtype=bool),
        distance=np.zeros((n,), dtype=np.float64),
    )


def center_points(gt_masks: np.ndarray, method: str = "cv2") -> Clicks:
    """First clicks of the default protocol: each object's pixel farthest from its boundary.

    Args:
        gt_masks: (N, H, W) bool GT masks.
        method: distance transform engine, "cv2" or "scipy" (module docstring).

    Returns:
        :class:`Clicks` with label 1; ``valid`` is False for empty masks.
    """
    gt_masks = _check_masks("gt_masks", gt_masks)
    out = _empty_clicks(gt_masks.shape[0])
    for i, mask in enumerate(gt_masks):
        point, dist = farthest_point(mask, method=method)
        if point is not None:
            out.coords[i] = point
            out.labels[i] = 1
            out.valid[i] = True
            out.distance[i] = dist
    return out


def object_seed(seed: int, image_key: Any, object_id: int) -> np.random.Generator:
    """Random generator of one object, independent of batching and of the number of processes.

    Args:
        seed: global seed (``TEST.POINT_EVAL.SEED``).
        image_key: the image's ``image_id`` (or file name); hashed with CRC-32 of its ``str``.
        object_id: the object's id within the image.
    """
    key = zlib.crc32(str(image_key).encode("utf-8"))
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, key, int(object_id) & 0xFFFFFFFF])


def random_points(
    gt_masks: np.ndarray, rngs: Sequence[np.random.Generator], method: str = "cv2"
) -> Clicks:
    """First clicks of the "random" variant: a uniformly drawn pixel of each GT mask.

    Args:
        gt_masks: (N, H, W) bool GT masks.
        rngs: N generators (see :func:`object_seed`), one per object.
        method: distance transform engine (only for the reported ``distance``).

    Returns:
        :class:`Clicks` with label 1 and the drawn pixel's boundary distance; ``valid`` is False
        for empty masks.
    """
    gt_masks = _check_masks("gt_masks", gt_masks)
    if len(rngs) != gt_masks.shape[0]:
        raise ValueError(f"got {len(rngs)} generators for {gt_masks.shape[0]} masks")
    out = _empty_clicks(gt_masks.shape[0])
    for i, (mask, rng) in enumerate(zip(gt_masks, rngs)):
        ys, xs = np.nonzero(mask)  # raster order
        if ys.size == 0:
            continue
        j = int(rng.integers(ys.size))
        out.coords[i] = (xs[j], ys[j])
        out.labels[i] = 1
        out.valid[i] = True
        out.distance[i] = padded_distance_transform(mask, method)[ys[j], xs[j]]
    return out


def next_clicks(
    gt_masks: np.ndarray,
    pred_masks: np.ndarray,
    clicked: Optional[np.ndarray] = None,
    method: str = "cv2",
) -> Clicks:
    """Next click of each object: farthest point of the larger error region (module docstring).

    Args:
        gt_masks: (N, H, W) bool GT masks.
        pred_masks: (N, H, W) bool previous predictions.
        clicked: optional (N, P, 2) int XY clicks already made per object (excluded as click
            positions); rows with negative coordinates are padding.
        method: distance transform engine, "cv2" or "scipy" (module docstring).

    Returns:
        :class:`Clicks`: label 1 (in ``gt & ~pred``) or 0 (in ``~gt & pred``); ``valid`` False
        where no error pixel is left to click.
    """
    gt_masks = _check_masks("gt_masks", gt_masks)
    pred_masks = _check_masks("pred_masks", pred_masks)
    if gt_masks.shape != pred_masks.shape:
        raise ValueError(
            f"gt_masks {gt_masks.shape} and pred_masks {pred_masks.shape} differ in shape"
        )
    n = gt_masks.shape[0]
    if clicked is not None:
        clicked = np.asarray(clicked, dtype=np.int64)
        if clicked.ndim != 3 or clicked.shape[0] != n or clicked.shape[2] != 2:
            raise ValueError(f"clicked must be (N={n}, P, 2), got shape {clicked.shape}")
    out = _empty_clicks(n)
    for i in range(n):
        gt, pred = gt_masks[i], pred_masks[i]
        done = None if clicked is None else clicked[i]
        fn_point, fn_dist = farthest_point(gt & ~pred, done, method)
        fp_point, fp_dist = farthest_point(~gt & pred, done, method)
        if fn_point is None and fp_point is None:
            continue
        positive = fn_dist > fp_dist
        out.coords[i] = fn_point if positive else fp_point
        out.labels[i] = 1 if positive else 0
        out.valid[i] = True
        out.distance[i] = fn_dist if positive else fp_dist
    return out
