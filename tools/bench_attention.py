#!/usr/bin/env python
"""Attention with decomposed relative position bias: four exact formulations side by side.

    python tools/bench_attention.py --device cpu --dtypes fp32 bf16 --rounds 3

For a ViT global block (64x64 tokens) and its 14x14 windows (ViT-B: 12 heads of 64 channels)
it times, interleaved round by round so that a shared machine slows all of them alike:
    official  materialised logits + bias, softmax, @ v (segment-anything's formulation)
    bias      scaled_dot_product_attention with the materialised (heads, N, N) bias as mask
    folded    the bias folded into widened q/k (sam_d2.modeling.vit.folded_rel_pos_attention)
    chunked   the bias built per chunk of 1024 queries into one reused buffer
              (sam_d2.modeling.vit.chunked_bias_attention)
and prints the best time of each and its speed-up over "official", plus the largest deviation
from the fp32 "official" output. sam_d2's ViT uses "bias" below ``FOLD_MIN_TOKENS`` tokens
(windows) and on larger grids "chunked" in fp32 inference, "folded" otherwise (see
sam_d2/modeling/vit.py).
"""

import argparse
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from sam_d2.modeling.vit import (
    chunked_bias_attention,
    folded_rel_pos_attention,
    relative_position_bias,
)
from sam_d2.utils.cli import HelpFormatter

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: name -> (batch of windows, grid side) at a 1024-pixel input.
SHAPES = {"global 64x64": (1, 64), "windows 14x14": (25, 14)}


def official(q, k, v, th, tw, hw):
    b, heads, n, c = q.shape
    logits = (q * c**-0.5) @ k.transpose(-2, -1)
    logits = logits + relative_position_bias(q, th, tw, hw)
    return logits.softmax(dim=-1) @ v


def bias(q, k, v, th, tw, hw):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=relative_position_bias(q, th, tw, hw))


IMPLS: Dict[str, Callable] = {
    "official": official,
    "bias": bias,
    "folded": folded_rel_pos_attention,
    "chunked": chunked_bias_attention,
}


def run(
    device: str, dtype: torch.dtype, batch: int, side: int, heads: int, dim: int, rounds: int
) -> Dict[str, Tuple[float, float]]:
    """{impl: (best seconds, max abs deviation from fp32 official)}."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(batch, heads, side * side, dim, generator=g) for _ in range(3))
    th, tw = (0.2 * torch.randn(2 * side - 1, dim, generator=g) for _ in range(2))
    with torch.inference_mode():
        exact = official(q, k, v, th, tw, (side, side))
        args = [t.to(device, dtype) for t in (q, k, v, th, tw)]
        times: Dict[str, List[float]] = {name: [] for name in IMPLS}
        errors: Dict[str, float] = {}
        for r in range(rounds + 1):  # round 0 warms up
            for name, fn in IMPLS.items():
                if device == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                out = fn(*args, (side, side))
                if device == "cuda":
                    torch.cuda.synchronize()
                if r:
                    times[name].append(time.perf_counter() - start)
                errors[name] = (out.float().cpu() - exact).abs().max().item()
    return {name: (min(times[name]), errors[name]) for name in IMPLS}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (best one kept)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    print(f"{args.device} | torch {torch.__version__} | threads {torch.get_num_threads()}")
    for dname in args.dtypes:
        for shape, (batch, side) in SHAPES.items():
            res = run(
                args.device, DTYPES[dname], batch, side, args.heads, args.head_dim, args.rounds
            )
            base = res["official"][0]
            cells = [
                f"{name} {t * 1e3:8.1f} ms ({base / t:4.2f}x, err {e:.1e})"
                for name, (t, e) in res.items()
            ]
            print(f"{dname:<5}{shape:<15}" + "  ".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
