"""Readers for the annotation formats of the SAM 23-dataset single-point benchmark.

Each reader turns one published annotation format into :class:`LazyImage` records: a sort key
(the image path) and a ``build`` callable returning that image's Detectron2 dataset dict. Readers
of formats that keep masks in pixels (label maps, one PNG per instance, HDF5) or polygons defer
the decoding to ``build``, so that subsampling (:mod:`sam_d2.data.sam23`) decodes only the
images it keeps.

Format families:

* COCO instances json (:func:`coco_json_images`, via Detectron2's ``load_coco_json``) and LVIS
  json (:func:`lvis_json_images`, via ``load_lvis_json``);
* label maps paired with images (:func:`label_map_images`): one mask per label value (instance
  ids, class ids, Cityscapes ``instanceIds``), per connected component, or per file; PNG/TIFF/HDF5;
* one binary PNG per instance (:func:`instance_mask_folder_images`, BBBC038 stage1);
* ADE20K's RGB-encoded ``_seg.png`` and ``_parts_N.png`` (:func:`ade20k_images`);
* polygon json: VGG Image Annotator (:func:`via_json_images`), EPIC-KITCHENS VISOR
  (:func:`visor_json_images`), WoodScape (:func:`woodscape_json_images`);
* YouTube-VIS-style video json (:func:`ytvis_json_images`, OVIS), one image per frame.

All annotations are class-agnostic: ``category_id`` is 0. Masks decoded here are compressed COCO
RLE (``counts`` as str); masks read from COCO/LVIS json stay as the json stores them. Crowd
regions keep ``iscrowd=1``; Detectron2's mappers drop them and :func:`count_masks` ignores them.
"""

import contextlib
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_util
import scipy.ndimage
import tifffile
from detectron2.data.datasets import load_coco_json, load_lvis_json
from detectron2.structures import BoxMode
from PIL import Image

__all__ = [
    "LazyImage",
    "ade20k_images",
    "binary_mask_annotations",
    "cityscapes_panoptic_annotations",
    "coco_json_images",
    "connected_component_annotations",
    "count_masks",
    "instance_mask_folder_images",
    "label_map_annotations",
    "label_map_images",
    "lvis_json_images",
    "mask_annotation",
    "polygons_annotation",
    "read_label_map",
    "via_json_images",
    "visor_json_images",
    "woodscape_json_images",
    "ytvis_json_images",
]

logger = logging.getLogger(__name__)

#: Cityscapes label ids evaluated by the official panoptic conversion (``ignoreInEval`` False).
CITYSCAPES_EVAL_IDS = frozenset(
    {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}
)
#: Cityscapes label ids with instances (``hasInstances``); without instance id they are crowd.
CITYSCAPES_THING_IDS = frozenset(range(24, 34))

Annotation = dict
LabelDecoder = Callable[[np.ndarray], list[Annotation]]


@dataclass(frozen=True)
class LazyImage:
    """One image of a dataset whose Detectron2 dict is built on demand.

    Attributes:
        key: sort key, the image path; fixes the order that seeded subsampling shuffles.
        build: returns the dataset dict (``file_name``, ``image_id``, ``height``, ``width``,
            ``annotations``); may read and decode annotation files.
    """

    key: str
    build: Callable[[], dict]


def count_masks(record: dict) -> int:
    """Number of evaluable (non-crowd) masks in a dataset dict."""
    return sum(1 for anno in record["annotations"] if not anno.get("iscrowd", 0))


# ----------------------------------------------------------------------------- annotations


def _rle_annotation(rle: dict, iscrowd: int = 0) -> Annotation | None:
    if float(mask_util.area(rle)) == 0:
        return None
    counts = rle["counts"]
    segmentation = {
        "size": [int(s) for s in rle["size"]],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }
    return {
        "segmentation": segmentation,
        "bbox": [float(v) for v in mask_util.toBbox(rle)],
        "bbox_mode": BoxMode.XYWH_ABS,
        "category_id": 0,
        "iscrowd": iscrowd,
    }


def mask_annotation(mask: np.ndarray, iscrowd: int = 0) -> Annotation | None:
    """Class-agnostic Detectron2 annotation of one binary mask.

    Args:
        mask: (H, W) bool or 0/1 array.
        iscrowd: 1 for a crowd region.

    Returns:
        Annotation with RLE ``segmentation`` and XYWH_ABS ``bbox``; None for an empty mask.
    """
    return _rle_annotation(mask_util.encode(np.asfortranarray(mask, dtype=np.uint8)), iscrowd)


def polygons_annotation(
    polygons: Sequence[Sequence[float]], height: int, width: int
) -> Annotation | None:
    """Class-agnostic annotation of one object given as polygons (union of their areas).

    Args:
        polygons: flat ``[x1, y1, x2, y2, ...]`` lists in pixels; lists with fewer than 3
            points are ignored.
        height: image height.
        width: image width.

    Returns:
        Annotation with RLE ``segmentation``; None when no polygon has area.
    """
    valid = [[float(v) for v in poly] for poly in polygons if len(poly) >= 6 and len(poly) % 2 == 0]
    if not valid:
        return None
    return _rle_annotation(mask_util.merge(mask_util.frPyObjects(valid, height, width)))


def label_map_annotations(label: np.ndarray, ignore: Iterable[int] = (0,)) -> list[Annotation]:
    """One annotation per distinct value of a label map (instance ids or class ids).

    Args:
        label: (H, W) integer label map.
        ignore: values that are not objects (background, void).

    Returns:
        Annotations in increasing label order.
    """
    values = np.unique(label)
    values = values[~np.isin(values, list(ignore))]
    annos = (mask_annotation(label == v) for v in values)
    return [a for a in annos if a is not None]


def connected_component_annotations(label: np.ndarray) -> list[Annotation]:
    """One annotation per 8-connected component of the non-zero pixels of a (binary) mask."""
    components, num = scipy.ndimage.label(label != 0, structure=np.ones((3, 3), dtype=bool))
    annos = (mask_annotation(components == i) for i in range(1, num + 1))
    return [a for a in annos if a is not None]


def binary_mask_annotations(label: np.ndarray) -> list[Annotation]:
    """The non-zero pixels of a binary mask as a single annotation (none if empty)."""
    anno = mask_annotation(label != 0)
    return [] if anno is None else [anno]


def cityscapes_panoptic_annotations(ids: np.ndarray) -> list[Annotation]:
    """Panoptic segments of a Cityscapes ``*_gtFine_instanceIds.png``.

    Follows cityscapesScripts' panoptic conversion: a value ``v >= 1000`` is instance
    ``v % 1000`` of label ``v // 1000``; ``v < 1000`` is the whole region of label ``v``.
    Labels with ``ignoreInEval`` are skipped; a thing label without instance id is a crowd region.

    Args:
        ids: (H, W) int array read from an ``instanceIds`` PNG.

    Returns:
        One annotation per segment, crowd regions with ``iscrowd=1``.
    """
    annos = []
    for value in np.unique(ids):
        label_id = int(value) // 1000 if value >= 1000 else int(value)
        if label_id not in CITYSCAPES_EVAL_IDS:
            continue
        iscrowd = int(value < 1000 and label_id in CITYSCAPES_THING_IDS)
        anno = mask_annotation(ids == value, iscrowd=iscrowd)
        if anno is not None:
            annos.append(anno)
    return annos


# ----------------------------------------------------------------------------- file readers


def read_label_map(path: Path) -> np.ndarray:
    """Read a single-channel label map without any value conversion.

    TIFF via ``tifffile``, HDF5 (``.hdf5``/``.h5``, dataset ``"dataset"`` as in Hypersim) via
    ``h5py``, anything else via PIL (palette PNGs give their indices, 16-bit PNGs their values).
    A 3-channel file whose channels are equal is accepted as single-channel.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unreadable file, or not a single-channel 2-D array.
    """
    if not path.is_file():
        raise FileNotFoundError(f"label file {path} not found")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            label = tifffile.imread(path)
        elif suffix in (".hdf5", ".h5"):
            import h5py  # optional dependency, only needed for Hypersim

            with h5py.File(path, "r") as f:
                if "dataset" not in f:
                    raise ValueError(f"HDF5 label file {path} has no 'dataset' (has {list(f)})")
                label = f["dataset"][()]
        else:
            with Image.open(path) as img:
                label = np.asarray(img)
    except (OSError, tifffile.TiffFileError) as e:
        raise ValueError(f"cannot read label file {path}: {e}") from e
    if label.ndim == 3 and label.shape[-1] in (3, 4) and (label[..., :3] == label[..., :1]).all():
        label = label[..., 0]
    if label.ndim != 2:
        raise ValueError(
            f"label file {path} holds an array of shape {label.shape}, expected (H, W)"
        )
    return label


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, read from its header."""
    if not path.is_file():
        raise FileNotFoundError(f"image file {path} not found")
    if path.suffix.lower() in (".tif", ".tiff"):
        with tifffile.TiffFile(path) as tif:
            shape = tif.pages[0].shape
        return int(shape[0]), int(shape[1])
    with Image.open(path) as img:
        return img.height, img.width


def _load_json(path: Path) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid json: {e}") from e


def _key(mapping: object, key: str, source: Path) -> object:
    if not isinstance(mapping, dict) or key not in mapping:
        raise ValueError(f"{source}: expected key {key!r} is missing")
    return mapping[key]


def _record(
    file_name: Path, image_id: str, height: int, width: int, annos: list[Annotation]
) -> dict:
    return {
        "file_name": str(file_name),
        "image_id": image_id,
        "height": int(height),
        "width": int(width),
        "annotations": annos,
    }


def _image_id(path: Path, base: Path) -> str:
    return os.path.relpath(path, base)


# ----------------------------------------------------------------------------- json families


def _agnostic(records: list[dict], source: Path) -> list[dict]:
    """Class-agnostic copies of loaded dicts; annotations without a mask are dropped."""
    dropped = 0
    for record in records:
        annos = []
        for anno in record["annotations"]:
            if not anno.get("segmentation"):
                dropped += 1
                continue
            annos.append(dict(anno, category_id=0, iscrowd=int(anno.get("iscrowd", 0))))
        record["annotations"] = annos
    if dropped:
        logger.warning("%s: dropped %d annotations without a segmentation mask", source, dropped)
    return records


def _eager(records: list[dict]) -> list[LazyImage]:
    return [LazyImage(r["file_name"], partial(dict, r)) for r in records]


def coco_json_images(json_files: Sequence[Path], image_root: Path) -> list[LazyImage]:
    """Images of one or more COCO instances json files sharing one image folder.

    Args:
        json_files: COCO json files; when several are given (e.g. train/val/test) their images
            are concatenated, and image ids are renumbered 0..N-1 if they collide.
        image_root: folder the json ``file_name`` entries are relative to.

    Returns:
        One record per json image, annotations class-agnostic, masks as stored in the json.

    Raises:
        FileNotFoundError: a json file is missing.
        ValueError: a file is not a COCO instances json.
    """
    records: list[dict] = []
    for json_file in json_files:
        if not json_file.is_file():
            raise FileNotFoundError(f"annotation file {json_file} not found")
        try:
            loaded = load_coco_json(str(json_file), str(image_root))
        except (KeyError, AssertionError, json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{json_file} is not a COCO instances json: {e!r}") from e
        records += _agnostic(loaded, json_file)
    ids = [r["image_id"] for r in records]
    if len(set(ids)) != len(ids):
        logger.info("image ids of %s collide; renumbering them", [str(j) for j in json_files])
        for i, record in enumerate(records):
            record["image_id"] = i
    return _eager(records)


def lvis_json_images(json_file: Path, image_root: Path) -> list[LazyImage]:
    """Images of an LVIS json (COCO images; split folder taken from each image's ``coco_url``).

    Args:
        json_file: LVIS annotation json (v0.5 or v1).
        image_root: folder holding COCO's ``train2017/`` and ``val2017/``.

    Returns:
        One record per image; LVIS has no crowd annotations, so ``iscrowd`` is 0 everywhere.
    """
    if not json_file.is_file():
        raise FileNotFoundError(f"annotation file {json_file} not found")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the lvis API prints progress
            loaded = load_lvis_json(str(json_file), os.path.join(str(image_root), ""))
    except (KeyError, AssertionError, json.JSONDecodeError, TypeError) as e:
        raise ValueError(f"{json_file} is not an LVIS json: {e!r}") from e
    return _eager(_agnostic(loaded, json_file))


def via_json_images(json_file: Path, image_dir: Path, base: Path) -> list[LazyImage]:
    """Images of a VGG Image Annotator (VIA 1.x or 2.x) project json with polygon regions.

    Every region whose ``shape_attributes`` is a ``polygon`` or ``polyline`` (closed) becomes one
    mask; other shapes (points, rectangles) are skipped with a warning.

    Args:
        json_file: VIA json, ``{key: {"filename", "regions": [...] or {...}}}``.
        image_dir: folder of the images named by ``filename``.
        base: folder image ids are made relative to.
    """
    data = _load_json(json_file)
    if not isinstance(data, dict):
        raise ValueError(f"{json_file}: expected a VIA project dict")  # noqa: TRY004
    images = []
    skipped = 0
    for entry in data.values():
        filename = _key(entry, "filename", json_file)
        regions = _key(entry, "regions", json_file)
        regions = list(regions.values()) if isinstance(regions, dict) else regions
        polygons = []
        for region in regions:
            shape = _key(region, "shape_attributes", json_file)
            if _key(shape, "name", json_file) not in ("polygon", "polyline"):
                skipped += 1
                continue
            xs = _key(shape, "all_points_x", json_file)
            ys = _key(shape, "all_points_y", json_file)
            if len(xs) != len(ys):
                raise ValueError(
                    f"{json_file}: region of {filename} has {len(xs)} x but {len(ys)} y"
                )
            polygons.append([[v for xy in zip(xs, ys, strict=True) for v in xy]])
        image_file = image_dir / filename
        images.append(
            LazyImage(
                str(image_file),
                partial(_polygon_record, image_file, _image_id(image_file, base), polygons, None),
            )
        )
    if skipped:
        logger.warning("%s: skipped %d regions that are not polygons", json_file, skipped)
    return images


def visor_json_images(json_files: Sequence[Path], frames_dir: Path, base: Path) -> list[LazyImage]:
    """Frames of EPIC-KITCHENS VISOR sparse annotation files (one json per video).

    Each ``video_annotations`` entry is one frame; each of its ``annotations`` is one mask given as
    ``segments``, a list of polygons of ``[x, y]`` points.

    Args:
        json_files: ``<video_id>.json`` files (e.g. ``P01_107.json``).
        frames_dir: folder with one sub-folder per participant holding one folder per video,
            ``<frames_dir>/P01/P01_107/<image name>`` (the unzipped ``P01_107.zip``).
        base: folder image ids are made relative to.
    """
    images = []
    for json_file in json_files:
        data = _load_json(json_file)
        video_id = json_file.stem
        video_dir = frames_dir / video_id.split("_")[0] / video_id
        for frame in _key(data, "video_annotations", json_file):
            name = _key(_key(frame, "image", json_file), "name", json_file)
            polygons = [
                [[v for xy in segment for v in xy] for segment in _key(anno, "segments", json_file)]
                for anno in _key(frame, "annotations", json_file)
            ]
            image_file = video_dir / name
            images.append(
                LazyImage(
                    str(image_file),
                    partial(
                        _polygon_record, image_file, _image_id(image_file, base), polygons, None
                    ),
                )
            )
    return images


def woodscape_json_images(
    json_files: Sequence[Path], image_dir: Path, base: Path
) -> list[LazyImage]:
    """Images of WoodScape ``instance_annotations/*.json`` files.

    Each file is ``{<name>: {"image_height", "image_width", "annotation": [...]}}``; every entry
    of ``annotation`` (one polygon of ``[x, y]`` points in ``segmentation``) is one mask. The image
    is ``<image_dir>/<json stem>.png``.
    """
    images = []
    for json_file in json_files:
        data = _load_json(json_file)
        if not isinstance(data, dict) or len(data) != 1:
            raise ValueError(f"{json_file}: expected one top-level entry (the image)")
        entry = next(iter(data.values()))
        size = (
            int(_key(entry, "image_height", json_file)),
            int(_key(entry, "image_width", json_file)),
        )
        polygons = [
            [[v for xy in _key(anno, "segmentation", json_file) for v in xy]]
            for anno in _key(entry, "annotation", json_file)
        ]
        image_file = image_dir / f"{json_file.stem}.png"
        images.append(
            LazyImage(
                str(image_file),
                partial(_polygon_record, image_file, _image_id(image_file, base), polygons, size),
            )
        )
    return images


def _polygon_record(
    image_file: Path,
    image_id: str,
    objects: list[list[list[float]]],
    size: tuple[int, int] | None,
) -> dict:
    height, width = size if size is not None else image_size(image_file)
    annos = (polygons_annotation(polys, height, width) for polys in objects)
    return _record(image_file, image_id, height, width, [a for a in annos if a is not None])


def ytvis_json_images(json_file: Path, image_root: Path) -> list[LazyImage]:
    """Frames of a YouTube-VIS-style video instance json (OVIS), each frame one image.

    ``videos`` list ``file_names`` (relative to ``image_root``), ``height`` and ``width``;
    each of the ``annotations`` has ``video_id`` and ``segmentations``, one RLE (compressed or
    not) or None per frame. Every non-None frame segmentation is one mask of that frame.
    """
    data = _load_json(json_file)
    videos = {_key(v, "id", json_file): v for v in _key(data, "videos", json_file)}
    per_frame: dict[tuple[int, int], list[tuple[dict, int]]] = {}
    for anno in _key(data, "annotations", json_file):
        video_id = _key(anno, "video_id", json_file)
        if video_id not in videos:
            raise ValueError(
                f"{json_file}: annotation {anno.get('id')} refers to unknown video {video_id}"
            )
        for frame, segm in enumerate(_key(anno, "segmentations", json_file)):
            if segm is not None:
                per_frame.setdefault((video_id, frame), []).append(
                    (segm, int(anno.get("iscrowd", 0)))
                )
    images = []
    for video_id, video in videos.items():
        for frame, file_name in enumerate(_key(video, "file_names", json_file)):
            image_file = image_root / file_name
            images.append(
                LazyImage(
                    str(image_file),
                    partial(
                        _rle_record,
                        image_file,
                        file_name,
                        int(_key(video, "height", json_file)),
                        int(_key(video, "width", json_file)),
                        per_frame.get((video_id, frame), []),
                    ),
                )
            )
    return images


def _rle_record(
    image_file: Path, image_id: str, height: int, width: int, segms: list[tuple[dict, int]]
) -> dict:
    annos = []
    for segm, iscrowd in segms:
        rle = (
            mask_util.frPyObjects(segm, height, width) if isinstance(segm["counts"], list) else segm
        )
        anno = _rle_annotation(rle, iscrowd)
        if anno is not None:
            annos.append(anno)
    return _record(image_file, image_id, height, width, annos)


# ----------------------------------------------------------------------------- pixel families


def label_map_images(
    pairs: Sequence[tuple[Path, Path]], decode: LabelDecoder, base: Path
) -> list[LazyImage]:
    """Images paired with a label map; ``decode`` turns the label map into annotations.

    Args:
        pairs: (image file, label file) pairs; label files are read by :func:`read_label_map`.
        decode: e.g. :func:`label_map_annotations`, :func:`connected_component_annotations`,
            :func:`cityscapes_panoptic_annotations`.
        base: folder image ids are made relative to.
    """
    return [
        LazyImage(str(image), partial(_label_record, image, label, _image_id(image, base), decode))
        for image, label in pairs
    ]


def _label_record(image_file: Path, label_file: Path, image_id: str, decode: LabelDecoder) -> dict:
    label = read_label_map(label_file)
    if not image_file.is_file():
        raise FileNotFoundError(f"image file {image_file} (of label file {label_file}) not found")
    return _record(image_file, image_id, label.shape[0], label.shape[1], decode(label))


def instance_mask_folder_images(
    samples: Sequence[tuple[Path, Sequence[Path]]], base: Path
) -> list[LazyImage]:
    """Images whose instances are separate binary mask files (BBBC038 stage1: one PNG per nucleus).

    Args:
        samples: (image file, mask files) pairs; each mask file's non-zero pixels are one instance.
        base: folder image ids are made relative to.
    """
    return [
        LazyImage(
            str(image), partial(_mask_files_record, image, list(masks), _image_id(image, base))
        )
        for image, masks in samples
    ]


def _mask_files_record(image_file: Path, mask_files: list[Path], image_id: str) -> dict:
    height, width = image_size(image_file)
    annos = []
    for mask_file in mask_files:
        mask = read_label_map(mask_file)
        if mask.shape != (height, width):
            raise ValueError(
                f"mask {mask_file} has shape {mask.shape}, "
                f"its image {image_file} has {(height, width)}"
            )
        anno = mask_annotation(mask != 0)
        if anno is not None:
            annos.append(anno)
    return _record(image_file, image_id, height, width, annos)


def ade20k_images(seg_files: Sequence[Path], base: Path) -> list[LazyImage]:
    """Images of the full ADE20K release (``ADE_*_seg.png`` beside ``ADE_*.jpg``).

    Object masks come from ``<stem>_seg.png`` and part masks from every ``<stem>_parts_<k>.png``:
    in both, the class is ``R / 10 * 256 + G`` (0 = unlabelled) and each distinct ``B`` value
    among labelled pixels is one instance (the ADE20K toolkit's decoding).
    """
    images = []
    for seg_file in seg_files:
        stem = seg_file.name[: -len("_seg.png")]
        image_file = seg_file.with_name(f"{stem}.jpg")
        part_files = sorted(seg_file.parent.glob(f"{stem}_parts_*.png"))
        images.append(
            LazyImage(
                str(image_file),
                partial(
                    _ade20k_record, image_file, [seg_file, *part_files], _image_id(image_file, base)
                ),
            )
        )
    return images


def _ade20k_record(image_file: Path, encoded_files: list[Path], image_id: str) -> dict:
    if not image_file.is_file():
        raise FileNotFoundError(f"image file {image_file} (of {encoded_files[0]}) not found")
    annos: list[Annotation] = []
    shape = None
    for encoded_file in encoded_files:
        with Image.open(encoded_file) as img:
            rgb = np.asarray(img.convert("RGB")).astype(np.int32)
        if shape is not None and rgb.shape[:2] != shape:
            raise ValueError(
                f"{encoded_file} has size {rgb.shape[:2]}, {encoded_files[0]} has {shape}"
            )
        shape = rgb.shape[:2]
        labelled = (rgb[..., 0] // 10 * 256 + rgb[..., 1]) > 0
        instances = np.where(labelled, rgb[..., 2], -1)
        annos += label_map_annotations(instances, ignore=(-1,))
    return _record(image_file, image_id, shape[0], shape[1], annos)
