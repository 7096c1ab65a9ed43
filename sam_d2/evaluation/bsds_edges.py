"""The BSDS500 boundary benchmark (ODS, OIS, AP, R50) as a Detectron2 evaluator.

Protocol of the BSDS boundary benchmark (Martin et al. 2004, Arbelaez et al. TPAMI 2011) as
implemented by Dollar's ``edgesEvalImg`` / ``edgesEvalDir`` (identical to BSDS ``boundaryBench``
plus R50), which is what edge-detection papers, SAM's included, report:

* per image and for each of K = 99 thresholds ``t_k = k / (K + 1)``: binarise ``E >= t_k``, thin
  it (MATLAB ``bwmorph(., 'thin', Inf)``), and match it to each annotator's boundary map with the
  original BSDS ``correspondPixels`` (a min-cost bipartite assignment, maximum match distance
  0.0075 x image diagonal, outlier cost 100 x that distance); accumulate
  ``cntR`` (matched ground-truth pixels, summed over annotators), ``sumR`` (ground-truth pixels,
  summed over annotators), ``cntP`` (predicted pixels matched to at least one annotator) and
  ``sumP`` (predicted pixels);
* ODS: sum the counts over images; F-measure maximised over thresholds with linear interpolation
  (100 steps) between neighbouring thresholds;
* OIS: for each image take the counts at its best (non-interpolated) threshold, sum these over
  images, and compute one F-measure;
* AP: the dataset precision interpolated at recall 0, 0.01, ..., 1 (inside the recall range),
  summed and divided by 100 (the benchmark's own definition, "minor bug" included);
* R50: the dataset recall interpolated at precision 0.5 (or at the lowest precision reached when
  that is above 0.5; NaN if precision never reaches 0.5).

Matching uses ``pyEdgeEval``'s compiled port of the original C++ (``match.cc``/``csa.cc``). That
code draws its sparse outlier connections from a time-seeded global random generator, so repeated
runs differ by about 0.1% of matched pixels; we reseed it with a constant before every call, which
makes results reproducible and independent of the number of processes.
"""

import ctypes
import functools
import importlib
import itertools
import logging
import multiprocessing
import os
from collections import OrderedDict
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table
from pyEdgeEval import correspond_pixels as _bsds_correspond_pixels
from skimage.morphology import thin as _bwmorph_thin

from ..data.bsds500 import load_bsds_boundaries

__all__ = [
    "BSDS500_HUMAN_RP",
    "BSDS_MAX_DIST",
    "BSDS_NUM_THRESHOLDS",
    "BSDSEdgeEvaluator",
    "EdgeBenchmarkResult",
    "bsds_thresholds",
    "correspond_pixels",
    "edge_counts",
    "edge_counts_from_file",
    "save_pr_curve",
    "summarize_edge_counts",
]

logger = logging.getLogger(__name__)

#: Maximum match distance as a fraction of the image diagonal (BSDS default).
BSDS_MAX_DIST = 0.0075
#: Number of thresholds of the benchmark.
BSDS_NUM_THRESHOLDS = 99
#: (recall, precision) of human annotators on the BSDS500 test set, as plotted by the benchmark
#: (each annotator scored against the others; F = 0.80).
BSDS500_HUMAN_RP = (0.7235, 0.9014)
_EPS = np.finfo(np.float64).eps  # MATLAB's eps
_MATCHER_SEED = 0x5EED  # any non-zero value; 0 would mean "seed from the clock"


def bsds_thresholds(num_thresholds: int = BSDS_NUM_THRESHOLDS) -> np.ndarray:
    """The benchmark's thresholds ``linspace(1/(K+1), 1-1/(K+1), K)``: (K,) float64."""
    if num_thresholds < 1:
        raise ValueError(f"num_thresholds must be >= 1, got {num_thresholds}")
    k = num_thresholds
    return np.linspace(1.0 / (k + 1), 1.0 - 1.0 / (k + 1), k)


@functools.lru_cache(maxsize=None)
def _matcher_reseed() -> Optional[Callable[[], None]]:
    """A function reseeding the BSDS matcher's global C++ ``Random::rand``, if it is reachable."""
    module = importlib.import_module("pyEdgeEval._lib.correspond_pixels")
    try:
        lib = ctypes.CDLL(module.__file__)
        rand = ctypes.c_char.in_dll(lib, "_ZN6Random4randE")
        # Random::reseed(u_int64_t): "m" = unsigned long (Linux), "y" = unsigned long long.
        symbol = next(s for s in ("_ZN6Random6reseedEm", "_ZN6Random6reseedEy") if hasattr(lib, s))
    except (OSError, ValueError, StopIteration) as e:
        logger.warning(
            "cannot reseed the BSDS pixel matcher (%s); edge benchmark results will vary slightly "
            "between runs (about 0.1%% of matches)",
            e,
        )
        return None
    reseed = getattr(lib, symbol)
    reseed.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    reseed.restype = None
    address = ctypes.addressof(rand)
    return lambda: reseed(address, _MATCHER_SEED)


def correspond_pixels(
    pred: np.ndarray, gt: np.ndarray, max_dist: float = BSDS_MAX_DIST
) -> Tuple[np.ndarray, np.ndarray]:
    """BSDS ``correspondPixels``: one-to-one matching of two boundary maps, deterministic.

    Args:
        pred: (H, W) binary boundary map (e.g. a thinned, thresholded prediction).
        gt: (H, W) binary boundary map (e.g. one annotator's boundaries).
        max_dist: maximum match distance as a fraction of the image diagonal.

    Returns:
        ``(matched_pred, matched_gt)``: (H, W) bool maps of the pixels of ``pred`` and ``gt``
        that found a partner.
    """
    if pred.shape != gt.shape:
        raise ValueError(f"boundary maps differ in shape: {pred.shape} vs {gt.shape}")
    reseed = _matcher_reseed()
    if reseed is not None:
        reseed()
    match_pred, match_gt, _, _ = _bsds_correspond_pixels(pred, gt, max_dist=max_dist)
    return match_pred > 0, match_gt > 0


def edge_counts(
    edges: np.ndarray,
    gt_boundaries: Sequence[np.ndarray],
    thresholds: np.ndarray,
    max_dist: float = BSDS_MAX_DIST,
    thin: bool = True,
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
            for gt in gts:
                if gt.any():
                    match_pred, match_gt = correspond_pixels(bmap, gt, max_dist)
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
    return edge_counts(edges, gts, thresholds, max_dist, thin)


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


def save_pr_curve(result: EdgeBenchmarkResult, path: str, label: str = "") -> None:
    """Write the dataset precision-recall curve with iso-F contours and the ODS point (PNG/PDF).

    Args:
        result: a benchmark summary.
        path: output image path (the format follows the extension).
        label: legend name of the method.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    r = np.linspace(0.01, 1, 200)
    for f in np.arange(0.1, 1.0, 0.1):
        p = f * r / (2 * r - f)
        ok = (p > 0) & (p <= 1)
        ax.plot(r[ok], p[ok], color="0.85", linewidth=0.8)
    name = f"{label} " if label else ""
    ax.plot(
        result.recall,
        result.precision,
        linewidth=2,
        label=f"{name}[ODS={result.ods:.3f} OIS={result.ois:.3f} AP={result.ap:.3f}]",
    )
    ax.plot(result.ods_recall, result.ods_precision, "o", color="C3")
    ax.plot(*BSDS500_HUMAN_RP, "o", color="green", label="human [F=0.80]")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_title("BSDS boundary benchmark")
    ax.grid(True, linewidth=0.3)
    ax.legend(loc="lower left", fontsize=8)
    with PathManager.open(path, "wb") as f:
        fig.savefig(f, format=os.path.splitext(path)[1][1:] or "png", dpi=120)


class BSDSEdgeEvaluator(DatasetEvaluator):
    """BSDS boundary benchmark of edge maps, distributed-safe.

    Consumes ``inputs[i]["edge_gt_file"]`` (the dataset dict key set by
    :func:`sam_d2.data.bsds.load_bsds500_dicts`) and ``outputs[i]["edges"]``: a float (H, W)
    tensor in [0, 1] at the image's original resolution. ``process`` computes each image's
    per-threshold counts (the expensive matching), optionally in a pool of worker processes;
    ``evaluate`` gathers the small count arrays to rank 0 and returns
    ``{"edges": {"ODS", "OIS", "AP", "R50"}}`` (fractions in [0, 1]). With ``output_dir``, the
    per-threshold curve, per-image OIS results and optionally the PR curve plot are written there.
    """

    def __init__(
        self,
        dataset_name: str,
        output_dir: Optional[str] = None,
        *,
        distributed: bool = True,
        num_thresholds: int = BSDS_NUM_THRESHOLDS,
        max_dist: float = BSDS_MAX_DIST,
        thin: bool = True,
        num_workers: int = 0,
        save_pr_curve: bool = True,
    ) -> None:
        """
        Args:
            dataset_name: registered dataset (e.g. "bsds500_test"); used for names and counts.
            output_dir: where to write ``bsds_edges_*`` files; None writes nothing.
            distributed: gather results from all ranks (False: evaluate this process only).
            num_thresholds: number of benchmark thresholds (99 in the standard protocol).
            max_dist: match tolerance as a fraction of the image diagonal (0.0075 standard).
            thin: thin binarised predictions before matching (standard: True).
            num_workers: worker processes per rank for the matching; 0 matches in ``process``.
            save_pr_curve: also write ``bsds_edges_pr.png`` to ``output_dir``.
        """
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        self._thresholds = bsds_thresholds(num_thresholds)
        self._max_dist = max_dist
        self._thin = thin
        self._num_workers = num_workers
        self._save_pr_curve = save_pr_curve
        self._executor: Optional[ProcessPoolExecutor] = None
        self.reset()

    def reset(self) -> None:
        self._shutdown_workers()
        self._counts: List[Tuple[str, np.ndarray]] = []
        self._pending: List[Tuple[str, Future]] = []

    def _shutdown_workers(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    @staticmethod
    def _edges_of(index: int, inp: Dict, out: Dict) -> np.ndarray:
        """Validated (H, W) float32 numpy edge map of one output."""
        image_id = inp.get("image_id", inp.get("file_name", index))
        if "edges" not in out:
            raise KeyError(
                f"outputs[{index}] (image {image_id}) has no 'edges'; keys: {sorted(out)}"
            )
        edges = out["edges"]
        if not isinstance(edges, torch.Tensor) or edges.dim() != 2:
            shape = tuple(edges.shape) if hasattr(edges, "shape") else type(edges).__name__
            raise ValueError(
                f"outputs[{index}]['edges'] (image {image_id}) must be an (H, W) tensor, got "
                f"{shape}"
            )
        expected = (inp.get("height"), inp.get("width"))
        if None not in expected and tuple(edges.shape) != expected:
            raise ValueError(
                f"outputs[{index}]['edges'] (image {image_id}) has shape {tuple(edges.shape)}, "
                f"expected the original image size (height, width) = {expected}"
            )
        edges = edges.detach().to(device="cpu", dtype=torch.float32)
        if not torch.isfinite(edges).all() or edges.min() < 0 or edges.max() > 1:
            raise ValueError(
                f"outputs[{index}]['edges'] (image {image_id}) must be finite and within [0, 1], "
                f"got range [{edges.min().item():.4g}, {edges.max().item():.4g}]"
            )
        return edges.numpy()

    def process(self, inputs: List[Dict], outputs: List[Dict]) -> None:
        for index, (inp, out) in enumerate(zip(inputs, outputs)):
            if "edge_gt_file" not in inp:
                raise KeyError(
                    f"inputs[{index}] has no 'edge_gt_file' (the BSDS ground-truth .mat path of "
                    "the dataset dict); use a mapper that keeps the dataset dict's keys"
                )
            image_id = str(inp["image_id"])
            edges = self._edges_of(index, inp, out)
            job = (edges, inp["edge_gt_file"], self._thresholds, self._max_dist, self._thin)
            if self._num_workers:
                if self._executor is None:
                    self._executor = ProcessPoolExecutor(
                        self._num_workers, mp_context=multiprocessing.get_context("spawn")
                    )
                self._pending.append((image_id, self._executor.submit(edge_counts_from_file, *job)))
            else:
                self._counts.append((image_id, edge_counts_from_file(*job)))

    def evaluate(self) -> "OrderedDict[str, Dict[str, float]]":
        try:
            counts = self._counts + [(image_id, job.result()) for image_id, job in self._pending]
        finally:
            self._shutdown_workers()
        if self._distributed:
            comm.synchronize()
            counts = list(itertools.chain(*comm.gather(counts, dst=0)))
            if not comm.is_main_process():
                return OrderedDict()
        if not counts:
            logger.warning("[BSDSEdgeEvaluator] no predictions to evaluate")
            return OrderedDict()

        by_image = dict(sorted(counts, key=lambda item: item[0]))
        if len(by_image) != len(counts):
            logger.warning("%d images were evaluated more than once", len(counts) - len(by_image))
        self._warn_if_incomplete(len(by_image))
        image_ids = list(by_image)
        result = summarize_edge_counts(np.stack(list(by_image.values())), self._thresholds)

        metrics = result.metrics()
        logger.info(
            "BSDS boundary benchmark on %s (%d images, %d thresholds):\n%s\n"
            "ODS: P=%.3f R=%.3f at threshold %.3f; OIS: P=%.3f R=%.3f",
            self._dataset_name,
            len(image_ids),
            len(self._thresholds),
            create_small_table(metrics),
            result.ods_precision,
            result.ods_recall,
            result.ods_threshold,
            result.ois_precision,
            result.ois_recall,
        )
        if self._output_dir:
            self._save(result, image_ids)
        return OrderedDict({"edges": metrics})

    def _warn_if_incomplete(self, num_evaluated: int) -> None:
        try:
            num_total = len(DatasetCatalog.get(self._dataset_name))
        except (KeyError, FileNotFoundError):
            return
        if num_evaluated != num_total:
            logger.warning(
                "evaluated %d of the %d images of %s; the scores are not the benchmark's",
                num_evaluated,
                num_total,
                self._dataset_name,
            )

    def _save(self, result: EdgeBenchmarkResult, image_ids: List[str]) -> None:
        PathManager.mkdirs(self._output_dir)
        path = os.path.join(self._output_dir, "bsds_edges_thresholds.csv")
        with PathManager.open(path, "w") as f:
            f.write("threshold,recall,precision,f1\n")
            for row in zip(result.thresholds, result.recall, result.precision, result.f1):
                f.write(",".join(f"{v:.6f}" for v in row) + "\n")
        path = os.path.join(self._output_dir, "bsds_edges_images.csv")
        with PathManager.open(path, "w") as f:
            f.write("image_id,threshold,recall,precision,f1\n")
            for image_id, row in zip(image_ids, result.image_best):
                f.write(image_id + "," + ",".join(f"{v:.6f}" for v in row) + "\n")
        if self._save_pr_curve:
            save_pr_curve(result, os.path.join(self._output_dir, "bsds_edges_pr.png"))
        logger.info("BSDS edge benchmark curves written to %s", self._output_dir)
