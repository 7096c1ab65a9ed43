"""BSDS benchmark summary: ODS, OIS, AP and R50 from per-image match counts (``edgesEvalDir``).

* ODS: sum the counts over images; F-measure maximised over thresholds with linear interpolation
  (100 steps) between neighbouring thresholds;
* OIS: for each image take the counts at its best (non-interpolated) threshold, sum these over
  images, and compute one F-measure;
* AP: the dataset precision interpolated at recall 0, 0.01, ..., 1 (inside the recall range),
  summed and divided by 100 (the benchmark's own definition, "minor bug" included);
* R50: the dataset recall interpolated at precision 0.5 (or at the lowest precision reached when
  that is above 0.5; NaN if precision never reaches 0.5).
"""

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

__all__ = ["EdgeBenchmarkResult", "summarize_edge_counts"]

_EPS = np.finfo(np.float64).eps  # MATLAB's eps


@dataclass
class EdgeBenchmarkResult:
    """Benchmark summary. Scores are fractions in [0, 1] (the paper prints them as .768 etc.).

    Attributes:
        ods, ods_precision, ods_recall, ods_threshold: optimal dataset scale F / P / R / threshold.
        ois, ois_precision, ois_recall: optimal image scale F / P / R.
        ap: average precision; r50: recall at 50% precision.
        thresholds, recall, precision, f1: (K,) dataset curve per threshold.
        image_best: (N, 4) per image (interpolated) best threshold, recall, precision, F.
    """

    ods: float
    ods_precision: float
    ods_recall: float
    ods_threshold: float
    ois: float
    ois_precision: float
    ois_recall: float
    ap: float
    r50: float
    thresholds: np.ndarray
    recall: np.ndarray
    precision: np.ndarray
    f1: np.ndarray
    image_best: np.ndarray

    def metrics(self) -> Dict[str, float]:
        """The four headline numbers: ``{"ODS", "OIS", "AP", "R50"}``."""
        return {"ODS": self.ods, "OIS": self.ois, "AP": self.ap, "R50": self.r50}


def _rpf(
    cnt_r: np.ndarray, sum_r: np.ndarray, cnt_p: np.ndarray, sum_p: np.ndarray
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    recall = cnt_r / np.maximum(_EPS, sum_r)
    precision = cnt_p / np.maximum(_EPS, sum_p)
    return recall, precision, 2 * precision * recall / np.maximum(_EPS, precision + recall)


def _best_interpolated(
    thresholds: np.ndarray, recall: np.ndarray, precision: np.ndarray
) -> Tuple[float, float, float, float]:
    """(threshold, recall, precision, F) maximising F along the piecewise-linear R/P curve."""
    if len(thresholds) == 1:
        f1 = 2 * precision[0] * recall[0] / max(_EPS, precision[0] + recall[0])
        return float(thresholds[0]), float(recall[0]), float(precision[0]), float(f1)
    a = np.linspace(0, 1, 100)

    def lerp(v: np.ndarray) -> np.ndarray:
        return v[1:, None] * a + v[:-1, None] * (1 - a)

    r, p, t = lerp(recall), lerp(precision), lerp(thresholds)
    f = 2 * p * r / np.maximum(_EPS, p + r)
    i = np.unravel_index(np.argmax(f), f.shape)  # first maximum, as the benchmark's loop
    return float(t[i]), float(r[i]), float(p[i]), float(f[i])


def _average_precision_and_r50(recall: np.ndarray, precision: np.ndarray) -> Tuple[float, float]:
    """AP and R50 exactly as ``edgesEvalDir`` computes them from the dataset curve."""
    r_unique, first = np.unique(recall, return_index=True)
    p_unique = precision[first]
    if len(r_unique) < 2:
        ap = 0.0
    else:
        query = np.arange(101) / 100.0
        inside = (query >= r_unique[0]) & (query <= r_unique[-1])
        ap = float(np.interp(query[inside], r_unique, p_unique).sum() / 100.0)
    # R50 on the recall-unique points taken in decreasing recall order, as edgesEvalDir does.
    r_desc, p_desc = r_unique[::-1], p_unique[::-1]
    p_sorted, first = np.unique(p_desc, return_index=True)
    r_at_p = r_desc[first]
    query = max(p_sorted[0], 0.5)
    if len(p_sorted) < 2:
        r50 = float(r_at_p[0]) if p_sorted[0] >= 0.5 else float("nan")
    elif query > p_sorted[-1]:
        r50 = float("nan")
    else:
        r50 = float(np.interp(query, p_sorted, r_at_p))
    return ap, r50


def summarize_edge_counts(counts: np.ndarray, thresholds: np.ndarray) -> EdgeBenchmarkResult:
    """ODS, OIS, AP and R50 from per-image counts (Dollar's ``edgesEvalDir``).

    Args:
        counts: (N, K, 4) counts ``cntR, sumR, cntP, sumP`` of N images (see :func:`edge_counts`).
        thresholds: (K,) thresholds the counts were taken at.

    Returns:
        The benchmark summary.
    """
    counts = np.asarray(counts, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if counts.ndim != 3 or counts.shape[2] != 4 or counts.shape[1] != len(thresholds):
        raise ValueError(f"counts must be (N, K={len(thresholds)}, 4), got shape {counts.shape}")
    if not counts.shape[0]:
        raise ValueError("no image counts to summarise")

    image_best = np.zeros((counts.shape[0], 4))
    ois_counts = np.zeros(4)
    for n, image_counts in enumerate(counts):
        recall, precision, f1 = _rpf(*image_counts.T)
        image_best[n] = _best_interpolated(thresholds, recall, precision)
        ois_counts += image_counts[np.argmax(f1)]
    recall, precision, f1 = _rpf(*counts.sum(axis=0).T)
    ods_t, ods_r, ods_p, ods_f = _best_interpolated(thresholds, recall, precision)
    ois_r, ois_p, ois_f = _rpf(*ois_counts)
    ap, r50 = _average_precision_and_r50(recall, precision)
    return EdgeBenchmarkResult(
        ods=ods_f,
        ods_precision=ods_p,
        ods_recall=ods_r,
        ods_threshold=ods_t,
        ois=float(ois_f),
        ois_precision=float(ois_p),
        ois_recall=float(ois_r),
        ap=ap,
        r50=r50,
        thresholds=thresholds,
        recall=recall,
        precision=precision,
        f1=f1,
        image_best=image_best,
    )
