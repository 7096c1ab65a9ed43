"""The BSDS500 boundary benchmark as a Detectron2 ``DatasetEvaluator`` (distributed, resumable)."""

import itertools
import logging
import multiprocessing
import os
from collections import OrderedDict
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.logger import create_small_table

from ...utils.atomic import atomic_open
from .matching import BSDS_MAX_DIST, BSDS_NUM_THRESHOLDS, bsds_thresholds, edge_counts_from_file
from .metrics import EdgeBenchmarkResult, summarize_edge_counts
from .plots import save_pr_curve

__all__ = ["BSDSEdgeEvaluator"]

logger = logging.getLogger(__name__)


class BSDSEdgeEvaluator(DatasetEvaluator):
    """BSDS boundary benchmark of edge maps, distributed-safe and resumable.

    Consumes ``inputs[i]["edge_gt_file"]`` (the dataset dict key set by
    :func:`sam_d2.data.bsds500.load_bsds500_dicts`) and ``outputs[i]["edges"]``: a float (H, W)
    tensor in [0, 1] at the image's original resolution. ``process`` computes each image's
    per-threshold counts (the matching), optionally in a pool of worker processes; ``evaluate``
    gathers the small count arrays to rank 0 and returns ``{"edges": {"ODS", "OIS", "AP", "R50"}}``
    (fractions in [0, 1]). With ``output_dir``, the per-threshold curve, per-image OIS results and
    optionally the PR curve plot are written there (atomically). ``take_records`` /
    ``restore_records`` let :class:`~sam_d2.evaluation.resumable.ResumableEvaluator` save each
    image's counts as soon as they exist and reload them after a crash.
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
        self._taken = 0  # how many of self._counts take_records has already handed out

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

    def _collect(self, wait: bool) -> None:
        """Move finished (all, if ``wait``) worker results from ``_pending`` to ``_counts``."""
        still_pending = []
        for image_id, job in self._pending:
            if wait or job.done():
                self._counts.append((image_id, job.result()))
            else:
                still_pending.append((image_id, job))
        self._pending = still_pending

    def take_records(self, final: bool = False) -> List[Tuple[str, Any]]:
        """``(image_id, counts)`` of the images finished since the last call.

        Args:
            final: wait for the worker pool to finish every submitted image.
        """
        self._collect(wait=final)
        records = self._counts[self._taken :]
        self._taken = len(self._counts)
        return list(records)

    def restore_records(self, records: List[Tuple[str, Any]]) -> None:
        """Add records saved by :meth:`take_records` in an earlier (interrupted) run."""
        self._counts.extend(records)
        self._taken = len(self._counts)

    def evaluate(self) -> "OrderedDict[str, Dict[str, float]]":
        try:
            self._collect(wait=True)
        finally:
            self._shutdown_workers()
        counts = self._counts
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
        with atomic_open(os.path.join(self._output_dir, "bsds_edges_thresholds.csv")) as f:
            f.write("threshold,recall,precision,f1\n")
            for row in zip(result.thresholds, result.recall, result.precision, result.f1):
                f.write(",".join(f"{v:.6f}" for v in row) + "\n")
        with atomic_open(os.path.join(self._output_dir, "bsds_edges_images.csv")) as f:
            f.write("image_id,threshold,recall,precision,f1\n")
            for image_id, row in zip(image_ids, result.image_best):
                f.write(image_id + "," + ",".join(f"{v:.6f}" for v in row) + "\n")
        if self._save_pr_curve:
            save_pr_curve(result, os.path.join(self._output_dir, "bsds_edges_pr.png"))
        logger.info("BSDS edge benchmark curves written to %s", self._output_dir)
