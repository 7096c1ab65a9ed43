#!/usr/bin/env python
"""Speed of sam_d2's SAM-family models beside their official packages, same weights, same run.

    python tools/benchmark_families.py --variants vit_t hq_vit_b sam2.1_hiera_t --device cpu
    python tools/benchmark_families.py --device cuda --iters 10 --image path/to/image.jpg

For each variant (MobileSAM "vit_t": package ``mobilesam-mirror``; HQ-SAM "hq_vit_b/l/h":
``segment-anything-hq``; SAM 2.1 "sam2.1_hiera_t/s/b+/l": ``sam2``, its ``SAM2ImagePredictor``)
both models get the same random weights and the same image, and the script prints the median time
of

    encoder   ``set_image`` of each implementation's predictor (resize, normalise, encode), img/s
    decoder   --prompts single-point prompts in one call, already in the predictor's input frame
              (``predict_torch``; ``SAM2ImagePredictor._predict``, its batched equivalent):
              decode and upsample to the image size, prompts/s

with the ours/official ratio (higher is faster). An official package that is not installed is
skipped. No pretrained weights are needed.
"""

import argparse
import time
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch
from PIL import Image

import sam_d2
from sam_d2.utils.cli import HelpFormatter
from sam_d2.utils.random_weights import randomize_state_dict

OFFICIAL = {  # variant -> (package, registry name or sam2 config)
    "vit_t": ("mobile_sam", "vit_t"),
    "hq_vit_b": ("segment_anything_hq", "vit_b"),
    "hq_vit_l": ("segment_anything_hq", "vit_l"),
    "hq_vit_h": ("segment_anything_hq", "vit_h"),
    **{
        f"sam2.1_hiera_{size}": ("sam2", f"configs/sam2.1/sam2.1_hiera_{size}.yaml")
        for size in ("t", "s", "b+", "l")
    },
}


def _median_seconds(fn: Callable[[], Any], device: str, iters: int) -> float:
    """Median wall time of ``fn`` over ``iters`` runs after one warm-up run."""
    times = []
    for i in range(iters + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def _official(variant: str) -> Tuple[torch.nn.Module, Callable[[torch.nn.Module], Any]]:
    """The official model of a variant (random init) and its predictor class."""
    package, name = OFFICIAL[variant]
    if package == "sam2":
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        return build_sam2(name, ckpt_path=None, device="cpu"), SAM2ImagePredictor
    official_pkg = __import__(package)
    return official_pkg.sam_model_registry[name](), official_pkg.SamPredictor


def _models(variant: str, device: str) -> Tuple[Any, Any, Callable[[torch.nn.Module], Any]]:
    """(ours, official, official predictor class) with the same random weights, in eval mode."""
    official, predictor_cls = _official(variant)
    state = randomize_state_dict(official.state_dict())
    for key, value in state.items():  # BatchNorm variances must stay positive
        if key.endswith("running_var"):
            state[key] = value.abs() + 0.5
    official.load_state_dict(state)
    ours = sam_d2.build_sam(variant)
    ours.load_state_dict(state)  # SAM 2's official keys are adopted by the model's load hook
    return ours.to(device).eval(), official.to(device).eval(), predictor_cls


def _point_decoding(predictor: Any, points: np.ndarray, hw: Tuple[int, int], device: str):
    """A call decoding N single-point prompts ((N, 2) original pixels) in one batch, the points
    mapped into the predictor's input frame beforehand."""
    labels = torch.ones(len(points), 1, dtype=torch.int, device=device)
    if hasattr(predictor, "predict_torch"):  # SAM's API: sam_d2, mobile_sam, segment_anything_hq
        coords = predictor.transform.apply_coords(points, hw)
        coords = torch.as_tensor(coords, dtype=torch.float, device=device)[:, None]
        return lambda: predictor.predict_torch(coords, labels)
    coords = torch.as_tensor(points, dtype=torch.float, device=device)  # SAM2ImagePredictor
    coords = predictor._transforms.transform_coords(coords, normalize=True, orig_hw=hw)[:, None]
    return lambda: predictor._predict(coords, labels)


def bench(variant: str, image: np.ndarray, device: str, iters: int, prompts: int) -> Dict:
    ours, official, predictor_cls = _models(variant, device)
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    row: Dict[str, float] = {}
    for impl, predictor in (
        ("ours", sam_d2.SamPredictor(ours)),
        ("official", predictor_cls(official)),
    ):
        row[f"encoder_{impl}"] = 1.0 / _median_seconds(
            lambda p=predictor: p.set_image(image), device, iters
        )
        points = np.stack([rng.uniform(0, w, prompts), rng.uniform(0, h, prompts)], axis=1)
        with torch.no_grad():
            decode = _point_decoding(predictor, points, (h, w), device)
            row[f"decoder_{impl}"] = prompts / _median_seconds(decode, device, iters)
    return row


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--variants", nargs="+", default=sorted(OFFICIAL), choices=sorted(OFFICIAL))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=3, help="timed runs after one warm-up")
    parser.add_argument("--prompts", type=int, default=64, help="point prompts per decoder call")
    parser.add_argument(
        "--image", default="../shared/data/sam_images/truck.jpg", help="RGB image file"
    )
    args = parser.parse_args(argv)
    image = np.array(Image.open(args.image).convert("RGB"))
    print(f"device {args.device}, image {image.shape[1]}x{image.shape[0]}, {args.iters} iters")
    header = ["variant", "encoder img/s: ours / official (ratio)"]
    header.append("decoder prompts/s: ours / official (ratio)")
    print("| " + " | ".join(header) + " |")
    print("| --- | --- | --- |")
    for variant in args.variants:
        try:
            r = bench(variant, image, args.device, args.iters, args.prompts)
        except ImportError as e:
            print(f"| {variant} | skipped: {e} | |")
            continue
        cells = [
            f"{r[f'{k}_ours']:.3g} / {r[f'{k}_official']:.3g} "
            f"({r[f'{k}_ours'] / r[f'{k}_official']:.2f}x)"
            for k in ("encoder", "decoder")
        ]
        print(f"| {variant} | {cells[0]} | {cells[1]} |", flush=True)


if __name__ == "__main__":
    main()
