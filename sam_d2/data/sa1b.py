"""SA-1B (and files in its per-image layout) as lazy, memory-bounded Detectron2 datasets.

One JSON per image, read only when the image is mapped (DESIGN §9)::

    {"image": {"image_id", "width", "height", "file_name"},
     "annotations": [{"id", "segmentation": {"size": [h, w], "counts": str}, "bbox" (XYWH),
                      "area", "predicted_iou", "stability_score", "crop_box", "point_coords"}]}

The same reader takes the files of

* the released SA-1B tar shards: ``sa_<n>.jpg`` beside ``sa_<n>.json``, in one folder or in any
  number of sub-folders (one per extracted shard; any subset of the shards);
* ``tools/automatic_masks.py`` (``<name>.json``, the same layout without ``image_id``);
* the annotation app (``<image file name>.json``, e.g. ``a.jpg.json``, with extra fields per
  annotation and an ``"annotate"`` block, which are ignored, except that pre-filled masks the
  annotator has not accepted, ``"accepted": false``, are suggestions and are skipped);
* the official ``scripts/amg.py --convert-to-rle`` (a bare list of annotations, no image wrapper,
  no ids): the size comes from the RLEs.

Memory: the registered dataset is a list of small dicts holding two paths each (``file_name``,
``sa1b_json``) and an integer id, built by one directory walk without opening any JSON. Masks
are decoded by :class:`sam_d2.data.train_mapper.SamTrainMapper` (or any mapper calling
:func:`read_sa1b_json`) for the image being loaded only, so DataLoader workers never hold the
annotations of more than the images they are mapping. Detectron2 serialises the list of dicts
into one shared buffer (``DATALOADER`` default), about 150 bytes per image.
"""

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

__all__ = [
    "IMAGE_EXTENSIONS",
    "SA1B_BUILTIN",
    "load_sa1b_dicts",
    "read_sa1b_json",
    "register_sa1b",
    "register_all_sa1b",
]

logger = logging.getLogger(__name__)

#: Extensions of image files matched with a JSON of the same stem (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

#: Builtin dataset name -> folder under ``$DETECTRON2_DATASETS`` (any subset of the shards).
SA1B_BUILTIN: Dict[str, str] = {"sa1b_train": "sa1b"}

_SA1B_ID = re.compile(r"sa_(\d+)$")


def _walk_files(root: Path) -> List[Path]:
    """Every file under ``root`` (recursive, sorted by relative path), via ``os.scandir``."""
    out: List[Path] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                if entry.is_dir():
                    stack.append(Path(entry.path))
                elif entry.is_file():
                    out.append(Path(entry.path))
    return sorted(out)


def load_sa1b_dicts(json_root: str, image_root: Optional[str] = None) -> List[Dict[str, Any]]:
    """Dataset dicts of every per-image JSON under ``json_root``; no JSON is opened.

    Args:
        json_root: folder holding the JSON files (searched recursively).
        image_root: folder holding the images, mirroring the sub-folders of ``json_root``;
            default ``json_root`` (the SA-1B layout: images beside their JSON).

    Returns:
        One dict per JSON, sorted by path: ``file_name`` (image path), ``sa1b_json`` (JSON
        path) and ``image_id`` (``n`` of ``sa_<n>``, else the dict's index).
        The image of ``x/a.json`` is ``x/a.<ext>`` for an extension of ``IMAGE_EXTENSIONS``,
        or ``x/a`` itself when ``a`` ends with one (the annotation app's ``a.jpg.json``).

    Raises:
        FileNotFoundError: a folder is missing or holds no JSON, or a JSON has no image.
    """
    jroot = Path(json_root)
    iroot = Path(image_root) if image_root else jroot
    for what, folder in (("JSON", jroot), ("image", iroot)):
        if not folder.is_dir():
            raise FileNotFoundError(
                f"SA-1B {what} folder {folder} not found; see datasets/README.md (SA-1B)"
            )
    files = _walk_files(jroot)
    jsons = [p for p in files if p.suffix.lower() == ".json"]
    if not jsons:
        raise FileNotFoundError(f"no .json file under SA-1B folder {jroot}")
    images = files if iroot == jroot else _walk_files(iroot)
    by_key = {
        str(p.relative_to(iroot).with_suffix("")): p
        for p in images
        if p.suffix.lower() in IMAGE_EXTENSIONS
    }
    by_name = {str(p.relative_to(iroot)): p for p in images}
    dicts = []
    for i, js in enumerate(jsons):
        key = str(js.relative_to(jroot).with_suffix(""))
        image = by_name.get(key) if Path(key).suffix.lower() in IMAGE_EXTENSIONS else None
        image = image or by_key.get(key)
        if image is None:
            raise FileNotFoundError(
                f"no image for SA-1B annotation file {js}: expected {iroot / key}.<ext> with "
                f"<ext> in {IMAGE_EXTENSIONS}, or {iroot / key}"
            )
        m = _SA1B_ID.match(js.stem)
        dicts.append(
            {"file_name": str(image), "sa1b_json": str(js), "image_id": int(m[1]) if m else i}
        )
    return dicts


def read_sa1b_json(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read one per-image JSON into Detectron2 annotations.

    Args:
        path: an SA-1B / automatic-generator / annotation-app JSON, or an ``amg.py
            --convert-to-rle`` list.

    Returns:
        ``{"height", "width", "annotations"}``; each annotation has ``segmentation`` (COCO RLE
        with ``counts`` as bytes), ``bbox`` (XYWH), ``bbox_mode`` (``BoxMode.XYWH_ABS``),
        ``area`` and ``iscrowd`` 0, plus the SA-1B fields present in the file
        (``predicted_iou``, ``stability_score``, ``crop_box``, ``point_coords``, ``id``).
        Other fields are ignored.

    Raises:
        ValueError: the file is not JSON or not in one of these layouts, or an annotation
            lacks a field or has a mask of another size (the message names the file, the
            annotation index and the field).
    """
    try:
        with open(path) as f:
            record = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if isinstance(record, list):
        anns_in, image = record, {}
    elif isinstance(record, dict) and isinstance(record.get("annotations"), list):
        anns_in, image = record["annotations"], record.get("image") or {}
    else:
        raise ValueError(
            f"{path}: expected an SA-1B record {{'image', 'annotations': [...]}} or a list of "
            f"annotations, got a {type(record).__name__}"
            + (f" with keys {sorted(record)[:6]}" if isinstance(record, dict) else "")
        )
    size = None
    if "height" in image and "width" in image:
        size = [int(image["height"]), int(image["width"])]
    annotations = []
    for k, a in enumerate(anns_in):
        if isinstance(a, dict) and a.get("accepted", True) is False:
            continue  # an annotation app suggestion nobody accepted
        seg = a.get("segmentation") if isinstance(a, dict) else None
        if not isinstance(seg, dict) or "size" not in seg or "counts" not in seg:
            raise ValueError(
                f"{path}: annotation {k} has no COCO RLE 'segmentation' {{'size', 'counts'}}"
            )
        if size is None:
            size = [int(v) for v in seg["size"]]
        if [int(v) for v in seg["size"]] != size:
            raise ValueError(
                f"{path}: annotation {k} has a mask of size {seg['size']}, the image is {size}"
            )
        if "bbox" not in a:
            raise ValueError(f"{path}: annotation {k} has no 'bbox'")
        counts = seg["counts"]
        if not isinstance(counts, (str, bytes)):
            raise ValueError(
                f"{path}: annotation {k}: segmentation 'counts' must be a compressed RLE string"
            )
        ann = {
            key: a[key]
            for key in (
                "id",
                "area",
                "predicted_iou",
                "stability_score",
                "crop_box",
                "point_coords",
            )
            if key in a
        }
        ann.update(
            segmentation={
                "size": size,
                "counts": counts.encode() if isinstance(counts, str) else counts,
            },
            bbox=[float(v) for v in a["bbox"]],
            bbox_mode=BoxMode.XYWH_ABS,
            iscrowd=0,
            category_id=0,
        )
        annotations.append(ann)
    if size is None:
        raise ValueError(f"{path}: no image size (no 'image' height/width and no annotation)")
    return {"height": size[0], "width": size[1], "annotations": annotations}


def register_sa1b(name: str, root: str, image_root: Optional[str] = None) -> None:
    """Register a dataset of per-image JSON files (lazy: nothing is read until it is loaded).

    Args:
        name: dataset name, e.g. "sa1b_train" or "my_annotations".
        root: folder of the JSON files (see :func:`load_sa1b_dicts`).
        image_root: folder of the images if not beside the JSON files.
    """
    DatasetCatalog.register(name, lambda: load_sa1b_dicts(root, image_root))
    MetadataCatalog.get(name).set(
        json_root=root,
        image_root=image_root or root,
        thing_classes=["object"],
    )


def register_all_sa1b(root: Optional[str] = None) -> None:
    """Register the builtin SA-1B names under ``root`` (default ``$DETECTRON2_DATASETS`` or
    ``datasets``), lazily."""
    root = root or os.getenv("DETECTRON2_DATASETS", "datasets")
    for name, folder in SA1B_BUILTIN.items():
        if name not in DatasetCatalog.list():
            register_sa1b(name, os.path.join(root, folder))


register_all_sa1b()  # lazy: sa1b_train under $DETECTRON2_DATASETS, no file access until loaded
