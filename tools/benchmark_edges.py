#!/usr/bin/env python
"""BSDS boundary benchmark: sam_d2's exact matcher beside pyEdgeEval's original, in one run.

    python tools/benchmark_edges.py --bsds datasets/bsds500 --num-images 10 --workers 2
    python tools/benchmark_edges.py --bsds datasets/bsds500 --human --num-images 200 \
        --skip-reference

Both matchers score the same predictions with the same thinning, thresholds and counting
(``sam_d2.evaluation.bsds.edge_counts``), on the same number of worker processes, one after the
other; the tool prints ODS/OIS/AP/R50 of each, their largest difference, the wall time of each and
the speed ratio. Predictions: ``--pred DIR`` (``<id>.png`` edge maps as for
``tools/eval_edges.py``), else a simple real detector computed here from each image (Gaussian-
smoothed gradient magnitude followed by the benchmark's edge NMS), or with ``--human`` each
annotator scored against the others (the benchmark's human agreement, one threshold).
"""

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from scipy import ndimage as ndi

from sam_d2.data.bsds500 import load_bsds_boundaries
from sam_d2.evaluation.bsds import (
    BSDS_MAX_DIST,
    BSDS_NUM_THRESHOLDS,
    bsds_thresholds,
    edge_counts,
    summarize_edge_counts,
)
from sam_d2.evaluation.bsds.reference import pyedgeeval_matcher
from sam_d2.modeling.edge_map import edge_nms
from sam_d2.utils.cli import HelpFormatter

MATCHERS = {"sam_d2": None, "pyEdgeEval": pyedgeeval_matcher}


def gradient_edges(image_file: Path, sigma: float = 2.0) -> np.ndarray:
    """A plain real edge detector: |gradient| of the smoothed grey image, edge NMS, in [0, 1]."""
    grey = cv2.imread(str(image_file), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise ValueError(f"cannot read image {image_file}")
    smooth = ndi.gaussian_filter(grey.astype(np.float64) / 255.0, sigma)
    magnitude = np.hypot(ndi.sobel(smooth, 0), ndi.sobel(smooth, 1))
    edges = edge_nms(torch.from_numpy(magnitude / max(magnitude.max(), 1e-12))).numpy()
    return np.clip(edges / max(edges.max(), 1e-12), 0.0, 1.0)


def _jobs(args: argparse.Namespace) -> List[Tuple[np.ndarray, List[np.ndarray]]]:
    """(edge map, annotators) pairs to score."""
    gt_dir = args.bsds / "groundTruth" / args.split
    gt_files = sorted(gt_dir.glob("*.mat"))
    if not gt_files:
        raise FileNotFoundError(f"no ground-truth .mat files in {gt_dir}")
    pick = np.unique(np.linspace(0, len(gt_files) - 1, min(args.num_images, len(gt_files))).round())
    jobs = []
    for gt_file in (gt_files[int(i)] for i in pick):
        gts = load_bsds_boundaries(str(gt_file))
        if args.human:
            jobs += [(gt.astype(float), gts[:k] + gts[k + 1 :]) for k, gt in enumerate(gts)]
        elif args.pred:
            png = cv2.imread(str(args.pred / f"{gt_file.stem}.png"), cv2.IMREAD_UNCHANGED)
            if png is None:
                raise FileNotFoundError(f"no readable prediction {args.pred / gt_file.stem}.png")
            jobs.append((png / float(np.iinfo(png.dtype).max), gts))
        else:
            image = args.bsds / "images" / args.split / f"{gt_file.stem}.jpg"
            jobs.append((gradient_edges(image), gts))
    return jobs


def _count(job: Tuple[np.ndarray, List[np.ndarray], np.ndarray, str]) -> np.ndarray:
    edges, gts, thresholds, matcher = job
    return edge_counts(edges, gts, thresholds, BSDS_MAX_DIST, matcher=MATCHERS[matcher])


def run(jobs: Sequence, thresholds: np.ndarray, matcher: str, workers: int) -> Tuple[Dict, Dict]:
    """Score every job with one matcher; returns its metrics and its times in seconds: wall
    clock, and CPU time of this process (all of the work when ``workers`` is 0, which makes it
    the fair measure on a machine shared with other jobs)."""
    tasks = [(edges, gts, thresholds, matcher) for edges, gts in jobs]
    start, start_cpu = time.perf_counter(), time.process_time()
    if workers:
        with ProcessPoolExecutor(workers) as pool:
            counts = list(pool.map(_count, tasks))
    else:
        counts = [_count(task) for task in tasks]
    times = {"wall_s": time.perf_counter() - start}
    if not workers:
        times["cpu_s"] = time.process_time() - start_cpu
    result = summarize_edge_counts(np.stack(counts), thresholds)
    metrics = dict(result.metrics(), P=result.ods_precision, R=result.ods_recall)
    return metrics, times


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--bsds", type=Path, default=Path("datasets/bsds500"), help="BSDS500 root")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"], help="split")
    parser.add_argument("--num-images", type=int, default=10, help="images, evenly spread")
    parser.add_argument("--thresholds", type=int, default=BSDS_NUM_THRESHOLDS, help="thresholds")
    parser.add_argument("--workers", type=int, default=0, help="processes (0: in this one)")
    parser.add_argument("--pred", type=Path, default=None, help="folder of <id>.png edge maps")
    parser.add_argument("--human", action="store_true", help="score annotators vs the others")
    parser.add_argument("--skip-reference", action="store_true", help="run sam_d2's matcher only")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    for name in ("num_images", "thresholds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    if args.human and args.pred:
        parser.error("--human scores the annotators themselves; do not pass --pred")
    return args


def main(argv: Optional[Sequence[str]] = None) -> Dict:
    args = parse_args(argv)
    try:
        jobs = _jobs(args)
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"benchmark_edges: error: {e}")
    thresholds = bsds_thresholds(1 if args.human else args.thresholds)
    what = "human agreement" if args.human else f"{len(thresholds)} thresholds"
    print(f"{len(jobs)} scored maps ({what}), {args.workers} worker processes")
    report: Dict = {"maps": len(jobs), "thresholds": len(thresholds), "workers": args.workers}
    for matcher in MATCHERS if not args.skip_reference else ["sam_d2"]:
        metrics, times = run(jobs, thresholds, matcher, args.workers)
        report[matcher] = dict(metrics, **times)
        figures = "  ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        timing = "  ".join(f"{k} {v:.1f}" for k, v in times.items())
        print(f"{matcher:>10}: {figures}  {timing}")
    if not args.skip_reference:
        ours, ref = report["sam_d2"], report["pyEdgeEval"]
        keys = ("ODS", "OIS", "AP", "R50")
        report["max_abs_diff"] = max(abs(ours[k] - ref[k]) for k in keys)
        clock = "cpu_s" if "cpu_s" in ours else "wall_s"
        report["speedup"] = ref[clock] / ours[clock]
        print(
            f"largest |difference| of ODS/OIS/AP/R50: {report['max_abs_diff']:.5f}; "
            f"sam_d2 is {report['speedup']:.1f}x faster ({clock})"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
