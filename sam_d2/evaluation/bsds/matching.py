"""BSDS boundary matching: pixel correspondence and per-threshold match counts of one image.

The BSDS benchmark (Martin et al. 2004; Dollar's ``edgesEvalImg``) matches a binary boundary map
to each annotator's with ``correspondPixels``: a one-to-one assignment between the two pixel sets
where only pixels at most ``max_dist`` x image diagonal apart may match, edge costs are
``rint(100 * distance)``, and leaving a pixel unmatched costs ``ceil(100 * outlier_cost)``
(``outlier_cost = 100 * max_dist * diagonal``). The original code (``match.cc`` + Goldberg's CSA)
approximates the "unmatched" option with 6 random outlier connections per pixel drawn from a
clock-seeded generator, so its result varies from run to run and sometimes misses the optimum.

Here the same problem is solved exactly and deterministically. Matching k pairs of total edge
cost C costs ``C + (n1 + n2 - k) * ow`` in the original graph, which is minimal exactly when
``sum over matched pairs of (ow - cost)`` is maximal. That is a full bipartite matching of the
predicted pixels onto (ground-truth pixels + one private "unmatched" slot per predicted pixel,
weight ``ow``), solved by SciPy's sparse LAPJV (``min_weight_full_bipartite_matching``). Only
pixels with a partner within range take part, and the ground-truth side (pixel index and offsets)
is prepared once per annotator and reused over all thresholds.
"""

import math
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse
from scipy.ndimage import binary_dilation
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from skimage.morphology import thin as _bwmorph_thin

from ...data.bsds500 import load_bsds_boundaries

__all__ = [
    "BSDS_MAX_DIST",
    "BSDS_NUM_THRESHOLDS",
    "BoundaryMatcher",
    "MatcherFactory",
    "bsds_thresholds",
    "correspond_pixels",
    "edge_counts",
    "edge_counts_from_file",
]

#: Maximum match distance as a fraction of the image diagonal (BSDS default).
BSDS_MAX_DIST = 0.0075
#: Number of thresholds of the benchmark.
BSDS_NUM_THRESHOLDS = 99
#: Cost of leaving a pixel unmatched, in units of the maximum match distance (BSDS default).
BSDS_OUTLIER_COST = 100.0
_MULTIPLIER = 100  # match.cc turns distances into integer costs with this factor

#: ``factory(gt, max_dist)`` -> ``match(pred) -> (matched_pred, matched_gt)``: a matcher bound to
#: one annotator's (H, W) boundary map, called once per thresholded prediction.
MatchFn = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]
MatcherFactory = Callable[[np.ndarray, float], MatchFn]


def bsds_thresholds(num_thresholds: int = BSDS_NUM_THRESHOLDS) -> np.ndarray:
    """The benchmark's thresholds ``linspace(1/(K+1), 1-1/(K+1), K)``: (K,) float64."""
    if num_thresholds < 1:
        raise ValueError(f"num_thresholds must be >= 1, got {num_thresholds}")
    k = num_thresholds
    return np.linspace(1.0 / (k + 1), 1.0 - 1.0 / (k + 1), k)


class BoundaryMatcher:
    """Exact BSDS ``correspondPixels`` against one fixed boundary map (see module docstring).

    Args:
        gt: (H, W) binary boundary map (one annotator's boundaries).
        max_dist: maximum match distance as a fraction of the image diagonal.
    """

    def __init__(self, gt: np.ndarray, max_dist: float = BSDS_MAX_DIST) -> None:
        gt = np.asarray(gt)
        if gt.ndim != 2:
            raise ValueError(f"boundary map must be (H, W), got shape {gt.shape}")
        if not max_dist > 0:
            raise ValueError(f"max_dist must be > 0, got {max_dist}")
        self.shape = gt.shape
        radius_px = max_dist * math.hypot(*gt.shape)
        self._unmatched_weight = math.ceil(BSDS_OUTLIER_COST * radius_px * _MULTIPLIER)
        r = math.ceil(radius_px)
        dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
        within = dy**2 + dx**2 <= radius_px * radius_px
        self._dy, self._dx = dy[within], dx[within]
        self._cost = np.rint(np.hypot(self._dy, self._dx) * _MULTIPLIER).astype(np.int64)
        # Ground-truth pixel index on a frame padded by r (offsets never leave it), flattened;
        # offsets become flat steps; ``_near`` marks pixels with a ground-truth pixel in range.
        self._pad = r
        self._gt_y, self._gt_x = np.nonzero(gt)
        padded_width = gt.shape[1] + 2 * r
        gt_index = np.full((gt.shape[0] + 2 * r, padded_width), -1, dtype=np.int64)
        gt_index[self._gt_y + r, self._gt_x + r] = np.arange(len(self._gt_y))
        self._gt_index = gt_index.ravel()
        self._padded_width = padded_width
        self._steps = self._dy * padded_width + self._dx
        self._near = binary_dilation(gt.astype(bool), structure=within)

    def __call__(self, pred: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Match ``pred`` to the ground truth.

        Args:
            pred: (H, W) binary boundary map of the same shape.

        Returns:
            ``(matched_pred, matched_gt)``: (H, W) bool maps of the pixels that found a partner.
        """
        pred = np.asarray(pred, dtype=bool)
        if pred.shape != self.shape:
            raise ValueError(f"boundary maps differ in shape: {pred.shape} vs {self.shape}")
        matched_pred = np.zeros(self.shape, dtype=bool)
        matched_gt = np.zeros(self.shape, dtype=bool)
        py, px = np.nonzero(pred & self._near)  # the others have no partner in range
        if not len(py):
            return matched_pred, matched_gt
        base = (py + self._pad) * self._padded_width + px + self._pad
        partner = self._gt_index[base[:, None] + self._steps]
        rows, offset = np.nonzero(partner >= 0)  # every row has at least one partner
        # Ground-truth pixels with a partner in range, renumbered 0..n_gt-1.
        gt_ids, cols = np.unique(partner[rows, offset], return_inverse=True)
        n_pred, n_gt = len(py), len(gt_ids)
        # Rows: matchable predicted pixels. Columns: matchable ground-truth pixels, then one
        # private "unmatched" slot per row. Weights are shifted by 1 because the solver reads a
        # stored 0 as no edge; a full matching has n_pred edges, so the shift changes nothing.
        slots = np.arange(n_pred)
        weights = np.concatenate([self._cost[offset], np.full(n_pred, self._unmatched_weight)])
        graph = scipy.sparse.csr_matrix(
            (weights + 1, (np.concatenate([rows, slots]), np.concatenate([cols, n_gt + slots]))),
            shape=(n_pred, n_gt + n_pred),
        )
        _, col_of_row = min_weight_full_bipartite_matching(graph)
        real = col_of_row < n_gt
        i, j = np.nonzero(real)[0], gt_ids[col_of_row[real]]
        matched_pred[py[i], px[i]] = True
        matched_gt[self._gt_y[j], self._gt_x[j]] = True
        return matched_pred, matched_gt


def correspond_pixels(
    pred: np.ndarray, gt: np.ndarray, max_dist: float = BSDS_MAX_DIST
) -> Tuple[np.ndarray, np.ndarray]:
    """BSDS ``correspondPixels``: optimal one-to-one matching of two boundary maps.

    Args:
        pred: (H, W) binary boundary map (e.g. a thinned, thresholded prediction).
        gt: (H, W) binary boundary map (e.g. one annotator's boundaries).
        max_dist: maximum match distance as a fraction of the image diagonal.

    Returns:
        ``(matched_pred, matched_gt)``: (H, W) bool maps of the pixels of ``pred`` and ``gt``
        that found a partner.
    """
    if np.shape(pred) != np.shape(gt):
        raise ValueError(f"boundary maps differ in shape: {np.shape(pred)} vs {np.shape(gt)}")
    return BoundaryMatcher(gt, max_dist)(pred)


def edge_counts(
    edges: np.ndarray,
    gt_boundaries: Sequence[np.ndarray],
    thresholds: np.ndarray,
    max_dist: float = BSDS_MAX_DIST,
    thin: bool = True,
    matcher: Optional[MatcherFactory] = None,
) -> np.ndarray:
    """Per-threshold match counts of one image (Dollar's ``edgesEvalImg``).

    Consecutive thresholds that leave the same pixels above them reuse the previous counts, and
    empty maps skip matching; both give exactly what matching would give.

    Args:
        edges: (H, W) edge strength, normally in [0, 1].
        gt_boundaries: one (H, W) binary boundary map per annotator.
        thresholds: (K,) strictly increasing thresholds in (0, 1].
        max_dist: maximum match distance as a fraction of the image diagonal.
        thin: thin each binarised map before matching (the benchmark does).
        matcher: how to match (default :class:`BoundaryMatcher`, exact); the benchmark tool
            passes pyEdgeEval's original matcher here for comparison.

    Returns:
        (K, 4) int64 array, columns ``cntR, sumR, cntP, sumP``.
    """
    edges = np.asarray(edges, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if edges.ndim != 2:
        raise ValueError(f"edge map must be (H, W), got shape {edges.shape}")
    if not len(gt_boundaries):
        raise ValueError("no ground-truth boundary map given")
    gts = [np.asarray(gt, dtype=bool) for gt in gt_boundaries]
    for gt in gts:
        if gt.shape != edges.shape:
            raise ValueError(
                f"edge map has shape {edges.shape} but the ground truth has shape {gt.shape}"
            )
    if thresholds.ndim != 1 or not thresholds.size:
        raise ValueError(f"thresholds must be a non-empty 1-D array, got shape {thresholds.shape}")
    if thresholds[0] <= 0 or thresholds[-1] > 1 or np.any(np.diff(thresholds) <= 0):
        raise ValueError("thresholds must be strictly increasing within (0, 1]")

    factory = matcher or BoundaryMatcher
    matchers = [factory(gt, max_dist) for gt in gts if gt.any()]
    sum_r = sum(int(gt.sum()) for gt in gts)
    counts = np.zeros((len(thresholds), 4), dtype=np.int64)
    previous_size = -1
    for k, threshold in enumerate(thresholds):
        bmap = edges >= threshold
        size = int(bmap.sum())
        if size == previous_size:  # maps above increasing thresholds are nested: same map
            counts[k] = counts[k - 1]
            continue
        previous_size = size
        if thin:
            bmap = _bwmorph_thin(bmap)
        cnt_r = 0
        matched = np.zeros_like(bmap)
        if bmap.any():
            for match in matchers:
                match_pred, match_gt = match(bmap)
                matched |= match_pred
                cnt_r += int(match_gt.sum())
        counts[k] = (cnt_r, sum_r, int(matched.sum()), int(bmap.sum()))
    return counts


def edge_counts_from_file(
    edges: np.ndarray,
    gt_file: str,
    thresholds: np.ndarray,
    max_dist: float = BSDS_MAX_DIST,
    thin: bool = True,
    matcher: Optional[MatcherFactory] = None,
) -> np.ndarray:
    """:func:`edge_counts` against the annotators of a BSDS ground-truth ``.mat`` file.

    Returns:
        (K, 4) int64 counts ``cntR, sumR, cntP, sumP``.
    """
    gts = load_bsds_boundaries(gt_file)
    if np.shape(edges) != gts[0].shape:
        raise ValueError(
            f"edge map has shape {np.shape(edges)} but ground truth {gt_file} has shape "
            f"{gts[0].shape}; predictions must be at the image's original resolution"
        )
    return edge_counts(edges, gts, thresholds, max_dist, thin, matcher)
