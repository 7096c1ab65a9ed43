"""Timing of automatic mask generation: sam_d2's generator beside the official one.

``tools/benchmark.py`` calls :func:`benchmark_amg` with an :class:`AutomaticMaskGenerator` and a
``segment_anything.SamAutomaticMaskGenerator`` built on the same weights (any object with a
``generate(image)`` method works as either).
"""

import statistics
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

__all__ = ["time_generate", "benchmark_amg"]


def _sync(device: Optional[torch.device]) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_of(generator: Any) -> Optional[torch.device]:
    if hasattr(generator, "device"):  # ours
        return torch.device(generator.device)
    predictor = getattr(generator, "predictor", None)  # the official generator
    return None if predictor is None else torch.device(predictor.device)


def time_generate(
    generate: Callable[[np.ndarray], List[Dict[str, Any]]],
    image: np.ndarray,
    repeats: int = 3,
    warmup: int = 1,
    device: Optional[torch.device] = None,
) -> Dict[str, Any]:
    """Wall-clock seconds of ``generate(image)`` (CUDA synchronised around every call).

    Returns:
        {"seconds": [per repeat], "median_s", "min_s", "num_masks"}.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    records: List[Dict[str, Any]] = []
    for _ in range(warmup):
        records = generate(image)
    seconds = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        records = generate(image)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return {
        "seconds": seconds,
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "num_masks": len(records),
    }


def benchmark_amg(
    ours_generator: Any, ref_generator: Any, image: np.ndarray, repeats: int = 3, warmup: int = 1
) -> Dict[str, Any]:
    """Seconds per image of both generators on one image, and the speed-up of ours.

    Args:
        ours_generator: an :class:`~sam_d2.automatic.AutomaticMaskGenerator`.
        ref_generator: e.g. ``segment_anything.SamAutomaticMaskGenerator`` on the same weights.
        image: (H, W, 3) uint8 RGB.
        repeats: timed calls per generator (median reported).
        warmup: untimed calls first (allocator / cuDNN warm-up).

    Returns:
        {"ours": time_generate(...), "reference": time_generate(...),
         "ours_s_per_image", "reference_s_per_image", "speedup" (reference / ours medians)}.
    """
    ours = time_generate(
        ours_generator.generate, image, repeats, warmup, _device_of(ours_generator)
    )
    ref = time_generate(ref_generator.generate, image, repeats, warmup, _device_of(ref_generator))
    return {
        "ours": ours,
        "reference": ref,
        "ours_s_per_image": ours["median_s"],
        "reference_s_per_image": ref["median_s"],
        "speedup": ref["median_s"] / ours["median_s"],
    }
