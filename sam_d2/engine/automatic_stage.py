"""The fully automatic stage of the SA-1B data engine, sharded over Detectron2's ``launch``.

:func:`run_stage` is what every process of ``tools/automatic_masks.py`` runs: it segments its
share of an image list with :class:`~sam_d2.automatic.AutomaticMaskGenerator` and writes one
SA-1B JSON per image (DESIGN §9)::

    {"image": {"image_id", "width", "height", "file_name"},
     "annotations": [{"id", "segmentation": {"size": [h, w], "counts": str}, "bbox": [x, y, w, h],
                      "area", "predicted_iou", "stability_score", "crop_box", "point_coords"}]}

Guarantees:

* **Deterministic sharding.** The image list is sorted and numbered once (``image_id`` = position
  + 1); rank 0 decides which images still need work, and process ``r`` of ``W`` takes every
  ``W``-th of those, starting at ``r``. Every image's output depends only on the image and the
  settings, so 1 and N processes write identical files.
* **Resume.** An image whose JSON exists is finished and skipped. Every file is written to a
  hidden temporary name and renamed into place (:func:`atomic_write`), so a killed job never
  leaves a partial JSON; leftover temporaries are removed at the next start.
* **One run per output folder.** ``<output>/.automatic_masks/manifest`` records the settings
  and a digest of the image list; a later run with other settings or images is refused instead
  of mixing results.
* **Progress.** Each process logs done / total, s/image and ETA every ``log_period`` seconds;
  rank 0 adds the total over all processes (from small per-rank progress files beside the
  manifest); the end summary gives images, masks, masks/image and s/image.

Multi-machine jobs need ``output`` on a file system every machine shares.
"""

import hashlib
import itertools
import json
import logging
import os
import signal
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from glob import glob, has_magic
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
import torch.distributed as dist
from detectron2.config import CfgNode
from detectron2.utils import comm

from ..automatic import AutomaticMaskGenerator
from ..checkpoint import CheckpointError, load_sam_checkpoint
from ..data.image_io import read_image_rgb
from ..modeling.meta_arch.proposals import generator_kwargs_from_cfg
from ..modeling.sam import Sam

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageItem",
    "RankStats",
    "StageError",
    "StageJob",
    "atomic_write",
    "collect_images",
    "format_summary",
    "generator_kwargs",
    "read_reports",
    "run_stage",
    "sa1b_document",
    "setup_logging",
    "shard",
    "stage_worker",
    "zero_mask_hint",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
#: Folder (inside the output folder) of the run manifest and the per-rank progress files. The
#: files in it carry no ``.json`` suffix, so readers globbing ``*.json`` never pick them up.
STATE_DIR = ".automatic_masks"
#: Folder (inside the output folder) of the ``--overlay`` PNGs.
OVERLAY_DIR = "overlays"
_TMP_MARK = ".tmp-"


class StageError(RuntimeError):
    """A problem with the user's input or output folder, reported as one line."""


@dataclass(frozen=True)
class ImageItem:
    """One input image.

    Attributes:
        path: where to read it.
        file_name: POSIX path relative to the input (folder or glob base) that named it; the
            ``file_name`` of its SA-1B record.
        output_name: POSIX path of its outputs relative to the output folder, without suffix
            (``<output>/<output_name>.json``); unique within a run.
        image_id: position in the sorted image list, from 1.
    """

    path: str
    file_name: str
    output_name: str
    image_id: int


@dataclass
class StageJob:
    """Everything a process of the stage needs (picklable: it travels to spawned processes).

    Attributes:
        cfg: frozen config (``MODEL`` builds the SAM, ``MODEL.WEIGHTS`` its weights,
            ``SAM_AUTO`` the generator, ``MODEL.DEVICE`` "cpu" or "cuda").
        items: the whole image list (every process gets the same).
        output: output folder.
        overlay: also write ``<output>/overlays/<output_name>.png``.
        log_period: seconds between progress lines.
        report_dir: folder where each machine's processes leave their error message and the
            exit status for the launching process.
        launcher_pid: process id of the launching process; spawned processes end with it.
    """

    cfg: CfgNode
    items: List[ImageItem]
    output: str
    overlay: bool = False
    log_period: float = 30.0
    report_dir: str = ""
    launcher_pid: int = 0


@dataclass
class RankStats:
    """What one process did (all processes' stats add up to the run's summary)."""

    skipped: int = 0
    done: int = 0
    masks: int = 0
    empty: int = 0
    seconds: float = 0.0
    failed: List[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------- image list
def _glob_base(pattern: str) -> Path:
    """The longest leading part of a glob pattern without wildcards (a folder)."""
    parts = Path(pattern).parts
    fixed = parts[: next(i for i, p in enumerate(parts) if has_magic(p))]
    return Path(*fixed) if fixed else Path(".")


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _within(path: Path, folders: Sequence[Path]) -> bool:
    return any(f == path or f in path.parents for f in folders)


def _name_candidates(stem: str, full: str) -> Iterator[str]:
    """Output names for an image, preferred first: ``a/x``, ``a/x.png``, ``a/x_1``, ..."""
    yield stem
    yield full
    yield from (f"{stem}_{k}" for k in itertools.count(1))


def collect_images(
    inputs: Sequence[str], recursive: bool = False, exclude: Sequence[str] = ()
) -> List[ImageItem]:
    """The images named by files, folders and glob patterns, numbered and given output names.

    Folders contribute their images (``recursive``: also in sub-folders), sorted. Each image
    keeps its path relative to the folder (or to the glob pattern's fixed leading folder; a
    plain file: its name) as ``file_name`` and, without suffix, as output name, so that
    ``a/x.json`` describes ``a/x.jpg`` as in SA-1B. When that name is taken (``x.jpg`` and
    ``x.png`` in one folder) the name keeps its suffix (``a/x.png.json``, the annotation app's
    convention); a clash between inputs gets ``_1``, ``_2``, ... . An image named twice is kept
    once (first occurrence).

    Args:
        inputs: files, folders or glob patterns.
        recursive: descend into sub-folders (and let ``**`` span folders in patterns).
        exclude: folders whose files are never inputs (the tool's own output folders).

    Raises:
        StageError: an input matches no image, or there are no images at all.
    """
    excluded = [Path(e).resolve() for e in exclude]
    found: List[Tuple[Path, Path]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            candidates = path.glob("**/*" if recursive else "*")
            matches = [(f, f.relative_to(path)) for f in candidates if _is_image(f)]
            if not matches:
                kind = "images (also in sub-folders)" if recursive else "images"
                raise StageError(f"folder {item} holds no {kind} ({', '.join(IMAGE_SUFFIXES)})")
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise StageError(f"{item}: not an image file ({', '.join(IMAGE_SUFFIXES)})")
            matches = [(path, Path(path.name))]
        elif has_magic(item):
            base = _glob_base(item)
            files = [Path(f) for f in glob(item, recursive=recursive)]
            matches = [(f, f.relative_to(base)) for f in files if _is_image(f)]
            if not matches:
                raise StageError(f"{item}: the pattern matches no image")
        else:
            raise StageError(f"{item}: no such file or folder")
        found.extend(sorted(matches, key=lambda m: m[1].as_posix()))
    items: List[ImageItem] = []
    seen, used = set(), set()
    for path, relative in found:
        key = path.resolve()
        if key in seen or _within(key, excluded):
            continue
        seen.add(key)
        full = relative.as_posix()
        stem = PurePosixPath(full).with_suffix("").as_posix()
        name = next(n for n in _name_candidates(stem, full) if n not in used)
        used.add(name)
        items.append(ImageItem(str(path), relative.as_posix(), name, len(items) + 1))
    if not items:
        raise StageError(f"no images in {', '.join(inputs)}")
    return items


def shard(indices: Sequence[int], rank: int, world_size: int) -> List[int]:
    """The share of process ``rank`` of ``world_size``: every ``world_size``-th, from ``rank``."""
    return list(indices[rank::world_size])


# ---------------------------------------------------------------------------------- settings
#: ``SAM_AUTO`` keys of the generator, each with a check and the rule it states.
_SETTING_RULES = {
    "POINTS_PER_SIDE": (lambda v: v >= 1, "an integer >= 1"),
    "POINTS_PER_BATCH": (lambda v: v >= 1, "an integer >= 1"),
    "PRED_IOU_THRESH": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "STABILITY_SCORE_THRESH": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "STABILITY_SCORE_OFFSET": (lambda v: v > 0, "> 0"),
    "BOX_NMS_THRESH": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "CROP_N_LAYERS": (lambda v: v >= 0, "an integer >= 0"),
    "CROP_NMS_THRESH": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "CROP_OVERLAP_RATIO": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "CROP_N_POINTS_DOWNSCALE_FACTOR": (lambda v: v >= 1, "an integer >= 1"),
    "MIN_MASK_REGION_AREA": (lambda v: v >= 0, "an integer >= 0"),
    "MAX_MASK_AREA_RATIO": (lambda v: 0 <= v <= 1, "in [0, 1] (0: off)"),
    "ENCODER_BATCH_SIZE": (lambda v: v >= 1, "an integer >= 1"),
}
_INTEGER_SETTINGS = {
    "POINTS_PER_SIDE",
    "POINTS_PER_BATCH",
    "CROP_N_LAYERS",
    "CROP_N_POINTS_DOWNSCALE_FACTOR",
    "MIN_MASK_REGION_AREA",
    "ENCODER_BATCH_SIZE",
}


def generator_kwargs(cfg: CfgNode) -> Dict[str, Any]:
    """Arguments of :class:`AutomaticMaskGenerator` from ``cfg.SAM_AUTO``, checked.

    Raises:
        StageError: a setting is out of range (named as ``SAM_AUTO.KEY`` and as its flag).
    """
    c = cfg.SAM_AUTO
    for key, (ok, rule) in _SETTING_RULES.items():
        value = c[key]
        integral = not isinstance(value, bool) and isinstance(value, int)
        if (key in _INTEGER_SETTINGS and not integral) or not ok(value):
            flag = "--" + key.lower().replace("_", "-")
            raise StageError(f"SAM_AUTO.{key} ({flag}) must be {rule}, got {value!r}")
    coarsest = c.POINTS_PER_SIDE // c.CROP_N_POINTS_DOWNSCALE_FACTOR**c.CROP_N_LAYERS
    if coarsest < 1:
        raise StageError(
            f"--points-per-side {c.POINTS_PER_SIDE} with --crop-n-points-downscale-factor "
            f"{c.CROP_N_POINTS_DOWNSCALE_FACTOR} leaves crop layer {c.CROP_N_LAYERS} without points"
        )
    return dict(generator_kwargs_from_cfg(cfg), output_mode="coco_rle")


#: What each manifest entry stands for, in the message refusing another run's folder.
_MANIFEST_MEANING = {
    "model": "model",
    "weights": "weights",
    "weights_bytes": "weights",
    "generator": "generator settings",
    "images": "image list",
    "image_list_sha256": "image list",
}


def _manifest(job: StageJob) -> Dict[str, Any]:
    """What makes two runs' outputs interchangeable: model, weights, settings, image list."""
    digest = hashlib.sha256()
    for item in job.items:
        digest.update(f"{item.image_id}\t{item.file_name}\t{item.output_name}\n".encode())
    weights = job.cfg.MODEL.WEIGHTS
    return {
        "model": job.cfg.MODEL.SAM.dump(),
        "weights": os.path.realpath(weights) if weights else "",
        "weights_bytes": os.path.getsize(weights) if weights and os.path.isfile(weights) else 0,
        "generator": generator_kwargs(job.cfg),
        "images": len(job.items),
        "image_list_sha256": digest.hexdigest(),
    }


def _manifest_conflict(path: Path, expected: Dict[str, Any]) -> Optional[str]:
    """Why the manifest at ``path`` belongs to another run, or None (also when absent)."""
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return f"{path}: unreadable run manifest ({e}); remove it or use another --output"
    for key, value in expected.items():
        if found.get(key) != value:
            return (
                f"{path.parent.parent}: holds the results of a run with other "
                f"{_MANIFEST_MEANING[key]}; use another --output (or remove that folder to start "
                "over)"
            )
    return None


# ---------------------------------------------------------------------------------- outputs
def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a hidden temporary file in the same folder.

    Readers (and a resumed run) see either no file or the whole file, never a part of it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sa1b_document(
    item: ImageItem, image_hw: Tuple[int, int], records: Sequence[Dict[str, Any]]
) -> Dict[str, Any]:
    """The SA-1B JSON document (DESIGN §9) of one image from the generator's ``coco_rle``
    records; annotation ids count from 0 within the image."""
    keys = ("segmentation", "bbox", "area", "predicted_iou", "stability_score", "crop_box")
    annotations = []
    for i, record in enumerate(records):
        ann: Dict[str, Any] = {"id": i}
        ann.update((k, record[k]) for k in keys)
        ann["point_coords"] = [[float(v) for v in p] for p in record["point_coords"]]
        annotations.append(ann)
    height, width = image_hw
    image = {
        "image_id": item.image_id,
        "width": width,
        "height": height,
        "file_name": item.file_name,
    }
    return {"image": image, "annotations": annotations}


def _overlay_png(image: np.ndarray, records: Sequence[Dict[str, Any]]) -> bytes:
    """PNG of ``image`` with every mask painted in a random colour, largest first."""
    import io

    from PIL import Image
    from pycocotools import mask as mask_utils

    out = image.astype(np.float32)
    colors = np.random.default_rng(0).integers(0, 256, size=(len(records), 3))
    for k in sorted(range(len(records)), key=lambda i: -records[i]["area"]):
        mask = mask_utils.decode(records[k]["segmentation"]).astype(bool)
        out[mask] = 0.5 * out[mask] + 0.5 * colors[k]
    buffer = io.BytesIO()
    Image.fromarray(out.round().clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _scan_outputs(output: Path) -> Tuple[Set[str], List[Path]]:
    """Output names (relative, without ``.json``) already written, and leftover temporaries."""
    finished: Set[str] = set()
    temporaries: List[Path] = []
    for folder, dirs, files in os.walk(output):
        rel = Path(folder).relative_to(output)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in (STATE_DIR, OVERLAY_DIR)]
        for name in files:
            if name.startswith(".") and _TMP_MARK in name:
                temporaries.append(Path(folder, name))
            elif name.endswith(".json"):
                finished.add((rel / name[: -len(".json")]).as_posix())
    for folder in (output / OVERLAY_DIR, output / STATE_DIR):
        temporaries += [p for p in folder.rglob(f".*{_TMP_MARK}*") if p.is_file()]
    return finished, temporaries


# ---------------------------------------------------------------------------------- progress
def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def _progress_line(
    label: str, done: int, total: int, elapsed: float, eta: Optional[float] = None
) -> str:
    """``label: done/total images (p%), s/image, ETA h:mm:ss``; the ETA extrapolates the rate
    unless given."""
    rate = elapsed / done if done else float("nan")
    if eta is None and done:
        eta = rate * (total - done)
    percent = 100.0 * done / total if total else 100.0
    eta_text = _duration(eta) if eta is not None else "?"
    return f"{label}: {done}/{total} images ({percent:.0f}%), {rate:.2f} s/image, ETA {eta_text}"


class _Progress:
    """Per-rank progress lines, a progress file per rank, and rank 0's line for all ranks."""

    def __init__(self, job: StageJob, total: int, overall: int) -> None:
        """``total`` images for this process, ``overall`` for all processes together."""
        self.rank, self.world = comm.get_rank(), comm.get_world_size()
        self.folder = Path(job.output) / STATE_DIR / "progress"
        self.total, self.overall, self.period = total, overall, job.log_period
        self.start = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if done < self.total and now - self.last < self.period:
            return
        self.last, elapsed = now, now - self.start
        logger.info(_progress_line(f"rank {self.rank}/{self.world}", done, self.total, elapsed))
        if self.world == 1:
            return
        eta = elapsed / done * (self.total - done) if done else None
        state = {"done": done, "eta": eta, "time": time.time()}
        atomic_write(self.folder / f"rank{self.rank}", json.dumps(state).encode())
        if self.rank == 0:
            self._log_all()

    def _log_all(self) -> None:
        states = []
        for path in self.folder.glob("rank*"):
            try:
                states.append(json.loads(path.read_text()))
            except (OSError, ValueError):  # a rank replacing its file right now
                continue
        done = sum(s["done"] for s in states)
        etas = [s["eta"] - (time.time() - s["time"]) for s in states if s["eta"] is not None]
        # Once every rank has a rate, the job ends with the slowest one.
        eta = max(0.0, *etas) if len(etas) == self.world else None
        elapsed = time.monotonic() - self.start
        label = f"all {self.world} processes together"
        logger.info(_progress_line(label, done, self.overall, elapsed, eta))


# ---------------------------------------------------------------------------------- the stage
def _build_generator(cfg: CfgNode) -> AutomaticMaskGenerator:
    from detectron2.modeling import build_model

    model = build_model(cfg)
    if not isinstance(model, Sam):
        raise StageError(
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE} is not a SAM model "
            "(use e.g. PromptableSam)"
        )
    if cfg.MODEL.WEIGHTS:
        load_sam_checkpoint(model, cfg.MODEL.WEIGHTS)
    elif comm.is_main_process():
        logger.warning("no weights given: SAM has random weights, its masks are meaningless")
    return AutomaticMaskGenerator(model.eval(), **generator_kwargs(cfg))


def _read(path: str) -> Tuple[Optional[np.ndarray], str]:
    try:
        return read_image_rgb(path), ""
    except (OSError, ValueError) as e:
        return None, str(e)


def _process(
    job: StageJob,
    generator: AutomaticMaskGenerator,
    indices: Sequence[int],
    overall: int,
    stats: RankStats,
) -> None:
    """Segment the images ``indices`` of ``job.items`` and write their files (``overall``:
    the images of all processes, for the progress lines)."""
    from PIL import Image

    # Local files of any size are welcome: SAM resizes each crop and masks stay RLE-compressed.
    Image.MAX_IMAGE_PIXELS = None
    output, progress = Path(job.output), _Progress(job, len(indices), overall)
    progress.update(0)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=1) as reader:  # reads the next image during generation
        pending: Optional[Future] = None
        for n, index in enumerate(indices):
            item = job.items[index]
            current = pending or reader.submit(_read, item.path)
            if n + 1 < len(indices):
                pending = reader.submit(_read, job.items[indices[n + 1]].path)
            image, error = current.result()
            records = None
            if image is not None:
                try:
                    records = generator.generate(image)
                except ValueError as e:  # an image the generator refuses (its message says why)
                    error = str(e)
            if records is None:
                logger.error(f"skipped {item.path}: {error}")
                stats.failed.append(item.path)
            else:
                if job.overlay:
                    png = _overlay_png(image, records)
                    atomic_write(output / OVERLAY_DIR / f"{item.output_name}.png", png)
                document = sa1b_document(item, image.shape[:2], records)
                atomic_write(output / f"{item.output_name}.json", json.dumps(document).encode())
                stats.done += 1
                stats.masks += len(records)
                stats.empty += not records
            progress.update(n + 1)
    stats.seconds = time.monotonic() - start


def _prepare(job: StageJob) -> List[int]:
    """Check the output folder against the manifest and agree on the unfinished images.

    Returns:
        indices (into ``job.items``) of the images without output, the same on every process.
    """
    output, state = Path(job.output), Path(job.output) / STATE_DIR
    expected = _manifest(job)
    conflict = _manifest_conflict(state / "manifest", expected)
    conflicts = [c for c in comm.all_gather(conflict) if c]
    if conflicts:
        raise StageError(conflicts[0])
    todo_flags = None
    if comm.is_main_process():
        finished, temporaries = _scan_outputs(output)
        for tmp in temporaries:  # left by a killed run; no process writes yet
            tmp.unlink(missing_ok=True)
        for stale in (state / "progress").glob("rank*"):
            stale.unlink()
        todo_flags = np.packbits([item.output_name not in finished for item in job.items])
        atomic_write(state / "manifest", json.dumps(expected, indent=1).encode())
    todo_flags = comm.all_gather(todo_flags)[0]
    flags = np.unpackbits(todo_flags, count=len(job.items)).astype(bool)
    return np.flatnonzero(flags).tolist()


def run_stage(job: StageJob) -> RankStats:
    """Run this process's share of the stage; collective over all processes of the job.

    Returns:
        this process's :class:`RankStats`.

    Raises:
        StageError: the output folder holds another run, or the config builds no SAM.
        CheckpointError: the weights are missing, unreadable or do not fit the model.
    """
    rank, world = comm.get_rank(), comm.get_world_size()
    if torch.device(job.cfg.MODEL.DEVICE).type == "cuda":
        job.cfg = job.cfg.clone()
        job.cfg.defrost()
        job.cfg.MODEL.DEVICE = f"cuda:{comm.get_local_rank()}"
        job.cfg.freeze()
    elif world > 1:
        # Share the machine's cores between its processes instead of oversubscribing them.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // comm.get_local_size()))
    generator = _build_generator(job.cfg)  # fails, if at all, before any file is written
    todo = _prepare(job)
    mine = shard(todo, rank, world)
    stats = RankStats(skipped=len(job.items) - len(todo))
    if rank == 0:
        logger.info(
            f"{len(job.items)} images, {stats.skipped} already done, {len(todo)} to segment "
            f"on {world} process(es)"
        )
    _process(job, generator, mine, len(todo), stats)
    return stats


def format_summary(all_stats: Sequence[RankStats]) -> str:
    """The end-of-run summary line from every process's stats."""
    done = sum(s.done for s in all_stats)
    masks = sum(s.masks for s in all_stats)
    failed = sum(len(s.failed) for s in all_stats)
    per_process = sum(s.seconds for s in all_stats) / max(done, 1)
    wall = max((s.seconds for s in all_stats), default=0.0)
    return (
        f"summary: {done} images segmented ({all_stats[0].skipped} already done before, "
        f"{failed} failed), {masks} masks, {masks / max(done, 1):.1f} masks/image, "
        f"{per_process:.2f} s/image per process, {wall / max(done, 1):.2f} s/image overall "
        f"({len(all_stats)} process(es), {_duration(wall)})"
    )


def zero_mask_hint(cfg: CfgNode, all_stats: Sequence[RankStats]) -> Optional[str]:
    """A warning when every image segmented in this run ended with zero masks, else None."""
    done = sum(s.done for s in all_stats)
    if not done or sum(s.empty for s in all_stats) < done:
        return None
    c = cfg.SAM_AUTO
    hint = (
        f"all {done} images ended with zero masks: the filters may be too strict for these "
        f"weights (--pred-iou-thresh {c.PRED_IOU_THRESH}, --stability-score-thresh "
        f"{c.STABILITY_SCORE_THRESH}, --max-mask-area-ratio {c.MAX_MASK_AREA_RATIO}); lower them"
    )
    if not cfg.MODEL.WEIGHTS:
        hint += ", or give trained weights (--checkpoint): these are random"
    return hint


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is when a record arrives."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(rank: Optional[int] = None) -> None:
    """Show sam_d2's INFO records on stderr, tagged with the process rank when given."""
    log = logging.getLogger("sam_d2")
    log.setLevel(logging.INFO)
    handler = next((h for h in log.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        log.addHandler(handler)
        log.propagate = False
    tag = f"[rank {rank}] " if rank is not None else ""
    handler.setFormatter(logging.Formatter(f"%(asctime)s {tag}%(levelname)s: %(message)s"))


def _report(job: StageJob, name: str, text: str) -> None:
    if job.report_dir:
        atomic_write(Path(job.report_dir) / name, text.encode())


def read_reports(report_dir: str) -> Tuple[List[str], Optional[int]]:
    """The error messages the processes left in ``report_dir`` (rank order, without repeats)
    and the exit status they agreed on (None when they did not finish)."""
    folder = Path(report_dir)
    errors: List[str] = []
    for path in sorted(folder.glob("error-rank*"), key=lambda p: int(p.name[10:])):
        text = path.read_text()
        if text not in errors:
            errors.append(text)
    status = folder / "exit_code"
    return errors, int(status.read_text()) if status.is_file() else None


def _end_with_launcher(launcher_pid: int) -> None:
    """Have the kernel kill this spawned process when its launcher dies, even by SIGKILL, so
    that no orphan keeps working beside a restarted job (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != launcher_pid:  # the launcher died before the request took effect
        os._exit(1)


def stage_worker(job: StageJob) -> None:
    """What every process of Detectron2's ``launch`` runs: the stage, then the summary.

    Expected failures (:class:`StageError`, :class:`~sam_d2.checkpoint.CheckpointError`) leave
    their one-line message as ``error-rank<r>`` in ``job.report_dir`` and exit with status 2;
    a finished run leaves ``exit_code`` (1 when some image could not be read or segmented,
    else 0).
    """
    world = comm.get_world_size()
    if world > 1 and job.launcher_pid:
        _end_with_launcher(job.launcher_pid)
    setup_logging(comm.get_rank() if world > 1 else None)
    try:
        stats = run_stage(job)
    except (StageError, CheckpointError) as e:
        _report(job, f"error-rank{comm.get_rank()}", " ".join(str(e).split()))
        raise SystemExit(2) from e
    all_stats = comm.all_gather(stats)
    if comm.is_main_process():
        for path in (Path(job.output) / STATE_DIR / "progress").glob("rank*"):
            path.unlink()
        logger.info(format_summary(all_stats))
        hint = zero_mask_hint(job.cfg, all_stats)
        if hint:
            logger.warning(hint)
        failed = [p for s in all_stats for p in s.failed]
        if failed:
            logger.error(
                f"{len(failed)} image(s) could not be read or segmented (a rerun retries them): "
                + ", ".join(failed)
            )
    if comm.get_local_rank() == 0:
        _report(job, "exit_code", "1" if any(s.failed for s in all_stats) else "0")
    if world > 1:
        # Leave together and tear the gloo group down: a process exiting with live gloo threads
        # can abort.
        comm.synchronize()
        dist.destroy_process_group()
