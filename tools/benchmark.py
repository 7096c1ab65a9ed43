#!/usr/bin/env python
"""Speed, memory and reduced-precision accuracy of sam_d2 beside the official segment-anything
(and segment-anything-fast on CUDA), same random weights, same run, interleaved.

    python tools/benchmark.py --variant vit_b --device cpu --dtype fp32 --amg --json b.json
    python tools/benchmark.py --variant vit_h --device cuda --dtype bf16 --batch-size 8 --compile
    python tools/benchmark.py --table b.json more.json      # README rows from saved --json files

Each implementation lives in its own process (so peak memory is its own) and the measurements
alternate between them call by call, so a machine shared with other jobs slows all of them
alike: the ratios are more trustworthy than the absolute figures. Phases:
    encoder    images/s   (--batch-size 1024x1024 random images per call)
    decoder    prompts/s  (--prompts single-point prompts against one embedding, 3 masks each)
    amg        s/image    (automatic masks, 32x32 grid, official defaults; --amg)
    amg_unfiltered  s/image  (32x32 grid, no IoU/stability filter: the work of a real checkpoint
                           whose masks pass, and a non-empty mask comparison on random weights;
                           --phases amg_unfiltered)
    proposals  s/image    (LVIS-proposal setting: 64x64 grid, no IoU/stability filter, NMS 0.9,
                           masks returned as RLE; --proposals)
In the automatic phases sam_d2's masks are compared with the official ones call by call (count,
masks equal pixel for pixel, same order, lowest IoU of the i-th masks; ``mask_parity`` of the
sam_d2 row, the worst call).
With --compile both sam_d2 and the official model are compiled (torch.compile) and the first
call of each phase (compilation included) is reported apart (``first_call_s``). With a dtype
other than fp32, sam_d2's outputs under that precision are compared with its fp32 outputs on
real images (``accuracy`` row: low-res logit error and mask IoU at the original size;
--no-accuracy skips it).
Weights are random (no pretrained weights are needed for timing) and identical in every process.
"""

import argparse
import collections
import contextlib
import json
import multiprocessing as mp
import os
import queue as queue_module
import resource
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

from sam_d2.utils.cli import HelpFormatter

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "sam_images"
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
IMPLS = ("sam_d2", "official", "sam_fast")
#: Generator settings of the two automatic phases (official argument names).
AMG_SETTINGS = {
    "amg": dict(points_per_side=32),
    # every mask passes the filters (as many real-checkpoint masks do): with random weights the
    # official thresholds keep nothing, and the mask comparison would be vacuous
    "amg_unfiltered": dict(points_per_side=32, pred_iou_thresh=0.0, stability_score_thresh=0.0),
    # masks kept as RLE, as a proposal evaluator stores them (no decoding to full-size arrays)
    "proposals": dict(
        points_per_side=64,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        box_nms_thresh=0.9,
        output_mode="uncompressed_rle",
    ),
}
UNITS = {"encoder": "img/s", "decoder": "prompts/s", **{p: "s/image" for p in AMG_SETTINGS}}


# ------------------------------------------------------------------------------ worker side
def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _random_state(variant: str) -> Dict[str, torch.Tensor]:
    """The official layout of ``variant`` filled with sam_d2's seeded random weights."""
    from segment_anything import sam_model_registry

    from sam_d2.utils.random_weights import randomize_state_dict

    with torch.device("meta"):
        layout = sam_model_registry[variant]().state_dict()
    return randomize_state_dict({k: torch.empty(v.shape, dtype=v.dtype) for k, v in layout.items()})


def _build(impl: str, args: argparse.Namespace) -> torch.nn.Module:
    """Model of ``impl`` with the shared random weights, on the device, in eval mode."""
    state = _random_state(args.variant)
    if impl == "sam_d2":
        from sam_d2 import build_sam as build
    elif impl == "official":
        from segment_anything import sam_model_registry

        build = sam_model_registry[args.variant]
    else:
        from segment_anything_fast import sam_model_registry  # GPU-only package

        build = sam_model_registry[args.variant]
    with torch.device(args.device):  # default init straight on the device (fast on a GPU)
        model = build(args.variant) if impl == "sam_d2" else build()
    model.load_state_dict(state)
    # buffers made by legacy constructors (the official pixel_mean: torch.Tensor(list)) ignore the
    # default device; the official predictors take their device from them
    model = model.to(args.device).eval()
    if args.compile:
        from sam_d2.modeling.speed import compile_sam

        compile_sam(model, mode=args.compile_mode)
    return model


class _Runner:
    """One implementation's model and the callables of each phase (runs in the worker)."""

    def __init__(self, impl: str, args: argparse.Namespace) -> None:
        self.impl, self.args = impl, args
        self.model = _build(impl, args)
        dev = args.device
        g = torch.Generator().manual_seed(0)
        self.images: Dict[int, torch.Tensor] = {}
        self.coords = (torch.rand(args.prompts, 1, 2, generator=g) * 1024).to(dev)
        self.labels = torch.ones(args.prompts, 1, dtype=torch.int, device=dev)
        self.embedding: Optional[torch.Tensor] = None
        self.generators: Dict[str, Any] = {}
        self.photo: Optional[np.ndarray] = None

    def autocast(self) -> Any:
        dtype = DTYPES[self.args.dtype]
        return torch.autocast(self.args.device, dtype=dtype, enabled=dtype is not None)

    def encode(self, batch: int = 1) -> torch.Tensor:
        if batch not in self.images:
            g = torch.Generator().manual_seed(batch)
            self.images[batch] = torch.randn(batch, 3, 1024, 1024, generator=g).to(self.args.device)
        if self.impl == "sam_d2":
            return self.model.encode(self.images[batch])
        return self.model.image_encoder(self.images[batch])

    def decode(self) -> Any:
        if self.embedding is None:
            self.embedding = self.encode()[:1]
        if self.impl == "sam_d2":
            return self.model.decode(self.embedding, self.coords, self.labels)
        pe = self.model.prompt_encoder
        sparse, dense = pe((self.coords, self.labels), None, None)
        return self.model.mask_decoder(self.embedding, pe.get_dense_pe(), sparse, dense, True)

    def generate(self, phase: str) -> List[Dict[str, Any]]:
        if self.photo is None:
            from PIL import Image

            self.photo = np.array(Image.open(self.args.image).convert("RGB"))
        if phase not in self.generators:
            kwargs = dict(AMG_SETTINGS[phase], points_per_batch=self.args.points_per_batch)
            if self.impl == "sam_d2":
                from sam_d2.automatic import AutomaticMaskGenerator

                gen = AutomaticMaskGenerator(self.model, **kwargs, dtype=self.args.dtype)
            elif self.impl == "official":
                from segment_anything import SamAutomaticMaskGenerator

                gen = SamAutomaticMaskGenerator(self.model, **kwargs)
            else:
                from segment_anything_fast import SamAutomaticMaskGenerator

                gen = SamAutomaticMaskGenerator(self.model, **kwargs)
            self.generators[phase] = gen
        if self.impl == "sam_d2":  # the generator applies its own dtype to every stage
            return self.generators[phase].generate(self.photo)
        with self.autocast():
            return self.generators[phase].generate(self.photo)

    def run(self, phase: str, batch: int) -> Dict[str, Any]:
        """Time one call of ``phase``: {"seconds", "count"} (images, prompts or masks)."""
        args = self.args
        with torch.inference_mode():
            _sync(args.device)
            start = time.perf_counter()
            if phase == "encoder":
                with self.autocast():
                    self.encode(batch)
                count = batch
            elif phase == "decoder":
                with self.autocast():
                    self.decode()
                count = args.prompts
            else:
                records = self.generate(phase)
                count = len(records)
            _sync(args.device)
        seconds = time.perf_counter() - start
        if phase in AMG_SETTINGS:
            return {"seconds": seconds, "count": count, "masks": _fingerprints(records)}
        return {"seconds": seconds, "count": count}

    def accuracy(self) -> Dict[str, Any]:
        """sam_d2 at ``--dtype`` against itself in fp32 on real photos (4x4 point grid each)."""
        from PIL import Image

        from sam_d2.data.transforms import ResizeLongestSide

        model, dev = self.model, self.args.device
        errors, ious = [], []
        for path in self.args.accuracy_images:
            image = np.array(Image.open(path).convert("RGB"))
            h, w = image.shape[:2]
            resized = ResizeLongestSide(model.img_size).get_transform(image).apply_image(image)
            tensor = torch.as_tensor(np.array(resized)).permute(2, 0, 1).to(dev)
            in_hw = tuple(tensor.shape[1:])
            grid = (np.arange(4) + 0.5) / 4
            xy = np.stack(np.meshgrid(grid * in_hw[1], grid * in_hw[0]), -1).reshape(-1, 1, 2)
            coords = torch.as_tensor(xy, dtype=torch.float32, device=dev)
            labels = torch.ones(len(coords), 1, dtype=torch.int, device=dev)
            outs = []
            for ctx in (contextlib.nullcontext(), self.autocast()):
                with torch.inference_mode(), ctx:
                    emb = model.encode(model.preprocess([tensor]))
                    low_res, _ = model.decode(emb, coords, labels)
                    low_res = low_res.float()
                    masks = model.postprocess_masks(low_res, in_hw, (h, w)) > 0
                outs.append((masks.cpu(), low_res.cpu()))
            (m32, l32), (m16, l16) = outs
            errors.append((l16 - l32).abs().flatten(1).amax(1))
            inter = (m32 & m16).flatten(2).sum(-1).double()
            union = (m32 | m16).flatten(2).sum(-1).double()
            ious.append(torch.where(union > 0, inter / union.clamp(min=1), 1.0).flatten())
        err, iou = torch.cat(errors), torch.cat(ious)
        return {
            "images": [Path(p).name for p in self.args.accuracy_images],
            "masks": int(iou.numel()),
            "max_abs_logit_error": float(err.max()),
            "median_abs_logit_error": float(err.median()),
            "mean_mask_iou": float(iou.mean()),
            "min_mask_iou": float(iou.min()),
        }

    def peak_memory_gib(self) -> float:
        if self.args.device == "cuda":
            return torch.cuda.max_memory_allocated() / 2**30
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    def reset_peak(self) -> None:
        if self.args.device == "cuda":
            torch.cuda.reset_peak_memory_stats()


def _fingerprints(records: List[Dict[str, Any]]) -> List[List[Any]]:
    """[area, height, width, COCO RLE counts] of each generated mask, in output order.

    The compressed RLE is canonical (equal strings mean equal masks) and lets the driver measure
    the IoU of masks that differ by a few pixels without shipping full-resolution masks.
    """
    from pycocotools import mask as mask_utils

    out = []
    for r in records:
        seg = r["segmentation"]
        if isinstance(seg, dict):  # uncompressed RLE (the proposal phase)
            h, w = seg["size"]
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            h, w = seg.shape
            rle = mask_utils.encode(np.asfortranarray(seg.astype(np.uint8)))
        out.append([int(r["area"]), h, w, rle["counts"].decode("ascii")])
    return out


def mask_parity(ours: List[List[Any]], official: List[List[Any]]) -> Dict[str, Any]:
    """Compare two implementations' mask fingerprints (:func:`_fingerprints`).

    Returns:
        {"ours", "official": mask counts, "matched": masks of ours equal (pixel for pixel) to one
        of the official ones, "identical": same masks in the same order, "min_iou": the lowest
        IoU of the i-th mask of ours with the i-th official one (None when the counts differ)}.
    """
    from pycocotools import mask as mask_utils

    left = collections.Counter(map(tuple, official))
    matched = sum((collections.Counter(map(tuple, ours)) & left).values())
    min_iou = None
    if len(ours) == len(official) and ours:

        def rle(f: List[Any]) -> Dict[str, Any]:
            return {"size": [f[1], f[2]], "counts": f[3].encode("ascii")}

        min_iou = min(
            float(mask_utils.iou([rle(a)], [rle(b)], [0])[0, 0]) if a != b else 1.0
            for a, b in zip(ours, official)
        )
    return {
        "ours": len(ours),
        "official": len(official),
        "matched": matched,
        "identical": ours == official,
        "min_iou": min_iou,
    }


def _worker(impl: str, args: argparse.Namespace, commands: "mp.Queue", results: "mp.Queue"):
    """Build the model, then answer commands ("run", phase) / ("accuracy",) / ("peak",)."""
    torch.manual_seed(0)
    try:
        runner = _Runner(impl, args)
        results.put({"ok": True})
    except Exception as e:  # reported as the row's error, e.g. sam_fast not importable
        results.put({"error": f"{type(e).__name__}: {e}".splitlines()[0]})
        return
    while True:
        cmd = commands.get()
        if cmd[0] == "stop":
            return
        try:
            if cmd[0] == "run":
                results.put(runner.run(cmd[1], cmd[2]))
            elif cmd[0] == "reset_peak":
                runner.reset_peak()
                results.put({})
            elif cmd[0] == "peak":
                results.put({"peak_memory_gib": runner.peak_memory_gib()})
            elif cmd[0] == "accuracy":
                results.put(runner.accuracy())
            else:
                results.put({"error": f"unknown command {cmd[0]!r}"})
        except Exception as e:
            traceback.print_exc()
            results.put({"error": f"{type(e).__name__}: {e}".splitlines()[0]})


# ------------------------------------------------------------------------------ driver side
class _Worker:
    def __init__(self, impl: str, args: argparse.Namespace) -> None:
        ctx = mp.get_context("spawn")
        self.impl = impl
        self.commands, self.results = ctx.Queue(), ctx.Queue()
        self.proc = ctx.Process(
            target=_worker, args=(impl, args, self.commands, self.results), daemon=True
        )
        self.proc.start()  # the model is built in the background: see :attr:`error`
        self._ready: Optional[Dict[str, Any]] = None

    @property
    def error(self) -> Optional[str]:
        """Waits until the worker has built its model; its error (e.g. an import) or None."""
        if self._ready is None:
            self._ready = self._get()
        return self._ready.get("error")

    def _get(self) -> Dict[str, Any]:
        while True:
            try:
                return self.results.get(timeout=5)
            except queue_module.Empty:
                if not self.proc.is_alive():
                    return {"error": f"worker died (exit code {self.proc.exitcode})"}

    def ask(self, *cmd: Any) -> Dict[str, Any]:
        if self.error:
            return {"error": self.error}
        self.commands.put(cmd)
        return self._get()

    def close(self) -> None:
        if self.proc.is_alive():
            self.commands.put(("stop",))
        self.proc.join(timeout=10)
        if self.proc.is_alive():  # still busy (e.g. interrupted mid-phase)
            self.proc.terminate()


def _load() -> Optional[float]:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def run(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """All phases, implementations interleaved call by call; one row per (impl, phase)."""
    impls = list(args.impls)
    if args.device != "cuda" and "sam_fast" in impls:
        impls.remove("sam_fast")  # its kernels are CUDA-only
    workers = {impl: _Worker(impl, args) for impl in impls}  # they build in parallel
    phases = [("encoder", b) for b in args.batch_size if "encoder" in args.phases]
    phases += [
        (p, 1) for p in ["decoder", *AMG_SETTINGS] if p in args.phases or getattr(args, p, 0)
    ]
    meta = dict(
        variant=args.variant,
        device=_device_name(args.device),
        dtype=args.dtype,
        compile=bool(args.compile),
        prompts=args.prompts,
        torch=torch.__version__,
        threads=torch.get_num_threads(),
    )
    rows: List[Dict[str, Any]] = []
    try:
        for phase, batch in phases:
            load_before = _load()
            first: Dict[str, Dict[str, Any]] = {}
            for impl, w in workers.items():
                w.ask("reset_peak")
                first[impl] = w.ask("run", phase, batch)  # warm-up (and compilation)
            times: Dict[str, List[Dict[str, Any]]] = {impl: [] for impl in workers}
            iters = args.iters if phase in ("encoder", "decoder") else args.amg_iters
            for _ in range(iters):
                for impl, w in workers.items():
                    if "error" not in first[impl]:
                        times[impl].append(w.ask("run", phase, batch))
            for impl, w in workers.items():
                peak = w.ask("peak")
                row = _row(impl, phase, first[impl], times[impl], peak, meta, load_before)
                if impl == "sam_d2" and phase in AMG_SETTINGS and "value" in row:
                    row["mask_parity"] = _parity(first, times)
                rows.append(dict(row, batch_size=batch))
                print(_format_row(rows[-1]), file=sys.stderr, flush=True)
            _save(args, rows)
        if args.dtype != "fp32" and args.accuracy and "sam_d2" in workers:
            acc = workers["sam_d2"].ask("accuracy")
            rows.append(dict(meta, impl="sam_d2", phase="accuracy", batch_size=1, **acc))
            _save(args, rows)
    finally:
        for w in workers.values():
            w.close()
    return rows


def _parity(
    first: Dict[str, Dict[str, Any]], times: Dict[str, List[Dict[str, Any]]]
) -> Optional[Dict[str, Any]]:
    """:func:`mask_parity` of sam_d2 vs official over every call of an automatic phase (the
    worst call decides); None without an official run."""
    calls = {impl: [first[impl], *times[impl]] for impl in ("sam_d2", "official") if impl in first}
    if len(calls) < 2 or any("masks" not in c for cs in calls.values() for c in cs):
        return None
    results = [
        mask_parity(ours["masks"], ref["masks"])
        for ours, ref in zip(calls["sam_d2"], calls["official"])
    ]
    return min(results, key=lambda r: (r["identical"], r["matched"], r["min_iou"] or 0.0))


def _save(args: argparse.Namespace, rows: List[Dict[str, Any]]) -> None:
    """Write the rows so far to ``--json`` (a run cut short keeps its finished phases)."""
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


def _row(
    impl: str,
    phase: str,
    first: Dict[str, Any],
    runs: List[Dict[str, Any]],
    peak: Dict[str, Any],
    meta: Dict[str, Any],
    load_before: Optional[float],
) -> Dict[str, Any]:
    row = dict(meta, impl=impl, phase=phase, unit=UNITS[phase], load_avg=[load_before, _load()])
    error = first.get("error") or next((r["error"] for r in runs if "error" in r), None)
    if error:
        return dict(row, error=error)
    runs = runs or [first]  # --amg-iters 0: the first call is the measurement
    seconds = [r["seconds"] for r in runs]
    median = statistics.median(seconds)
    per_image = phase in AMG_SETTINGS
    value = median if per_image else runs[0]["count"] / median
    return dict(
        row,
        value=value,
        seconds=seconds,
        first_call_s=first["seconds"],
        masks=runs[0]["count"] if per_image else None,
        peak_memory_gib=peak.get("peak_memory_gib"),
    )


def _device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU x{torch.get_num_threads()}"


def _format_row(r: Dict[str, Any]) -> str:
    if r.get("phase") == "accuracy":
        return (
            f"accuracy {r['dtype']} vs fp32 ({r['masks']} masks on {', '.join(r['images'])}): "
            f"max |logit err| {r['max_abs_logit_error']:.4f}, "
            f"median {r['median_abs_logit_error']:.4f}, "
            f"mask IoU mean {r['mean_mask_iou']:.4f} min {r['min_mask_iou']:.4f}"
        )
    phase = f"{r['phase']}" + (f" b{r['batch_size']}" if r["phase"] == "encoder" else "")
    head = f"{r['impl']:<9}{phase:<12}"
    if "error" in r:
        return f"{head} error: {r['error']}"
    parity = f"  masks: {_parity_text(r['mask_parity'])}" if r.get("mask_parity") else ""
    return (
        f"{head}{r['value']:>10.3f} {r['unit']:<10} first call {r['first_call_s']:8.2f} s  "
        f"peak {r['peak_memory_gib']:.2f} GiB  runs {[round(s, 2) for s in r['seconds']]}"
        f"{parity}"
    )


def _parity_text(p: Dict[str, Any]) -> str:
    """'identical to official (62)', '61/62 equal to official (62 official), min IoU 0.99998'
    from :func:`mask_parity`."""
    if p["identical"]:
        return f"identical to official ({p['ours']})"
    text = f"{p['matched']}/{p['ours']} equal to official ({p['official']} official)"
    if p.get("min_iou") is not None:
        text += f", min IoU {p['min_iou']:.5f}"
    return text


def report(rows: List[Dict[str, Any]]) -> str:
    """Plain-text table: every row, then sam_d2 / other ratios per phase."""
    if not rows:
        return "no rows"
    m = rows[0]
    lines = [
        f"{m['variant']} | {m['device']} | {m['dtype']}{' + compile' if m['compile'] else ''} | "
        f"{m['prompts']} prompts/decoder call | "
        f"torch {m['torch']}"
    ]
    lines += [_format_row(r) for r in rows]
    ours = {
        (r["phase"], r["batch_size"]): r for r in rows if r["impl"] == "sam_d2" and "value" in r
    }
    for r in rows:
        key = (r["phase"], r["batch_size"])
        if r["impl"] != "sam_d2" and "value" in r and key in ours:
            a, b = ours[key]["value"], r["value"]
            speedup = b / a if r["unit"] == "s/image" else a / b
            phase = r["phase"] + (f" b{r['batch_size']}" if r["phase"] == "encoder" else "")
            lines.append(f"speed-up sam_d2 vs {r['impl']:<9}{phase:<12}{speedup:6.2f}x")
    return "\n".join(lines)


def markdown_table(rows: List[Dict[str, Any]]) -> str:
    """README rows: one per (variant, device, dtype, compile, phase), sam_d2 beside the others."""
    groups: Dict[tuple, Dict[str, Dict[str, Any]]] = {}
    for r in rows:
        if r.get("phase") == "accuracy":
            continue
        key = (r["variant"], r["device"], r["dtype"], r["compile"], r["phase"], r["batch_size"])
        groups.setdefault(key, {})[r["impl"]] = r
    out = [
        "| variant | device | precision | phase | sam_d2 | official | segment-anything-fast "
        "| speed-up vs official | peak memory sam_d2 / official |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (variant, device, dtype, comp, phase, batch), by_impl in groups.items():
        ours, ref, fast = (by_impl.get(i) for i in IMPLS)
        cells = ["—" if r is None else _cell(r) for r in (ours, ref, fast)]
        speedup = mem = "—"
        if ours and ref and "value" in ours and "value" in ref:
            a, b = ours["value"], ref["value"]
            speedup = f"{(b / a if ours['unit'] == 's/image' else a / b):.2f}×"
            mem = f"{ours['peak_memory_gib']:.2f} / {ref['peak_memory_gib']:.2f} GiB"
        name = {"encoder": f"encoder (batch {batch})", "decoder": "decoder"}.get(phase, phase)
        if ours and ours.get("mask_parity"):
            name += f", masks {_parity_text(ours['mask_parity'])}"
        prec = dtype + (" + compile" if comp else "")
        out.append(f"| {variant} | {device} | {prec} | {name} | {' | '.join(cells)} ")
        out[-1] += f"| {speedup} | {mem} |"
    return "\n".join(out)


def _cell(r: Dict[str, Any]) -> str:
    if "error" in r:
        return "error: " + r["error"].split(":")[0]
    return f"{r['value']:.3g} {r['unit']}"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--variant", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--compile", action="store_true", help="torch.compile encoder + decoder")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode")
    parser.add_argument(
        "--batch-size", type=int, nargs="+", default=[1], help="images per encoder call (each)"
    )
    parser.add_argument(
        "--phases",
        nargs="+",
        default=["encoder", "decoder"],
        choices=list(UNITS),
        help="phases to time (--amg / --proposals add theirs)",
    )
    parser.add_argument("--prompts", type=int, default=64, help="prompts per decoder call")
    parser.add_argument("--iters", type=int, default=3, help="timed calls per impl and phase")
    parser.add_argument("--amg", action="store_true", help="time automatic masks (32x32)")
    parser.add_argument("--proposals", action="store_true", help="time the 64x64 LVIS setting")
    parser.add_argument(
        "--amg-iters",
        type=int,
        default=1,
        help="timed calls of amg/proposals after the first; 0 times the first call alone",
    )
    parser.add_argument("--points-per-batch", type=int, default=64)
    parser.add_argument("--image", default=str(DATA / "dog.jpg"), help="photo for amg/proposals")
    parser.add_argument(
        "--accuracy-images",
        nargs="+",
        default=[str(DATA / n) for n in ("dog.jpg", "truck.jpg", "groceries.jpg")],
        help="photos of the reduced-precision accuracy check",
    )
    parser.add_argument(
        "--impls", nargs="+", default=list(IMPLS), choices=IMPLS, help="implementations to run"
    )
    parser.add_argument(
        "--no-accuracy",
        dest="accuracy",
        action="store_false",
        help="skip the reduced-precision accuracy check (run by default when --dtype is not fp32)",
    )
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--table", nargs="+", metavar="JSON", help="print README rows and exit")
    args = parser.parse_args(argv)
    if args.table:
        return args
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but CUDA is not available")
    if args.dtype == "fp16" and args.device == "cpu":
        parser.error("fp16 autocast is not supported on CPU; use fp32 or bf16")
    if min(args.batch_size) < 1:
        parser.error("--batch-size must be >= 1")
    for name in ("prompts", "iters", "points_per_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.amg_iters < 0:
        parser.error("--amg-iters must be >= 0")
    automatic = args.amg or args.proposals or set(AMG_SETTINGS) & set(args.phases)
    needed = [args.image] if automatic else []
    needed += args.accuracy_images if args.dtype != "fp32" and args.accuracy else []
    missing = [p for p in needed if not Path(p).is_file()]
    if missing:
        parser.error(f"image not found: {missing[0]}")
    try:
        import segment_anything  # noqa: F401
    except ImportError:
        parser.error(
            "the official package is needed for the shared weights: "
            "pip install segment-anything==1.0"
        )
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.table:
        rows = [r for path in args.table for r in json.loads(Path(path).read_text())["rows"]]
        print(markdown_table(rows))
        return 0
    print(report(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
