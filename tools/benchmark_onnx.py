#!/usr/bin/env python
"""onnxruntime (CPU) vs torch (CPU) for SAM's encoder and decoder, speed and agreement.

    python tools/benchmark_onnx.py --variant vit_b --out onnx_bench/ --threads 2
    python tools/benchmark_onnx.py --variant vit_b --out onnx_bench/ --json results.json

Exports the model once into ``--out`` with fully random weights (``--seed``; a later run reuses
the files when their weights fingerprint matches, so an interrupted run resumes), then on a real
image (``--image``, default ``../shared/data/sam_images/truck.jpg``) measures the median of
``--iters`` runs after one warm-up, both runtimes limited to ``--threads`` threads:

    encoder   set_image: resize + normalise + pad + image encoder, ms/image
    decoder   predict, one click (masks upscaled to the original size), ms/prompt
    int8      the same with the dynamically quantised decoder

and the agreement (onnxruntime vs torch): max |d embedding|, max |d low-res logit|, max |d IoU|,
fraction of mask pixels agreeing; for int8 vs fp32 the same over clicks on a grid.
"""

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from sam_d2.utils.cli import HelpFormatter

logger = logging.getLogger("benchmark_onnx")
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO_ROOT.parent / "shared" / "data" / "sam_images" / "truck.jpg"


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--variant", default="vit_b", help="vit_b | vit_l | vit_h")
    p.add_argument("--out", required=True, help="folder for the exported files (created)")
    p.add_argument("--image", default=str(DEFAULT_IMAGE), help="a real RGB image")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both")
    p.add_argument("--iters", type=int, default=5, help="timed runs (median) after a warm-up")
    p.add_argument("--clicks", type=int, default=16, help="clicks for the int8 accuracy figures")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    p.add_argument("--json", default="", help="also write the results to this JSON file")
    return p.parse_args(argv)


def _median_ms(fn: Callable[[], Any], iters: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def _export_once(sam, out: Path, variant: str) -> Dict[str, Path]:
    """Export to ``out`` unless files of these very weights are already there."""
    import onnx

    from sam_d2.export import export_sam, weights_fingerprint
    from sam_d2_onnx import metadata as md

    paths = {k: out / f"{k}.onnx" for k in ("encoder", "decoder", "decoder_int8")}
    fingerprint = weights_fingerprint(sam)
    if all(p.is_file() for p in paths.values()):
        metas = [onnx.load(p, load_external_data=False).metadata_props for p in paths.values()]
        if all({m.key: m.value for m in meta}.get(md.KEY_WEIGHTS) == fingerprint for meta in metas):
            logger.info("reusing the export in %s (weights %s)", out, fingerprint)
            return paths
    start = time.perf_counter()
    paths = export_sam(sam, out, variant, quantize=True)
    logger.info("exported in %.0f s", time.perf_counter() - start)
    return paths


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a == b).mean())


def run(args: argparse.Namespace) -> Dict[str, Any]:
    import torch
    from PIL import Image

    from sam_d2 import SamPredictor, build_sam
    from sam_d2.utils.random_weights import randomize_state_dict
    from sam_d2_onnx import SamOnnxPredictor

    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    image = np.array(Image.open(args.image).convert("RGB"))
    sam = build_sam(args.variant).eval()
    with torch.no_grad():
        sam.load_state_dict(randomize_state_dict(sam.state_dict(), args.seed))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = _export_once(sam, out, args.variant)

    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    p_torch = SamPredictor(sam)
    p_onnx = SamOnnxPredictor(str(paths["encoder"]), str(paths["decoder"]), session_options=so)
    p_int8 = SamOnnxPredictor(str(paths["encoder"]), str(paths["decoder_int8"]), session_options=so)

    h, w = image.shape[:2]
    click = dict(point_coords=np.array([[w * 0.45, h * 0.55]]), point_labels=np.array([1]))
    res: Dict[str, Any] = {
        "variant": args.variant,
        "image": str(args.image),
        "image_size": [h, w],
        "threads": args.threads,
        "iters": args.iters,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
    }
    with torch.inference_mode():
        res["encoder_ms"] = {
            "torch": _median_ms(lambda: p_torch.set_image(image), args.iters),
            "onnxruntime": _median_ms(lambda: p_onnx.set_image(image), args.iters),
        }
        p_int8.set_image(image)
        res["decoder_ms"] = {
            "torch": _median_ms(lambda: p_torch.predict(**click), args.iters),
            "onnxruntime": _median_ms(lambda: p_onnx.predict(**click), args.iters),
            "onnxruntime_int8": _median_ms(lambda: p_int8.predict(**click), args.iters),
        }
        m1, i1, l1 = p_onnx.predict(**click)
        m2, i2, l2 = p_torch.predict(**click)
        emb = p_torch.get_image_embedding().numpy()
    res["fp32_vs_torch"] = {
        "max_abs_embedding": float(np.abs(p_onnx.get_image_embedding() - emb).max()),
        "max_abs_low_res_logit": float(np.abs(l1 - l2).max()),
        "max_abs_iou": float(np.abs(i1 - i2).max()),
        "mask_pixel_agreement": _agreement(m1, m2),
    }
    res["int8_vs_fp32"] = _int8_loss(p_onnx, p_int8, args.clicks)
    return res


def _int8_loss(p_fp32, p_int8, clicks: int) -> Dict[str, float]:
    """int8 vs fp32 decoder over single clicks on a grid (3 masks each)."""
    h, w = p_fp32.original_size
    side = max(1, int(round(clicks**0.5)))
    ys, xs = np.meshgrid((np.arange(side) + 0.5) * h / side, (np.arange(side) + 0.5) * w / side)
    agree: List[float] = []
    dlogit: List[float] = []
    diou: List[float] = []
    miou: List[float] = []
    for x, y in zip(xs.ravel(), ys.ravel()):
        click = dict(point_coords=np.array([[x, y]]), point_labels=np.array([1]))
        m1, i1, l1 = p_fp32.predict(**click)
        m2, i2, l2 = p_int8.predict(**click)
        agree.append(_agreement(m1, m2))
        dlogit.append(float(np.abs(l1 - l2).max() / max(np.abs(l1).max(), 1e-6)))
        diou.append(float(np.abs(i1 - i2).max()))
        inter = (m1 & m2).sum((1, 2))
        union = np.maximum((m1 | m2).sum((1, 2)), 1)
        miou.append(float((inter / union).mean()))
    return {
        "clicks": len(agree),
        "mask_pixel_agreement_mean": float(np.mean(agree)),
        "mask_pixel_agreement_min": float(np.min(agree)),
        "mask_iou_mean": float(np.mean(miou)),
        "max_rel_low_res_logit": float(np.max(dlogit)),
        "max_abs_iou_prediction": float(np.max(diou)),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("benchmark_onnx").setLevel(logging.INFO)
    args = parse_args(argv)
    if not Path(args.image).is_file():
        print(f"error: {args.image}: image not found", file=sys.stderr)
        return 2
    res = run(args)
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        tmp = Path(args.json).with_suffix(".tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
