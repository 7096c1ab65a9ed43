"""Run a function on 1 or N CPU processes through Detectron2's ``launch`` (gloo backend)."""

import pickle
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch.distributed as dist
from detectron2.engine import launch
from detectron2.utils import comm


def _worker(fn: Callable[..., Any], out_path: str, args: tuple) -> None:
    result = fn(*args)
    if comm.is_main_process():
        with open(out_path, "wb") as f:
            pickle.dump(result, f)
    if comm.get_world_size() > 1:
        # Leave together and tear the gloo group down before exit: a rank exiting with live gloo
        # threads can abort ("terminate called without an active exception").
        comm.synchronize()
        dist.destroy_process_group()


def run_distributed(fn: Callable[..., Any], world_size: int, *args: Any) -> Any:
    """Call ``fn(*args)`` on ``world_size`` processes and return rank 0's result.

    ``fn`` must be a module-level (picklable) function; it may use ``detectron2.utils.comm``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out_path = str(Path(tmp) / "result.pkl")
        launch(_worker, world_size, dist_url="auto", args=(fn, out_path, args))
        with open(out_path, "rb") as f:
            return pickle.load(f)
