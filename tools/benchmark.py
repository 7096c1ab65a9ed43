#!/usr/bin/env python
"""Speed and memory of sam_d2 beside the official segment-anything, same weights, same run.

    python tools/benchmark.py --variant vit_b --device cpu --dtype fp32
    python tools/benchmark.py --variant vit_h --device cuda --dtype bf16 --batch-size 4 --amg

Measures, for each implementation in its own fresh process (so peak memory is its own):
    encoder  images/s  (batch of --batch-size 1024x1024 images)
    decoder  prompts/s (--prompts single-point prompts decoded against one embedding)
    amg      s/image   (automatic mask generation, 32x32 grid, with --amg)
and prints ours/official ratios. Weights are random (no pretrained weights are needed for
timing) and identical in both processes. The official package (``pip install
segment-anything==1.0``) is optional; without it only sam_d2 is measured.
"""

import argparse
import json
import multiprocessing as mp
import queue as queue_module
import resource
import sys
import time
from typing import Any, Callable, Dict, List

import numpy as np
import torch

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _timed(fn: Callable[[], Any], device: str, warmup: int, iters: int) -> float:
    """Median seconds of ``fn`` over ``iters`` runs after ``warmup`` runs."""
    times = []
    for i in range(warmup + iters):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def _build(impl: str, variant: str, device: str):
    """Model of ``impl`` ("sam_d2" or "official") with the shared random weights."""
    from segment_anything import sam_model_registry

    from sam_d2 import build_sam
    from sam_d2.checkpoint import convert_official_state_dict
    from sam_d2.utils.random_weights import randomize_state_dict

    with torch.device("meta"):
        layout = sam_model_registry[variant]().state_dict()
    shapes = {k: torch.empty(v.shape, dtype=v.dtype) for k, v in layout.items()}
    state = randomize_state_dict(shapes)
    if impl == "official":
        model = sam_model_registry[variant]()
        model.load_state_dict(state)
    else:
        model = build_sam(variant)
        model.load_state_dict(convert_official_state_dict(state))
    return model.to(device).eval()


def _measure(impl: str, args: argparse.Namespace, queue: "mp.Queue") -> None:
    """Run in a child process: time one implementation and report through ``queue``."""
    torch.manual_seed(0)
    device, dtype = args.device, DTYPES[args.dtype]
    model = _build(impl, args.variant, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    autocast = torch.autocast(device, dtype=dtype, enabled=dtype is not None)
    images = torch.randn(args.batch_size, 3, 1024, 1024, device=device)
    result: Dict[str, float] = {}
    with torch.inference_mode(), autocast:
        encode = (
            (lambda: model.image_encoder(images))
            if impl == "official"
            else (lambda: model.encode(images))
        )
        result["encoder_images_per_s"] = args.batch_size / _timed(
            encode, device, args.warmup, args.iters
        )
        embedding = encode()[:1]
        coords = torch.rand(args.prompts, 1, 2, device=device) * 1024
        labels = torch.ones(args.prompts, 1, dtype=torch.int, device=device)

        def decode() -> Any:
            if impl == "official":
                sparse, dense = model.prompt_encoder((coords, labels), None, None)
                return model.mask_decoder(
                    embedding, model.prompt_encoder.get_dense_pe(), sparse, dense, True
                )
            return model.decode(embedding, coords, labels, multimask_output=True)

        result["decoder_prompts_per_s"] = args.prompts / _timed(
            decode, device, args.warmup, args.iters
        )
    if args.amg:
        result["amg_s_per_image"] = _time_amg(impl, model, args)
    if device == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    else:
        result["peak_memory_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    queue.put(result)


def _time_amg(impl: str, model: torch.nn.Module, args: argparse.Namespace) -> float:
    """Seconds per image of automatic mask generation at the default 32x32 grid."""
    from PIL import Image

    image = np.array(Image.open(args.image).convert("RGB"))
    if impl == "official":
        from segment_anything import SamAutomaticMaskGenerator as Generator
    else:
        from sam_d2.automatic import AutomaticMaskGenerator as Generator
    generator = Generator(model, points_per_batch=args.points_per_batch)
    dtype = DTYPES[args.dtype]
    with torch.autocast(args.device, dtype=dtype, enabled=dtype is not None):
        return _timed(lambda: generator.generate(image), args.device, 0, args.amg_iters)


def run(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Measure each available implementation in a fresh process; return one row each."""
    impls = ["sam_d2"]
    try:
        import segment_anything  # noqa: F401

        impls.append("official")
    except ImportError:
        print("segment-anything is not installed: measuring sam_d2 only", file=sys.stderr)
    ctx = mp.get_context("spawn")
    rows = []
    for impl in impls:
        queue = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(impl, args, queue))
        proc.start()
        result = None
        while result is None:
            try:
                result = queue.get(timeout=5)
            except queue_module.Empty:
                if not proc.is_alive():
                    msg = f"benchmark of {impl} failed (exit code {proc.exitcode})"
                    raise RuntimeError(msg) from None
        proc.join()
        rows.append({"impl": impl, **result})
    return rows


def _report(rows: List[Dict[str, Any]], args: argparse.Namespace) -> str:
    device = (
        torch.cuda.get_device_name() if args.device == "cuda" else f"CPU x{torch.get_num_threads()}"
    )
    lines = [
        f"{args.variant} | {device} | {args.dtype} | encoder batch {args.batch_size} | "
        f"{args.prompts} prompts/decoder call | torch {torch.__version__}",
        f"{'impl':<10}{'enc img/s':>12}{'dec prompts/s':>16}{'amg s/img':>12}{'peak GiB':>11}",
    ]
    for r in rows:
        lines.append(
            f"{r['impl']:<10}{r['encoder_images_per_s']:>12.3f}{r['decoder_prompts_per_s']:>16.1f}"
            f"{r.get('amg_s_per_image', float('nan')):>12.2f}{r['peak_memory_gib']:>11.2f}"
        )
    if len(rows) == 2:
        ours, ref = rows
        ratio = lambda k: ours[k] / ref[k]  # noqa: E731
        amg = (ref["amg_s_per_image"] / ours["amg_s_per_image"]) if args.amg else float("nan")
        lines.append(
            f"{'speed-up':<10}{ratio('encoder_images_per_s'):>11.2f}x"
            f"{ratio('decoder_prompts_per_s'):>15.2f}x{amg:>11.2f}x"
            f"{ours['peak_memory_gib'] / ref['peak_memory_gib']:>10.2f}x (memory ratio)"
        )
    return "\n".join(lines)


def parse_args(argv: List[str] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--batch-size", type=int, default=1, help="images per encoder call")
    parser.add_argument("--prompts", type=int, default=64, help="prompts per decoder call")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--amg", action="store_true", help="also time automatic mask generation")
    parser.add_argument("--amg-iters", type=int, default=1)
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--image", default="../shared/data/sam_images/dog.jpg")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    if args.dtype == "fp16" and args.device == "cpu":
        parser.error("fp16 autocast is not supported on CPU; use fp32 or bf16")
    return args


def main() -> None:
    args = parse_args()
    rows = run(args)
    print(_report(rows, args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
