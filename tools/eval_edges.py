#!/usr/bin/env python
"""Score a folder of edge-probability PNGs with the BSDS boundary benchmark (ODS/OIS/AP/R50).

    python tools/eval_edges.py --pred DIR --gt datasets/bsds500/groundTruth/test --out pr.png

Each ground-truth ``<id>.mat`` of ``--gt`` needs a prediction ``<id>.png`` in ``--pred``: a
single-channel 8- or 16-bit PNG at the image's original size, read as value / 255 or / 65535.
The matching is exact and deterministic (see ``sam_d2/evaluation/bsds/matching.py``); the full
benchmark (200 images, 99 thresholds) takes minutes per core; ``--workers`` spreads the images over
processes.
"""

import argparse
import logging
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from tqdm import tqdm

from sam_d2.evaluation.bsds import (
    BSDS_MAX_DIST,
    BSDS_NUM_THRESHOLDS,
    bsds_thresholds,
    check_plot_path,
    edge_counts_from_file,
    save_pr_curve,
    summarize_edge_counts,
)
from sam_d2.utils.cli import HelpFormatter

logger = logging.getLogger("eval_edges")


def read_edge_png(path: Path) -> np.ndarray:
    """(H, W) float64 edge probabilities in [0, 1] from a single-channel 8- or 16-bit PNG."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError(f"cannot read prediction {path} as an image")
    if image.ndim != 2:
        raise ValueError(f"prediction {path} has shape {image.shape}; expected a 1-channel PNG")
    if image.dtype == np.uint8:
        return image / 255.0
    if image.dtype == np.uint16:
        return image / 65535.0
    raise ValueError(f"prediction {path} has dtype {image.dtype}; expected 8- or 16-bit")


def pair_files(pred_dir: Path, gt_dir: Path) -> List[Tuple[str, Path, Path]]:
    """(image id, prediction PNG, ground-truth .mat) for every .mat of ``gt_dir``, sorted by id.

    Raises:
        FileNotFoundError: a folder is missing, holds no .mat, or a prediction is missing.
    """
    for folder, what in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{what} folder {folder} not found")
    gt_files = sorted(gt_dir.glob("*.mat"))
    if not gt_files:
        raise FileNotFoundError(f"no ground-truth .mat files in {gt_dir}")
    missing = [f.stem for f in gt_files if not (pred_dir / f"{f.stem}.png").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(gt_files)} ground-truth images have no prediction "
            f"<id>.png in {pred_dir}, e.g. {', '.join(missing[:5])}"
        )
    gt_ids = {f.stem for f in gt_files}
    extra = sorted(p.stem for p in pred_dir.glob("*.png") if p.stem not in gt_ids)
    if extra:
        logger.warning(
            "ignoring %d predictions of %s that have no ground truth in %s, e.g. %s",
            len(extra),
            pred_dir,
            gt_dir,
            ", ".join(extra[:5]),
        )
    return [(f.stem, pred_dir / f"{f.stem}.png", f) for f in gt_files]


def _score(job: Tuple[Path, Path, np.ndarray, float, bool]) -> np.ndarray:
    pred_file, gt_file, thresholds, max_dist, thin = job
    edges = read_edge_png(pred_file)
    try:
        return edge_counts_from_file(edges, str(gt_file), thresholds, max_dist, thin)
    except ValueError as e:
        raise ValueError(f"{pred_file}: {e}") from e


def _run(jobs: Sequence[tuple], workers: int) -> Iterator[np.ndarray]:
    if workers <= 1:
        yield from map(_score, jobs)
        return
    with ProcessPoolExecutor(workers) as pool:
        yield from pool.map(_score, jobs)


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--pred", required=True, type=Path, help="folder of <id>.png edge maps")
    parser.add_argument("--gt", required=True, type=Path, help="BSDS groundTruth/<split> folder")
    parser.add_argument(
        "--out", required=True, type=Path, help="precision-recall plot to write (.png, .pdf, ...)"
    )
    parser.add_argument("--label", default="", help="method name for the plot legend")
    parser.add_argument(
        "--thresholds", type=_positive_int, default=BSDS_NUM_THRESHOLDS, help="number of thresholds"
    )
    parser.add_argument(
        "--max-dist",
        type=_positive_float,
        default=BSDS_MAX_DIST,
        help="match tolerance / image diagonal",
    )
    parser.add_argument(
        "--no-thin", action="store_true", help="do not thin binarised predictions (non-standard)"
    )
    parser.add_argument(
        "--workers", type=_non_negative_int, default=0, help="worker processes (0: match here)"
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the benchmark; returns ``{"ODS", "OIS", "AP", "R50"}``. Exits with a message on error."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        check_plot_path(str(args.out))  # before the matching, not after
        pairs = pair_files(args.pred, args.gt)
        thresholds = bsds_thresholds(args.thresholds)
        jobs = [(pred, gt, thresholds, args.max_dist, not args.no_thin) for _, pred, gt in pairs]
        counts = list(
            tqdm(_run(jobs, args.workers), total=len(jobs), desc="BSDS matching", unit="img")
        )
    except (FileNotFoundError, ValueError) as e:
        sys.exit(f"eval_edges: error: {e}")
    result = summarize_edge_counts(np.stack(counts), thresholds)
    print(f"BSDS boundary benchmark: {len(pairs)} images, {len(thresholds)} thresholds")
    print(
        f"  ODS {result.ods:.4f}  (P {result.ods_precision:.4f}, R {result.ods_recall:.4f}, "
        f"threshold {result.ods_threshold:.3f})"
    )
    print(f"  OIS {result.ois:.4f}  (P {result.ois_precision:.4f}, R {result.ois_recall:.4f})")
    print(f"  AP  {result.ap:.4f}")
    print(f"  R50 {result.r50:.4f}")
    save_pr_curve(result, str(args.out), args.label)
    print(f"precision-recall curve written to {args.out}")
    return result.metrics()


if __name__ == "__main__":
    main()
