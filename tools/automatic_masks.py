#!/usr/bin/env python
"""Segment everything in a set of images with SAM's automatic mask generator.

    python tools/automatic_masks.py photos/ more/*.jpg one.png --output out/ \\
        --variant vit_h --checkpoint sam_vit_h_4b8939.pth --device cuda --overlay
    python tools/automatic_masks.py photos/ --output out/ \\
        --config-file configs/sam_proposals_lvis.yaml --opts MODEL.WEIGHTS sam_vit_h_4b8939.pth

Inputs are image files, folders (their images, sorted; ``--recursive`` descends) or glob
patterns. Every image gets ``<output>/<name>.json`` in the SA-1B layout::

    {"image": {"file_name", "height", "width"},
     "annotations": [{"id", "segmentation": COCO RLE (counts as str), "area", "bbox" (XYWH),
                      "predicted_iou", "stability_score", "point_coords", "crop_box"}, ...]}

and with ``--overlay`` a ``<name>_overlay.png`` with the masks painted over the image.
Grayscale, RGBA and 16-bit images are converted to RGB (``sam_d2.data.image_io``); images of any
size are fine (SAM resizes every crop to its input size; masks come back at full resolution).
Generator settings come from ``SAM_AUTO`` of ``--config-file`` (or the official defaults without
one); the ``--points-per-side`` ... flags override them. Unreadable images are reported by name
and skipped; the exit status is then 1.
"""

import argparse
import glob
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from sam_d2.automatic.generator import AutomaticMaskGenerator
from sam_d2.automatic.mask_set import MaskSet
from sam_d2.data.image_io import read_image_rgb

logger = logging.getLogger("automatic_masks")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

# CLI flag -> AutomaticMaskGenerator argument (all optional overrides).
GENERATOR_FLAGS = {
    "points_per_side": int,
    "points_per_batch": int,
    "pred_iou_thresh": float,
    "stability_score_thresh": float,
    "stability_score_offset": float,
    "box_nms_thresh": float,
    "crop_n_layers": int,
    "crop_nms_thresh": float,
    "crop_overlap_ratio": float,
    "crop_n_points_downscale_factor": int,
    "min_mask_region_area": int,
    "max_mask_area_ratio": float,
    "encoder_batch_size": int,
}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--output", required=True, help="folder for the JSON (and overlay) files")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--config-file", default="", help="sam_d2 yacs config (model + SAM_AUTO)")
    p.add_argument(
        "--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE"
    )
    p.add_argument("--variant", default="vit_h", help="vit_b | vit_l | vit_h (without a config)")
    p.add_argument("--checkpoint", default="", help="SAM weights (official .pth or sam_d2)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--overlay", action="store_true", help="also write <name>_overlay.png")
    for name, kind in GENERATOR_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=None)
    return p.parse_args(argv)


def collect_images(inputs: Sequence[str], recursive: bool = False) -> List[Path]:
    """Image paths named by files, folders and glob patterns (deduplicated, in input order).

    Raises:
        FileNotFoundError: an input matches nothing.
    """
    found: List[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            pattern = "**/*" if recursive else "*"
            matches = sorted(
                f for f in path.glob(pattern) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            )
            if not matches:
                raise FileNotFoundError(
                    f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})"
                )
        elif path.is_file():
            matches = [path]
        else:
            matches = sorted(
                Path(f) for f in glob.glob(item, recursive=recursive) if os.path.isfile(f)
            )
            if not matches:
                raise FileNotFoundError(f"{item}: no such file, folder or matching glob pattern")
        found.extend(matches)
    unique, seen = [], set()
    for f in found:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    return unique


def output_names(paths: Sequence[Path]) -> List[str]:
    """Output stems, unique even when two inputs share a file name (``name``, ``name_1``, ...)."""
    names, used = [], set()
    for p in paths:
        name, k = p.stem, 0
        while name in used:
            k += 1
            name = f"{p.stem}_{k}"
        used.add(name)
        names.append(name)
    return names


def build_generator(args: argparse.Namespace) -> AutomaticMaskGenerator:
    """Model + generator from ``--config-file`` or ``--variant``/``--checkpoint``."""
    overrides = {k: getattr(args, k) for k in GENERATOR_FLAGS if getattr(args, k) is not None}
    if args.config_file:
        from detectron2.config import get_cfg
        from detectron2.modeling import build_model

        import sam_d2  # noqa: F401  (registers the meta-architectures)
        from sam_d2.checkpoint import SamCheckpointer
        from sam_d2.config import add_sam_config
        from sam_d2.modeling.meta_arch.proposals import generator_kwargs_from_cfg

        cfg = get_cfg()
        add_sam_config(cfg)
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
        cfg.MODEL.DEVICE = args.device
        cfg.freeze()
        model = build_model(cfg)
        weights = args.checkpoint or cfg.MODEL.WEIGHTS
        if weights:
            SamCheckpointer(model).load(weights)
        kwargs = generator_kwargs_from_cfg(cfg)
    else:
        from sam_d2 import build_sam

        weights = args.checkpoint
        model = build_sam(args.variant, weights or None).to(args.device)
        kwargs = {}
    if not weights:
        logger.warning("no checkpoint given: SAM has random weights, its masks are meaningless")
    kwargs.update(overrides)
    kwargs["output_mode"] = "coco_rle"
    return AutomaticMaskGenerator(model.eval(), **kwargs)


def sa1b_record(path: Path, image: np.ndarray, masks: MaskSet) -> Dict[str, Any]:
    """The SA-1B style JSON document of one image."""
    annotations = masks.to_records("coco_rle")
    for i, ann in enumerate(annotations):
        ann["id"] = i
    return {
        "image": {"file_name": str(path), "height": image.shape[0], "width": image.shape[1]},
        "annotations": annotations,
    }


def overlay(image: np.ndarray, masks: MaskSet, alpha: float = 0.5, chunk: int = 16) -> np.ndarray:
    """The image with every mask painted in a random colour, largest first (small on top)."""
    out = image.astype(np.float32)
    rng = np.random.default_rng(0)
    colors = rng.integers(0, 256, size=(len(masks), 3)).astype(np.float32)
    order = torch.argsort(masks.areas, descending=True, stable=True)
    for start in range(0, len(order), chunk):
        idx = order[start : start + chunk]
        dense = masks.rles.decode(idx).cpu().numpy()
        for mask, color in zip(dense, colors[idx.cpu().numpy()]):
            out[mask] = (1 - alpha) * out[mask] + alpha * color
    return out.round().clip(0, 255).astype(np.uint8)


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        paths = collect_images(args.inputs, args.recursive)
    except FileNotFoundError as e:
        logger.error("%s", e)
        return 2
    # Local files of any size are welcome: SAM resizes each crop, and masks stay RLE-compressed.
    Image.MAX_IMAGE_PIXELS = None
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    generator = build_generator(args)
    failed: List[Tuple[Path, str]] = []
    for path, name in tqdm(list(zip(paths, output_names(paths))), desc="images", unit="img"):
        try:
            image = read_image_rgb(path)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            logger.error("cannot read image %s: %s", path, e)
            failed.append((path, str(e)))
            continue
        masks = generator.generate_mask_sets([image])[0]
        with open(out_dir / f"{name}.json", "w") as f:
            json.dump(sa1b_record(path, image, masks), f)
        if args.overlay:
            Image.fromarray(overlay(image, masks)).save(out_dir / f"{name}_overlay.png")
    done = len(paths) - len(failed)
    logger.info("wrote masks of %d image(s) to %s", done, out_dir)
    if failed:
        logger.error(
            "%d image(s) could not be read: %s", len(failed), ", ".join(str(p) for p, _ in failed)
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
