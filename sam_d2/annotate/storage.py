"""Storage of the annotation app: the image folder, per-image SA-1B JSON files and COCO export.

Layout: every image ``DIR/<rel>`` of ``--images DIR`` gets ``OUT/<rel>.json`` in the SA-1B
per-image layout (DESIGN §9)::

    {"image": {"image_id", "width", "height", "file_name"},
     "annotations": [{"id", "segmentation": {"size": [h, w], "counts": str}, "bbox", "area",
                      "predicted_iou", "stability_score", "crop_box", "point_coords",
                      # added by the app (SA-1B readers ignore them):
                      "source", "accepted", "category", "stage", "time_s", "prompts",
                      "model", "created", "updated"}],
     "annotate": {"version", "prefill"}}

``source`` says how the mask was made: "point" / "box" (SAM prompts, ``prompts`` holds them),
"prefill" (the automatic generator, stage 2; ``accepted`` is false until the annotator accepts
it), "brush" (drawn by hand) or "edited" (a mask of any of these, then changed with brush or
eraser). ``model`` names the model that made the mask. ``predicted_iou`` / ``stability_score``
are the model's figures (null for hand-drawn masks); ``point_coords`` are the prompt points.

Every write goes to a temporary file then ``os.replace``: a killed server leaves the old or the
new file, never half of one. A saved file that does not parse is renamed to
``<name>.corrupt-<time>`` (kept, never overwritten) and reported; the image then starts empty.
"""

import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as mask_utils

from ..automatic.rle import rle_to_coco
from ..utils.atomic import atomic_open

__all__ = [
    "IMAGE_SUFFIXES",
    "AnnotationError",
    "AnnotationStore",
    "ImageFolder",
    "ImageInfo",
    "atomic_write_json",
    "default_export_path",
    "check_rle",
    "export_coco",
    "make_annotation",
    "mask_geometry",
]

logger = logging.getLogger(__name__)

#: File suffixes listed as images (case-insensitive); anything else is reported as skipped.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: Sources an annotation may have (see the module docstring).
SOURCES = ("point", "box", "prefill", "brush", "edited")
FORMAT_VERSION = 1


class AnnotationError(ValueError):
    """A request or a saved file that the store cannot accept; the message says why."""


@dataclass
class ImageInfo:
    """One readable image of the folder (size from its header; decoded only when opened)."""

    name: str  # path relative to the image folder, "/"-separated
    path: Path
    width: int
    height: int
    image_id: int


@dataclass
class ImageFolder:
    """The images under ``root`` (recursive), and the files that are not usable images."""

    root: Path
    images: List[ImageInfo] = field(default_factory=list)
    skipped: List[Dict[str, str]] = field(default_factory=list)  # {"name", "reason"}
    _index: Dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def scan(cls, root: os.PathLike) -> "ImageFolder":
        """List ``root``; files that are not images or whose header cannot be read are skipped.

        Symbolic links are followed only when they stay inside ``root``.
        """
        root = Path(root).resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
        folder = cls(root)
        for path in sorted(_walk(root)):
            name = path.relative_to(root).as_posix()
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                folder.skipped.append({"name": name, "reason": "not an image file (suffix)"})
                continue
            if not path.resolve().is_relative_to(root):
                folder.skipped.append({"name": name, "reason": "link to outside the folder"})
                continue
            try:
                height, width = _header_size(path)
            except (OSError, ValueError, UnidentifiedImageError, tifffile.TiffFileError) as e:
                folder.skipped.append({"name": name, "reason": f"unreadable: {e}"})
                continue
            folder.images.append(ImageInfo(name, path, width, height, image_id_of(name)))
        return folder

    def get(self, name: str) -> ImageInfo:
        """The image called ``name``; names are looked up, never joined onto a path."""
        return self.images[self.index(name)]

    def index(self, name: str) -> int:
        """Position of image ``name`` in :attr:`images`."""
        if len(self._index) != len(self.images):
            self._index = {info.name: i for i, info in enumerate(self.images)}
        if name not in self._index:
            raise KeyError(f"no image {name!r} in {self.root}")
        return self._index[name]


def _walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in filenames:
            if not f.startswith("."):
                yield Path(dirpath) / f


def _header_size(path: Path) -> Tuple[int, int]:
    """(H, W) of an image file from its header (no full decode)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        with tifffile.TiffFile(path) as tif:
            shape = tif.pages[0].shape
        if len(shape) == 3 and shape[0] <= 4 < shape[-1]:  # planar (C, H, W)
            shape = shape[1:]
        if len(shape) < 2:
            raise ValueError(f"TIFF page of shape {shape} is not an image")
        return int(shape[0]), int(shape[1])
    with Image.open(path) as img:
        width, height = img.size
        orientation = img.getexif().get(0x0112, 1)
    if orientation in (5, 6, 7, 8):  # read_image_rgb applies EXIF rotations
        width, height = height, width
    return int(height), int(width)


def image_id_of(name: str) -> int:
    """A stable integer id of an image name (47 bits of its SHA-1, exact in JSON and float64)."""
    return int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:12], 16) >> 1


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and move it into place."""
    with atomic_open(str(path), "w") as f:
        json.dump(data, f)


def check_rle(rle: Any, height: int, width: int) -> Dict[str, Any]:
    """Validate a COCO uncompressed RLE of an (height, width) mask and return it compressed.

    Raises:
        AnnotationError: naming what is wrong (size, counts type, sum).
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise AnnotationError("mask must be an object {'size': [h, w], 'counts': [...]}")
    size = rle["size"]
    if list(size) != [height, width]:
        raise AnnotationError(
            f"mask size {list(size)} does not match the image ({height}, {width})"
        )
    counts = rle["counts"]
    if not isinstance(counts, list) or not all(
        isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts
    ):
        raise AnnotationError("mask counts must be a list of non-negative integers")
    if sum(counts) != height * width:
        raise AnnotationError(
            f"mask counts sum to {sum(counts)}, expected {height} * {width} = {height * width}"
        )
    return rle_to_coco({"size": [height, width], "counts": counts})


class AnnotationStore:
    """Per-image SA-1B JSON files under ``out``, read and written under one lock."""

    def __init__(self, folder: ImageFolder, out: os.PathLike) -> None:
        self.folder = folder
        self.out = Path(out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._cache: Dict[str, Dict[str, Any]] = {}
        #: corrupt files found and moved aside: {"name", "file", "error"}
        self.problems: List[Dict[str, str]] = [
            {"name": p.name, "file": str(p), "error": "corrupt annotation file kept aside"}
            for p in sorted(self.out.rglob("*.corrupt-*"))
        ]

    def json_path(self, name: str) -> Path:
        info = self.folder.get(name)
        return self.out / (info.name + ".json")

    # ------------------------------------------------------------------ reading
    def load(self, name: str) -> Dict[str, Any]:
        """The record of image ``name`` (a fresh one if none is saved)."""
        with self._lock:
            if name in self._cache:
                return self._cache[name]
            info = self.folder.get(name)
            path = self.json_path(name)
            record = None
            if path.exists():
                try:
                    record = _parse_record(path.read_text(), info)
                except (ValueError, KeyError, TypeError) as e:
                    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
                    os.replace(path, aside)
                    msg = f"{path}: {e}; moved to {aside.name}, the image starts empty"
                    logger.error(msg)
                    self.problems.append({"name": name, "file": str(aside), "error": msg})
            if record is None:
                record = {
                    "image": {
                        "image_id": info.image_id,
                        "width": info.width,
                        "height": info.height,
                        "file_name": info.name,
                    },
                    "annotations": [],
                    "annotate": {"version": FORMAT_VERSION, "prefill": None},
                }
            self._cache[name] = record
            return record

    def summary(self, name: str) -> Dict[str, Any]:
        """Counts of one image for the image list."""
        anns = self.load(name)["annotations"] if self.json_path(name).exists() else []
        accepted = sum(a["accepted"] for a in anns)
        return {"masks": accepted, "pending": len(anns) - accepted, "done": accepted > 0}

    # ------------------------------------------------------------------ writing
    def save(self, name: str) -> None:
        with self._lock:
            atomic_write_json(self.json_path(name), self._cache[name])

    def add(self, name: str, ann: Dict[str, Any]) -> Dict[str, Any]:
        """Add an annotation (as built by :func:`make_annotation`); returns it with its id."""
        with self._lock:
            record = self.load(name)
            ann = dict(ann, id=1 + max((a["id"] for a in record["annotations"]), default=0))
            record["annotations"].append(ann)
            self.save(name)
            return ann

    def update(self, name: str, ann_id: int, changes: Dict[str, Any]) -> Dict[str, Any]:
        with self._lock:
            ann = self.find(name, ann_id)
            ann.update(changes, updated=time.time())
            self.save(name)
            return ann

    def delete(self, name: str, ann_id: int) -> None:
        with self._lock:
            record = self.load(name)
            self.find(name, ann_id)
            record["annotations"] = [a for a in record["annotations"] if a["id"] != ann_id]
            self.save(name)

    def replace_prefill(
        self, name: str, anns: Sequence[Dict[str, Any]], settings: Dict[str, Any]
    ) -> List[Dict[str, Any]]:
        """Drop the image's pending pre-filled masks and add ``anns`` (all pending)."""
        with self._lock:
            record = self.load(name)
            record["annotations"] = [
                a for a in record["annotations"] if a["accepted"] or a["source"] != "prefill"
            ]
            start = 1 + max((a["id"] for a in record["annotations"]), default=0)
            new = [dict(a, id=start + i) for i, a in enumerate(anns)]
            record["annotations"].extend(new)
            record["annotate"]["prefill"] = dict(settings, time=time.time(), masks=len(new))
            self.save(name)
            return new

    def find(self, name: str, ann_id: int) -> Dict[str, Any]:
        for a in self.load(name)["annotations"]:
            if a["id"] == ann_id:
                return a
        raise KeyError(f"image {name!r} has no annotation {ann_id}")

    # ------------------------------------------------------------------ statistics
    def stats(self) -> Dict[str, Any]:
        """Masks and annotation time per stage (the paper's metrics) over the saved images.

        Stage times count masks made or edited by hand; pre-filled masks accepted as they are
        are counted apart (``prefilled_accepted``).
        """
        per_stage: Dict[str, List[float]] = {"1": [], "2": []}
        images_done = 0
        masks = 0
        prefilled = 0
        for info in self.folder.images:
            if not self.json_path(info.name).exists():
                continue
            accepted = [a for a in self.load(info.name)["annotations"] if a["accepted"]]
            images_done += bool(accepted)
            masks += len(accepted)
            for a in accepted:
                if a["source"] == "prefill":  # accepted as pre-filled: no annotation time
                    prefilled += 1
                else:
                    per_stage[str(a["stage"])].append(float(a["time_s"]))
        return {
            "images": len(self.folder.images),
            "images_done": images_done,
            "masks": masks,
            "masks_per_image": masks / images_done if images_done else 0.0,
            "prefilled_accepted": prefilled,
            "stages": {
                s: {
                    "masks": len(t),
                    "mean_s_per_mask": float(np.mean(t)) if t else None,
                    "total_s": float(np.sum(t)),
                }
                for s, t in per_stage.items()
            },
        }


def make_annotation(
    coco_rle: Dict[str, Any],
    *,
    source: str,
    category: str,
    stage: int,
    time_s: float,
    model: Optional[Dict[str, Any]],
    prompts: Optional[Dict[str, Any]] = None,
    predicted_iou: Optional[float] = None,
    stability_score: Optional[float] = None,
    accepted: bool = True,
) -> Dict[str, Any]:
    """An annotation record (without ``id``) from a compressed COCO RLE and its provenance."""
    if source not in SOURCES:
        raise AnnotationError(f"source must be one of {SOURCES}, got {source!r}")
    h, w = coco_rle["size"]
    points = [[p["x"], p["y"]] for p in (prompts or {}).get("points", [])]
    bbox, area = mask_geometry(coco_rle)
    now = time.time()
    return {
        "segmentation": coco_rle,
        "bbox": bbox,
        "area": area,
        "predicted_iou": predicted_iou,
        "stability_score": stability_score,
        "crop_box": [0, 0, int(w), int(h)],
        "point_coords": points,
        "source": source,
        "accepted": bool(accepted),
        "category": category,
        "stage": int(stage),
        "time_s": float(time_s),
        "prompts": prompts or {},
        "model": model,
        "created": now,
        "updated": now,
    }


def mask_geometry(coco_rle: Dict[str, Any]) -> Tuple[List[float], int]:
    """XYWH box and pixel area of a compressed COCO RLE (pycocotools' definitions)."""
    counts = coco_rle["counts"]
    rle = {
        "size": coco_rle["size"],
        "counts": counts.encode() if isinstance(counts, str) else counts,
    }
    return [float(v) for v in mask_utils.toBbox(rle)], int(mask_utils.area(rle))


_ANN_KEYS = ("id", "segmentation", "bbox", "area", "source", "accepted", "category", "stage")


def _parse_record(text: str, info: ImageInfo) -> Dict[str, Any]:
    """Parse and check a saved file; raises ValueError / KeyError / TypeError naming the problem."""
    record = json.loads(text)
    image = record["image"]
    if (image["width"], image["height"]) != (info.width, info.height):
        raise ValueError(
            f"saved size {image['width']}x{image['height']} differs from the image's "
            f"{info.width}x{info.height}"
        )
    if not isinstance(record["annotations"], list):
        raise TypeError("'annotations' is not a list")
    for i, ann in enumerate(record["annotations"]):
        missing = [k for k in _ANN_KEYS if k not in ann]
        if missing:
            raise KeyError(f"annotation {i} lacks {missing}")
        if list(ann["segmentation"]["size"]) != [info.height, info.width]:
            raise ValueError(f"annotation {i}: mask size differs from the image")
    record.setdefault("annotate", {"version": FORMAT_VERSION, "prefill": None})
    return record


def default_export_path(out: os.PathLike) -> Path:
    """``<out>_coco.json`` beside the output folder: outside it, so that the folder holds only
    per-image JSON files (SA-1B readers take every ``*.json`` in it for an image's file)."""
    out = Path(out).resolve()
    return out.with_name(out.name + "_coco.json")


def export_coco(store: AnnotationStore, path: os.PathLike) -> Dict[str, Any]:
    """Write the accepted masks of every image as one COCO instances JSON (compressed RLE).

    Categories are numbered 1.. in order of first appearance in the sorted image list. The
    image folder is recorded as ``info.image_root`` so the file can be registered without it.

    Returns:
        {"path", "images", "annotations", "categories"}.
    """
    images, annotations, categories = [], [], {}
    for info in store.folder.images:
        if not store.json_path(info.name).exists():
            continue
        accepted = [a for a in store.load(info.name)["annotations"] if a["accepted"]]
        if not accepted:
            continue
        images.append(
            {
                "id": info.image_id,
                "file_name": info.name,
                "width": info.width,
                "height": info.height,
            }
        )
        for a in accepted:
            cat = categories.setdefault(a["category"], len(categories) + 1)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": info.image_id,
                    "category_id": cat,
                    "segmentation": a["segmentation"],
                    "area": a["area"],
                    "bbox": a["bbox"],
                    "iscrowd": 0,
                }
            )
    coco = {
        "info": {
            "description": "exported by sam_d2's annotation app",
            "image_root": str(store.folder.root),
            "date_created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for n, i in categories.items()],
    }
    atomic_write_json(Path(path), coco)
    return {
        "path": str(path),
        "images": len(images),
        "annotations": len(annotations),
        "categories": len(categories),
    }
