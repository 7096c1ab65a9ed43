#!/usr/bin/env python
"""Segment everything in a set of images with SAM's automatic generator (SA-1B's full-auto stage).

    python tools/automatic_masks.py photos/ --output masks/ \\
        --config-file configs/sa1b_auto.yaml --checkpoint sam_vit_h_4b8939.pth --num-gpus 8
    python tools/automatic_masks.py photos/ more/*.jpg one.png --output masks/ \\
        --variant vit_b --checkpoint sam_vit_b_01ec64.pth --device cpu --overlay

Inputs are image files, folders (their images, sorted; --recursive descends) or glob patterns.
Every image gets <output>/<name>.json in the SA-1B layout (one JSON per image):

    {"image": {"image_id", "width", "height", "file_name"},
     "annotations": [{"id", "segmentation": COCO RLE (counts as str), "bbox" (XYWH), "area",
                      "predicted_iou", "stability_score", "crop_box", "point_coords"}, ...]}

<name> and "file_name" are the image's path relative to the folder (or glob base) that named it;
"image_id" numbers the sorted image list from 1. With --overlay, <output>/overlays/<name>.png shows
the masks. Writing the JSON into the image folder itself (--output = the input folder) gives
SA-1B's own layout, sa_1.jpg beside sa_1.json.

Scale: the images are shared out over every process of Detectron2's launch (--num-gpus per
machine, --num-machines, --machine-rank, --dist-url; on CPU, --num-gpus counts processes), always
the same way. Rerunning the same command resumes: finished images are skipped, and files are only
ever renamed into place, so a killed job never leaves half a file. A run with other settings or
images into the same --output is refused. Multi-machine runs need --output on a shared file system.

Generator settings come from SAM_AUTO of --config-file (configs/sa1b_auto.yaml: the paper's SA-1B
setting), or the official defaults without one; the --points-per-side ... flags override them.
Images that cannot be read (or that the generator refuses) are named and skipped: exit status 1,
and a rerun retries them. Bad arguments, a missing or
unfitting checkpoint or output folder stop the run with one line and exit status 2.
"""

import argparse
import logging
import os
import sys
import tempfile
import warnings
from typing import List, Optional, Sequence

# fvcore (imported by Detectron2) scripts a function at import time; keep the deprecation notice
# out of every run's output.
warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)

import torch  # noqa: E402
from detectron2.config import CfgNode, get_cfg  # noqa: E402
from detectron2.engine import launch  # noqa: E402
from torch.multiprocessing import ProcessExitedException  # noqa: E402

import sam_d2  # noqa: E402, F401  (registers the meta-architectures)
from sam_d2.config import add_sam_config  # noqa: E402
from sam_d2.engine.automatic_stage import (  # noqa: E402
    OVERLAY_DIR,
    STATE_DIR,
    StageError,
    StageJob,
    collect_images,
    generator_kwargs,
    read_reports,
    setup_logging,
    stage_worker,
)
from sam_d2.modeling.families import FAMILY_VARIANTS  # noqa: E402
from sam_d2.modeling.image_encoder import ENCODER_PRESETS  # noqa: E402
from sam_d2.utils.cli import HelpFormatter  # noqa: E402

PROG = "automatic_masks.py"
# SAM's three encoders, then the other families (MobileSAM "vit_t", HQ-SAM "hq_vit_*").
VARIANTS = tuple(sorted(ENCODER_PRESETS)) + tuple(sorted(FAMILY_VARIANTS))
DEFAULT_VARIANT = "vit_h"

# Flag -> (SAM_AUTO key, type, what it does).
GENERATOR_FLAGS = {
    "points_per_side": (int, "grid points per image side on the whole image"),
    "points_per_batch": (int, "point prompts decoded at once"),
    "pred_iou_thresh": (float, "keep masks whose predicted IoU is above this (0: off)"),
    "stability_score_thresh": (float, "keep masks whose stability reaches this (0: off)"),
    "stability_score_offset": (float, "logit offset of the stability score"),
    "box_nms_thresh": (float, "box IoU of the NMS within a crop"),
    "crop_n_layers": (int, "crop layers after the whole image (layer k: 2**k x 2**k crops)"),
    "crop_nms_thresh": (float, "box IoU of the NMS across crops"),
    "crop_overlap_ratio": (float, "overlap of layer-1 crops, fraction of the short side"),
    "crop_n_points_downscale_factor": (int, "layer k uses points-per-side / factor**k"),
    "min_mask_region_area": (int, "fill holes / remove islands below this many pixels (0: off)"),
    "max_mask_area_ratio": (float, "drop masks covering at least this image fraction (0: off)"),
    "encoder_batch_size": (int, "crops embedded per encoder call"),
}


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line arguments; every option's help states its default."""
    defaults = get_cfg()
    add_sam_config(defaults)
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--output", required=True, help="folder of the JSON files (created)")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument(
        "--config-file", default="", help="sam_d2 config: model and SAM_AUTO (default: none)"
    )
    p.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="config overrides KEY VALUE ... (last on the line)",
    )
    p.add_argument(
        "--variant",
        choices=VARIANTS,
        help=f"SAM encoder (default: MODEL.SAM.VARIANT of --config-file, else {DEFAULT_VARIANT})",
    )
    p.add_argument(
        "--checkpoint",
        default="",
        help="SAM weights, official .pth or sam_d2 (default: MODEL.WEIGHTS of --config-file, "
        "else none: random weights)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda if available, else cpu")
    p.add_argument(
        "--overlay", action="store_true", help=f"also write <output>/{OVERLAY_DIR}/<name>.png"
    )
    p.add_argument("--num-gpus", type=int, default=1, help="processes per machine")
    p.add_argument("--num-machines", type=int, default=1, help="machines")
    p.add_argument("--machine-rank", type=int, default=0, help="rank of this machine")
    p.add_argument(
        "--dist-url",
        default="auto",
        help="tcp://HOST:PORT of machine 0 (default: auto, a free local port; one machine only)",
    )
    p.add_argument(
        "--log-period",
        type=float,
        default=30.0,
        help="seconds between progress lines",
    )
    group = p.add_argument_group(
        "generator settings (default: SAM_AUTO of --config-file, else the value shown)"
    )
    for name, (kind, what) in GENERATOR_FLAGS.items():
        default = defaults.SAM_AUTO[name.upper()]
        group.add_argument(
            "--" + name.replace("_", "-"), type=kind, help=f"{what} (default: {default:g})"
        )
    return p.parse_args(argv)


def _config(args: argparse.Namespace) -> CfgNode:
    """The run's config: --config-file and --opts, then the flags on top."""
    cfg = get_cfg()
    add_sam_config(cfg)
    if args.config_file:
        if not os.path.isfile(args.config_file):
            raise StageError(f"--config-file {args.config_file}: no such file")
        try:
            cfg.merge_from_file(args.config_file)
        except Exception as e:  # yacs / yaml raise KeyError, ValueError, AssertionError, ...
            raise StageError(f"{args.config_file}: {_reason(e)}") from e
    else:
        cfg.MODEL.META_ARCHITECTURE = "PromptableSam"
        cfg.MODEL.SAM.VARIANT = DEFAULT_VARIANT
    try:
        cfg.merge_from_list(args.opts)
    except Exception as e:
        raise StageError(f"--opts: {_reason(e)}") from e
    if args.variant:
        cfg.MODEL.SAM.VARIANT = args.variant
    if cfg.MODEL.SAM.VARIANT not in VARIANTS + ("custom",):
        raise StageError(
            f"unknown SAM variant {cfg.MODEL.SAM.VARIANT!r}; known: {', '.join(VARIANTS)}, custom"
        )
    if args.checkpoint:
        cfg.MODEL.WEIGHTS = args.checkpoint
    weights = cfg.MODEL.WEIGHTS
    if weights and "://" not in weights and not os.path.isfile(weights):
        raise StageError(f"{weights}: checkpoint file not found")
    for name in GENERATOR_FLAGS:
        value = getattr(args, name)
        if value is not None:
            cfg.SAM_AUTO[name.upper()] = value
    cfg.MODEL.DEVICE = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    generator_kwargs(cfg)  # validates the settings
    cfg.freeze()
    return cfg


def _reason(e: Exception) -> str:
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e) or type(e).__name__


def _check_launch(args: argparse.Namespace, device: str) -> None:
    if args.num_gpus < 1 or args.num_machines < 1:
        raise StageError("--num-gpus and --num-machines must be >= 1")
    if not 0 <= args.machine_rank < args.num_machines:
        raise StageError(f"--machine-rank must be in [0, {args.num_machines - 1}]")
    if args.num_machines > 1 and args.dist_url == "auto":
        raise StageError("--dist-url auto works on one machine; give tcp://HOST:PORT of machine 0")
    if args.log_period <= 0:
        raise StageError("--log-period must be > 0")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise StageError("--device cuda: no CUDA device is available here; use --device cpu")
        if args.num_gpus > torch.cuda.device_count():
            raise StageError(
                f"--num-gpus {args.num_gpus}: this machine has {torch.cuda.device_count()} GPU(s)"
            )


def _make_output(output: str) -> None:
    try:
        os.makedirs(output, exist_ok=True)
    except OSError as e:
        raise StageError(f"--output {output}: cannot create the folder ({e.strerror})") from e
    if not os.access(output, os.W_OK | os.X_OK):
        raise StageError(f"--output {output}: the folder is not writable")


def prepare(args: argparse.Namespace) -> StageJob:
    """Check every argument and build the job, before any process starts.

    Raises:
        StageError: with the one line to show.
    """
    cfg = _config(args)
    _check_launch(args, cfg.MODEL.DEVICE)
    if os.path.isfile(args.output):
        raise StageError(f"--output {args.output} is a file; give a folder")
    exclude = [os.path.join(args.output, d) for d in (STATE_DIR, OVERLAY_DIR)]
    items = collect_images(args.inputs, args.recursive, exclude)
    _make_output(args.output)
    return StageJob(cfg, items, args.output, args.overlay, args.log_period)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the tool; returns the exit status (0 done, 1 images failed, 2 bad input)."""
    args = parse_args(argv)
    try:
        job = prepare(args)
    except StageError as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    setup_logging()
    # When one process fails, launch stops the others; that notice adds nothing to our line.
    logging.getLogger("torch.multiprocessing.spawn").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="automatic_masks-") as report_dir:
        job.report_dir, job.launcher_pid = report_dir, os.getpid()
        try:
            launch(
                stage_worker,
                args.num_gpus,
                num_machines=args.num_machines,
                machine_rank=args.machine_rank,
                dist_url=args.dist_url,
                args=(job,),
            )
        except (SystemExit, ProcessExitedException):
            pass  # the processes left their reason in report_dir
        errors, status = read_reports(report_dir)
    lines: List[str] = errors or ([] if status is not None else ["a process stopped early"])
    for line in lines:
        print(f"{PROG}: error: {line}", file=sys.stderr)
    return 2 if errors else 1 if status is None else status


if __name__ == "__main__":
    sys.exit(main())
