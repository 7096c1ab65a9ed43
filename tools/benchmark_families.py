#!/usr/bin/env python
"""Speed of sam_d2's SAM-family models beside their official packages, same weights, same run.

    python tools/benchmark_families.py --variants vit_t hq_vit_b --device cpu --iters 3
    python tools/benchmark_families.py --device cuda --iters 10 --image path/to/image.jpg

For each variant (MobileSAM "vit_t": package ``mobilesam-mirror``; HQ-SAM "hq_vit_b/l/h":
``segment-anything-hq``) both models get the same random weights and the same image, and the
script prints the median time of

    encoder   ``set_image`` of each implementation's predictor (resize, normalise, encode), img/s
    decoder   ``predict_torch`` with --prompts single-point prompts in one call (decode and
              upsample to the image size), prompts/s

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
from sam_d2.utils.random_weights import randomize_state_dict

OFFICIAL = {  # variant -> (package, registry name)
    "vit_t": ("mobile_sam", "vit_t"),
    "hq_vit_b": ("segment_anything_hq", "vit_b"),
    "hq_vit_l": ("segment_anything_hq", "vit_l"),
    "hq_vit_h": ("segment_anything_hq", "vit_h"),
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


def _models(variant: str, device: str) -> Tuple[Any, Any, Any]:
    """(ours, official, official package) with the same random weights, in eval mode."""
    package, name = OFFICIAL[variant]
    official_pkg = __import__(package)
    official = official_pkg.sam_model_registry[name]()
    state = randomize_state_dict(official.state_dict())
    for key, value in state.items():  # BatchNorm variances must stay positive
        if key.endswith("running_var"):
            state[key] = value.abs() + 0.5
    official.load_state_dict(state)
    ours = sam_d2.build_sam(variant)
    ours.load_state_dict(state)
    return ours.to(device).eval(), official.to(device).eval(), official_pkg


def bench(variant: str, image: np.ndarray, device: str, iters: int, prompts: int) -> Dict:
    ours, official, official_pkg = _models(variant, device)
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    row: Dict[str, float] = {}
    for impl, predictor in (
        ("ours", sam_d2.SamPredictor(ours)),
        ("official", official_pkg.SamPredictor(official)),
    ):
        row[f"encoder_{impl}"] = 1.0 / _median_seconds(
            lambda p=predictor: p.set_image(image), device, iters
        )
        points = np.stack([rng.uniform(0, w, prompts), rng.uniform(0, h, prompts)], axis=1)
        coords = torch.as_tensor(
            predictor.transform.apply_coords(points, (h, w)), dtype=torch.float, device=device
        )[:, None]
        labels = torch.ones(prompts, 1, dtype=torch.int, device=device)
        with torch.no_grad():
            row[f"decoder_{impl}"] = prompts / _median_seconds(
                lambda p=predictor, c=coords, lab=labels: p.predict_torch(c, lab), device, iters
            )
    return row


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
