#!/usr/bin/env python
"""Show that the training recipe learns: a small SAM trained from scratch on BSDS500 regions.

    python tools/train_from_scratch_demo.py --output-dir output/bsds_scratch
    python tools/train_from_scratch_demo.py --output-dir out --opts SOLVER.MAX_ITER 200

Trains ``configs/bsds500_regions_from_scratch.yaml`` (random initialisation, the paper's 11-round
interactive simulation, AdamW) on the human segmentations of 150 BSDS500 test images through
sam_d2's Detectron2 ``Trainer``, and evaluates the single-point benchmark (``SamClickBenchmark`` +
``PointMIoUEvaluator``, centre clicks) on the 50 held-out images before training, every
``--eval-period`` iterations and at the end. Writes to ``--output-dir``:

    results.json          mIoU@N on the held-out images at every evaluation (percent)
    learning_curve.png    training loss and held-out mIoU@1 / mIoU@5 against iterations
    metrics.json          Detectron2's per-iteration training metrics
    model_final.pth       the trained weights

Data: ``--data-root`` holds ``bsds500/`` (default ``../shared/data``, else
``$DETECTRON2_DATASETS``).
"""

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from detectron2.config import CfgNode, get_cfg
from detectron2.engine import hooks
from detectron2.evaluation import inference_on_dataset
from detectron2.utils.env import seed_all_rng
from detectron2.utils.logger import setup_logger

import sam_d2
from sam_d2.data.bsds500_regions import register_bsds500_regions
from sam_d2.data.point_mapper import build_point_eval_loader
from sam_d2.engine import Trainer
from sam_d2.evaluation.point_miou import PointMIoUEvaluator
from sam_d2.utils.cli import HelpFormatter

REPO = Path(__file__).resolve().parents[1]
HELDOUT = "bsds500_regions_heldout"
logger = logging.getLogger("train_from_scratch_demo")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--config-file", default=str(REPO / "configs/bsds500_regions_from_scratch.yaml"))
    p.add_argument("--output-dir", required=True)
    p.add_argument(
        "--data-root",
        default=os.getenv("DETECTRON2_DATASETS", str(REPO.parent / "shared" / "data")),
        help="folder containing bsds500/",
    )
    p.add_argument(
        "--min-area-ratio",
        type=float,
        default=0.05,
        help="BSDS500 regions smaller than this fraction of the image are not objects "
        "(training and held-out alike)",
    )
    p.add_argument("--eval-period", type=int, default=100, help="iterations between evaluations")
    p.add_argument("--num-threads", type=int, default=1, help="torch CPU threads")
    p.add_argument(
        "--plot-only",
        action="store_true",
        help="only redraw learning_curve.png from --output-dir (e.g. of an interrupted run)",
    )
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides")
    return p.parse_args(argv)


def setup(args: argparse.Namespace) -> CfgNode:
    cfg = get_cfg()
    sam_d2.add_sam_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.OUTPUT_DIR = args.output_dir
    cfg.freeze()
    return cfg


def evaluate_heldout(cfg: CfgNode, model: torch.nn.Module) -> Dict[str, float]:
    """Point-benchmark mIoU (percent) of ``model``'s weights on the held-out images."""
    bench = sam_d2.SamClickBenchmark(
        sam=model, num_points=tuple(cfg.TEST.POINT_EVAL.NUM_POINTS), first_point="center"
    )
    evaluator = PointMIoUEvaluator(
        HELDOUT, num_points=tuple(cfg.TEST.POINT_EVAL.NUM_POINTS), distributed=False
    )
    results = inference_on_dataset(bench, build_point_eval_loader(cfg, HELDOUT), evaluator)
    return {k: float(v) for k, v in results["point_miou"].items() if k != "num_datasets"}


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def plot_curve(out: Path, metrics_file: Path, evals: List[Dict[str, Any]]) -> None:
    """Training loss (raw and smoothed) and held-out mIoU against iterations, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iters, losses = [], []
    with open(metrics_file) as f:
        for line in f:
            rec = json.loads(line)
            if "total_loss" in rec:
                iters.append(rec["iteration"])
                losses.append(rec["total_loss"])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.plot(iters, losses, lw=1)
    ax1.set_xlabel("iteration")
    ax1.set_ylabel("training loss (median of 20 iters)")
    ax1.set_title("11-round interactive training loss")
    ax1.grid(alpha=0.3)
    x = [e["iteration"] for e in evals]
    for key in [k for k in evals[0] if k.startswith("mIoU@")]:
        ax2.plot(x, [e[key] for e in evals], marker="o", label=f"held-out {key}")
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("mIoU (%) on 50 held-out BSDS500 images")
    ax2.set_title("point benchmark (centre clicks)")
    ax2.set_ylim(0, 100)
    ax2.grid(alpha=0.3)
    ax2.legend()
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)


class DemoTrainer(Trainer):
    """sam_d2's Trainer whose only evaluation is the held-out point benchmark (results kept in
    ``self.evaluations`` and written to ``OUTPUT_DIR/results.json`` after each run)."""

    def __init__(self, cfg: CfgNode, eval_period: int) -> None:
        self.eval_period = eval_period
        self.evaluations: List[Dict[str, Any]] = []
        super().__init__(cfg)

    def build_hooks(self) -> List[hooks.HookBase]:
        kept = [h for h in super().build_hooks() if not isinstance(h, hooks.EvalHook)]
        return kept + [hooks.EvalHook(self.eval_period, self.run_eval)]

    def run_eval(self) -> Dict[str, float]:
        start = time.perf_counter()
        res = evaluate_heldout(self.cfg, self.model)
        # iterations done: the hook runs after step ``iter`` or, at the end, with iter = max_iter
        it = min(self.iter + 1, self.max_iter) if self.evaluations else 0
        self.evaluations.append({"iteration": it, **res, "eval_s": time.perf_counter() - start})
        logger.info(f"held-out point benchmark at iteration {it}: {res}")
        out = Path(self.cfg.OUTPUT_DIR)
        write_json(out / "results.json", {"evaluations": self.evaluations})
        return {f"heldout/{k}": v for k, v in res.items()}


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.num_threads)
    out = Path(args.output_dir)
    if args.plot_only:
        evals = json.loads((out / "results.json").read_text())["evaluations"]
        plot_curve(out / "learning_curve.png", out / "metrics.json", evals)
        return 0
    out.mkdir(parents=True, exist_ok=True)
    setup_logger(str(out), name="sam_d2")
    setup_logger(str(out), name="detectron2")
    setup_logger(str(out), name=logger.name)
    register_bsds500_regions(args.data_root, args.min_area_ratio)
    cfg = setup(args)
    seed_all_rng(cfg.SEED)  # initial weights, data order and prompt sampling are reproducible
    trainer = DemoTrainer(cfg, args.eval_period)
    trainer.resume_or_load(resume=False)
    trainer.run_eval()  # the untrained model
    start = time.perf_counter()
    trainer.train()
    evals = trainer.evaluations
    first, last = evals[0], evals[-1]
    summary = {
        "evaluations": evals,
        "config": args.config_file,
        "opts": args.opts,
        "train_wall_s_including_evals": time.perf_counter() - start,
        "before": first,
        "after": last,
    }
    write_json(out / "results.json", summary)
    plot_curve(out / "learning_curve.png", out / "metrics.json", evals)
    logger.info(
        "held-out mIoU@1 %.1f -> %.1f, mIoU@5 %.1f -> %.1f; curve in %s",
        first.get("mIoU@1", float("nan")),
        last.get("mIoU@1", float("nan")),
        first.get("mIoU@5", float("nan")),
        last.get("mIoU@5", float("nan")),
        out / "learning_curve.png",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
