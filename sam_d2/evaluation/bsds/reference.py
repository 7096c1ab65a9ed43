"""pyEdgeEval's port of the original BSDS matcher, for comparison only (benchmark tool, tests).

The original ``correspondPixels`` draws its sparse outlier connections from a clock-seeded global
C++ generator, so repeated runs differ by about 0.1% of matched pixels. To compare runs, the
generator is reseeded with a constant before every call through ``ctypes`` (the symbol is not
exported to Python). Benchmark results never go through this module: they use the exact,
deterministic :class:`~sam_d2.evaluation.bsds.matching.BoundaryMatcher`.
"""

import ctypes
import functools
import importlib
from typing import Callable, Tuple

import numpy as np

__all__ = ["pyedgeeval_matcher"]

_SEED = 0x5EED  # any non-zero value; 0 would mean "seed from the clock"


@functools.lru_cache(maxsize=None)
def _reseed() -> Callable[[], None]:
    """A function reseeding pyEdgeEval's global C++ ``Random::rand`` with a constant."""
    module = importlib.import_module("pyEdgeEval._lib.correspond_pixels")
    try:
        lib = ctypes.CDLL(module.__file__)
        rand = ctypes.c_char.in_dll(lib, "_ZN6Random4randE")
        # Random::reseed(u_int64_t): "m" = unsigned long (Linux), "y" = unsigned long long.
        symbol = next(s for s in ("_ZN6Random6reseedEm", "_ZN6Random6reseedEy") if hasattr(lib, s))
    except (OSError, ValueError, StopIteration) as e:
        raise RuntimeError(f"cannot reseed pyEdgeEval's matcher in {module.__file__}: {e}") from e
    reseed = getattr(lib, symbol)
    reseed.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
    reseed.restype = None
    address = ctypes.addressof(rand)
    return lambda: reseed(address, _SEED)


def pyedgeeval_matcher(
    gt: np.ndarray, max_dist: float
) -> Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """A :data:`~sam_d2.evaluation.bsds.matching.MatcherFactory` running pyEdgeEval's
    ``correspond_pixels`` (reseeded before every call, hence reproducible)."""
    from pyEdgeEval import correspond_pixels

    reseed = _reseed()

    def match(pred: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        reseed()
        match_pred, match_gt, _, _ = correspond_pixels(pred, gt, max_dist=max_dist)
        return match_pred > 0, match_gt > 0

    return match
