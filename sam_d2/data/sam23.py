"""The 23 datasets of the SAM paper's single-point valid-mask benchmark as Detectron2 datasets.

Kirillov et al., "Segment Anything" (2023), §7.1 and appendix D.1 / Table 7. Each dataset is
registered as ``sam23_<name>`` (see :data:`SAM23_DATASETS`, in the paper's Fig. 8 order), reads
its published format from ``<root>/sam23/<name>/`` (``root`` defaults to
``$DETECTRON2_DATASETS``, else ``datasets``), uses the split of Table 7, and has the metadata
``evaluator_type="point_miou"``, ``dataset_label`` (display name), ``split``,
``thing_classes=["object"]`` (all annotations are class-agnostic, ``category_id`` 0) and
``dataset_root``. The expected layouts are documented in ``datasets/README.md``.

Subsampling (paper: "we subsampled datasets with more than 15k masks ... randomly picked images
so that the total number of masks in the sampled images was ~10k"). The exact rule used here:

1. sort the split's images by file path and shuffle them with
   ``numpy.random.RandomState(seed).permutation`` (seed :data:`SUBSAMPLE_SEED` = 0);
2. walk the shuffled order, counting non-crowd masks; if the whole split has at most
   :data:`SUBSAMPLE_THRESHOLD` (15,000) masks keep every image, otherwise keep the shortest
   prefix of the shuffled order holding at least :data:`SUBSAMPLE_TARGET` (10,000) masks;
3. drop images without a non-crowd mask and return the kept images sorted by file path.

The walk stops as soon as 15,000 masks are exceeded, so a large dataset never decodes more than
~15k masks worth of label images. The subsample depends only on the split's file set and seed.
"""

import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from .sam23_formats import (
    LazyImage,
    ade20k_images,
    binary_mask_annotations,
    cityscapes_panoptic_annotations,
    coco_json_images,
    connected_component_annotations,
    count_masks,
    instance_mask_folder_images,
    label_map_annotations,
    label_map_images,
    lvis_json_images,
    via_json_images,
    visor_json_images,
    woodscape_json_images,
    ytvis_json_images,
)

__all__ = [
    "SAM23_DATASETS",
    "SUBSAMPLE_SEED",
    "SUBSAMPLE_TARGET",
    "SUBSAMPLE_THRESHOLD",
    "load_sam23",
    "register_all_sam23",
    "register_sam23",
    "subsample_by_images",
]

logger = logging.getLogger(__name__)

#: Datasets with more masks than this are subsampled (paper: 15k).
SUBSAMPLE_THRESHOLD = 15_000
#: Number of masks a subsample reaches (paper: ~10k).
SUBSAMPLE_TARGET = 10_000
#: Default seed of the subsampling shuffle.
SUBSAMPLE_SEED = 0

_README_HINT = "see datasets/README.md, section 'SAM 23-dataset point benchmark'"
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def subsample_by_images(
    images: Sequence[LazyImage],
    seed: int = SUBSAMPLE_SEED,
    target: int = SUBSAMPLE_TARGET,
    threshold: int = SUBSAMPLE_THRESHOLD,
) -> list[dict]:
    """Build the dataset dicts of a split, subsampling images if it has too many masks.

    Implements the rule in the module docstring: shuffle (seeded) the images sorted by key; if
    the split has more than ``threshold`` non-crowd masks keep the shortest shuffled prefix with
    at least ``target`` masks, otherwise keep all; drop images without a non-crowd mask.

    Args:
        images: the split's images; ``build`` is called only for images walked over.
        seed: seed of ``numpy.random.RandomState`` for the shuffle.
        target: mask count a subsample reaches.
        threshold: datasets with more masks than this are subsampled.

    Returns:
        Dataset dicts sorted by ``LazyImage.key``.

    Raises:
        ValueError: ``target`` is larger than ``threshold``.
    """
    if target > threshold:
        raise ValueError(f"subsampling target {target} exceeds the threshold {threshold}")
    ordered = sorted(images, key=lambda image: image.key)
    permutation = np.random.RandomState(seed).permutation(len(ordered))
    walked: list[tuple[int, dict]] = []
    total = 0
    prefix: int | None = None  # length of the shortest walked prefix with >= target masks
    for rank, index in enumerate(permutation):
        record = ordered[index].build()
        walked.append((int(index), record))
        total += count_masks(record)
        if prefix is None and total >= target:
            prefix = rank + 1
        if total > threshold:
            kept = walked[:prefix]
            break
    else:
        kept = walked
    kept.sort(key=lambda item: item[0])
    records = [record for _, record in kept if count_masks(record) > 0]
    logger.info(
        "kept %d images with %d masks (walked %d of %d images%s)",
        len(records),
        sum(count_masks(r) for r in records),
        len(walked),
        len(ordered),
        ", subsampled" if total > threshold else "",
    )
    return records


# ----------------------------------------------------------------------------- layout helpers


def _require(path: Path, name: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"SAM-23 dataset '{name}': expected {path}, not found; {_README_HINT}"
        )
    return path


def _glob(folder: Path, pattern: str, name: str) -> list[Path]:
    files = sorted(_require(folder, name).glob(pattern))
    if not files:
        raise FileNotFoundError(
            f"SAM-23 dataset '{name}': no files match {folder / pattern}; {_README_HINT}"
        )
    return files


def _pair_by_stem(
    image_dir: Path, label_files: Sequence[Path], name: str
) -> list[tuple[Path, Path]]:
    """Pair each label file with the image of the same stem in ``image_dir`` (any image suffix)."""
    images = {
        p.stem: p
        for p in sorted(_require(image_dir, name).iterdir())
        if p.suffix.lower() in _IMAGE_SUFFIXES
    }
    pairs = []
    for label in label_files:
        if label.stem not in images:
            raise FileNotFoundError(f"SAM-23 dataset '{name}': no image for {label} in {image_dir}")
        pairs.append((images[label.stem], label))
    return pairs


# ----------------------------------------------------------------------------- the 23 datasets


def _ade20k(base: Path) -> list[LazyImage]:
    # Full ADE20K release (2016_07_26 or 2021_17_01), validation split, objects and parts.
    return ade20k_images(_glob(base, "**/validation/**/ADE_val_*_seg.png", "ade20k"), base)


def _bbbc038(base: Path) -> list[LazyImage]:
    stage1 = base / "stage1_train"
    if stage1.is_dir():  # official layout: <id>/images/<id>.png, <id>/masks/*.png
        samples = []
        for sample in sorted(p for p in stage1.iterdir() if p.is_dir()):
            image = _require(sample / "images" / f"{sample.name}.png", "bbbc038")
            samples.append((image, sorted((sample / "masks").glob("*.png"))))
        if not samples:
            raise FileNotFoundError(f"SAM-23 dataset 'bbbc038': {stage1} holds no sample folder")
        return instance_mask_folder_images(samples, base)
    if (base / "masks").is_dir():  # label-map layout: images/<stem>.*, masks/<stem>.tif|png
        labels = [
            p for p in _glob(base / "masks", "*", "bbbc038") if p.suffix.lower() in _IMAGE_SUFFIXES
        ]
        return label_map_images(
            _pair_by_stem(base / "images", labels, "bbbc038"), label_map_annotations, base
        )
    raise FileNotFoundError(
        f"SAM-23 dataset 'bbbc038': expected {stage1} (stage1 layout) or {base / 'images'} and "
        f"{base / 'masks'} (label-map layout); {_README_HINT}"
    )


def _cityscapes(base: Path) -> list[LazyImage]:
    labels = _glob(base / "gtFine" / "val", "*/*_gtFine_instanceIds.png", "cityscapes")
    images = base / "leftImg8bit" / "val"
    pairs = [
        (images / p.parent.name / p.name.replace("_gtFine_instanceIds.png", "_leftImg8bit.png"), p)
        for p in labels
    ]
    return label_map_images(pairs, cityscapes_panoptic_annotations, base)


def _doors(base: Path) -> list[LazyImage]:
    # DS1 of the segmentation release, all of its T/V/Te1/Te2 lists: img/<name>.png with a
    # binary mask/<name>.png (one boulder).
    root = base / "Segmentation" / "DS1" / "DS"
    labels = _glob(root / "mask", "*.png", "doors")
    return label_map_images(
        _pair_by_stem(root / "img", labels, "doors"), binary_mask_annotations, base
    )


def _dram(base: Path) -> list[LazyImage]:
    # Test split: test/<movement>/<name>.jpg with VOC-indexed labels/<movement>/<name>.png
    # (0 background, 255 void); each class present is one (semantic) mask.
    images = _glob(base / "test", "**/*.jpg", "dram")
    pairs = [
        (p, base / "labels" / p.relative_to(base / "test").with_suffix(".png")) for p in images
    ]
    return label_map_images(pairs, partial(label_map_annotations, ignore=(0, 255)), base)


#: EgoHOS train images kept: file names starting with these (the paper: Ego4D and THU-READ only).
EGOHOS_SOURCE_PREFIXES = ("ego4d", "thu")


def _egohos(base: Path) -> list[LazyImage]:
    # train/label/<name>.png: 1 left hand, 2 right hand, 3-8 interacting objects; one mask
    # per value present.
    labels = _glob(base / "train" / "label", "*.png", "egohos")
    kept = [p for p in labels if p.name.lower().startswith(EGOHOS_SOURCE_PREFIXES)]
    if not kept:
        found = sorted({re.split(r"[_\-]", p.name, maxsplit=1)[0] for p in labels})
        raise ValueError(
            f"SAM-23 dataset 'egohos': no label file in {base / 'train' / 'label'} starts with "
            f"{EGOHOS_SOURCE_PREFIXES}; file name prefixes found: {found}"
        )
    return label_map_images(
        _pair_by_stem(base / "train" / "image", kept, "egohos"), label_map_annotations, base
    )


def _gtea(base: Path) -> list[LazyImage]:
    # Hand masks (binary); each 8-connected hand region is one mask.
    labels = _glob(base / "masks", "*.png", "gtea")
    return label_map_images(
        _pair_by_stem(base / "images", labels, "gtea"), connected_component_annotations, base
    )


#: Hypersim volumes used by the paper: Evermotion archinteriors 1-55 without 20, 25, 40, 49.
HYPERSIM_VOLUMES = frozenset(range(1, 56)) - {20, 25, 40, 49}


def _hypersim(base: Path) -> list[LazyImage]:
    labels = _glob(
        base, "ai_*_*/images/scene_cam_*_geometry_hdf5/frame.*.semantic_instance.hdf5", "hypersim"
    )
    pairs = []
    for label in labels:
        volume = re.fullmatch(r"ai_(\d+)_\d+", label.parents[2].name)  # scene ai_VVV_NNN
        if volume is None or int(volume.group(1)) not in HYPERSIM_VOLUMES:
            continue
        camera = label.parent.name[: -len("_geometry_hdf5")]
        frame = label.name[: -len(".semantic_instance.hdf5")]
        pairs.append((label.parents[1] / f"{camera}_final_preview" / f"{frame}.tonemap.jpg", label))
    return label_map_images(pairs, partial(label_map_annotations, ignore=(-1,)), base)


def _ibd(base: Path) -> list[LazyImage]:
    return coco_json_images([_require(base / "annotations.json", "ibd")], base / "images")


def _ishape(base: Path) -> list[LazyImage]:
    # Six sub-datasets (antenna, branch, fence, hanger, log, wire), validation split,
    # <sub>/val/instance_map/<stem>.png: 16-bit instance ids (0 background).
    pairs = []
    for instance_dir in sorted(_require(base, "ishape").glob("*/val/instance_map")):
        labels = sorted(instance_dir.glob("*.png"))
        pairs += _pair_by_stem(instance_dir.parent / "image", labels, "ishape")
    if not pairs:
        raise FileNotFoundError(
            f"SAM-23 dataset 'ishape': no {base}/<sub>/val/instance_map/*.png; {_README_HINT}"
        )
    return label_map_images(pairs, label_map_annotations, base)


def _lvis(base: Path) -> list[LazyImage]:
    return lvis_json_images(_require(base / "lvis_v0.5_val.json", "lvis"), base)


def _ndd20(base: Path) -> list[LazyImage]:
    images = []
    for part in ("ABOVE", "BELOW"):
        images += via_json_images(
            _require(base / f"{part}_LABELS.json", "ndd20"), base / part, base
        )
    return images


def _ndispark(base: Path) -> list[LazyImage]:
    return coco_json_images(
        [_require(base / "train" / "train_coco_annotations.json", "ndispark")],
        base / "train" / "imgs",
    )


def _ovis(base: Path) -> list[LazyImage]:
    return ytvis_json_images(_require(base / "annotations_train.json", "ovis"), base / "train")


def _ppdls(base: Path) -> list[LazyImage]:
    # Every <name>_label.png (indexed leaf labels, 0 background) beside a <name>_rgb.png.
    labels = _glob(base, "**/*_label.png", "ppdls")
    pairs = [(p.with_name(p.name.replace("_label.png", "_rgb.png")), p) for p in labels]
    return label_map_images(pairs, label_map_annotations, base)


def _plittersdorf(base: Path) -> list[LazyImage]:
    jsons = [_require(base / f"{split}.json", "plittersdorf") for split in ("train", "val", "test")]
    return coco_json_images(jsons, base / "images")


def _streets(base: Path) -> list[LazyImage]:
    return coco_json_images(
        [_require(base / "annotations" / "vehicle-annotations.json", "streets")], base / "images"
    )


def _timberseg(base: Path) -> list[LazyImage]:
    folder = base / "prescaled"
    return coco_json_images(
        [_require(folder / "coco_annotation_rotated.json", "timberseg")], folder
    )


def _trashcan(base: Path) -> list[LazyImage]:
    folder = base / "instance_version"
    return coco_json_images(
        [_require(folder / "instances_train_trashcan.json", "trashcan")], folder / "train"
    )


def _visor(base: Path) -> list[LazyImage]:
    root = base / "GroundTruth-SparseAnnotations"
    jsons = _glob(root / "annotations" / "val", "*.json", "visor")
    return visor_json_images(jsons, root / "rgb_frames" / "val", base)


def _woodscape(base: Path) -> list[LazyImage]:
    jsons = _glob(base / "instance_annotations", "*.json", "woodscape")
    return woodscape_json_images(jsons, base / "rgb_images", base)


def _pidray(base: Path) -> list[LazyImage]:
    return coco_json_images(
        [_require(base / "annotations" / "xray_test_hard.json", "pidray")], base / "hard"
    )


def _zerowaste_f(base: Path) -> list[LazyImage]:
    folder = base / "train"
    return coco_json_images([_require(folder / "labels.json", "zerowaste_f")], folder / "data")


@dataclass(frozen=True)
class _Spec:
    label: str  # display name in the paper
    split: str  # split used by the paper (Table 7)
    load: Callable[[Path], list[LazyImage]]  # <root>/sam23/<name> -> the split's images


_SPECS: dict[str, _Spec] = {
    "ade20k": _Spec("ADE20K", "validation", _ade20k),
    "bbbc038": _Spec("BBBC038v1", "stage1 train", _bbbc038),
    "cityscapes": _Spec("Cityscapes", "validation (panoptic)", _cityscapes),
    "doors": _Spec("DOORS", "DS1", _doors),
    "dram": _Spec("DRAM", "test", _dram),
    "egohos": _Spec("EgoHOS", "train, Ego4D and THU-READ images only", _egohos),
    "gtea": _Spec("GTEA", "train (hand segmentation)", _gtea),
    "hypersim": _Spec("Hypersim", "volumes ai_001-ai_055 without 020, 025, 040, 049", _hypersim),
    "ibd": _Spec("IBD", "train (2D annotations)", _ibd),
    "ishape": _Spec("iShape", "validation", _ishape),
    "lvis": _Spec("LVIS", "validation (v0.5)", _lvis),
    "ndd20": _Spec("NDD20", "all (no split)", _ndd20),
    "ndispark": _Spec("NDISPark", "train", _ndispark),
    "ovis": _Spec("OVIS", "train", _ovis),
    "ppdls": _Spec("PPDLS", "all (no split)", _ppdls),
    "plittersdorf": _Spec("Plittersdorf", "train + validation + test", _plittersdorf),
    "streets": _Spec("STREETS", "all (no split)", _streets),
    "timberseg": _Spec("TimberSeg", "all (no split)", _timberseg),
    "trashcan": _Spec("TrashCan", "train (instance task)", _trashcan),
    "visor": _Spec("VISOR", "validation", _visor),
    "woodscape": _Spec("WoodScape", "set 1 (public 8.2k release)", _woodscape),
    "pidray": _Spec("PIDRay", "test (hard)", _pidray),
    "zerowaste_f": _Spec("ZeroWaste-f", "train", _zerowaste_f),
}

#: The 23 dataset names, in the order of the SAM paper's Fig. 8; registered as ``sam23_<name>``.
SAM23_DATASETS: tuple[str, ...] = tuple(_SPECS)


def _default_root(root: str | None) -> str:
    return root if root is not None else os.getenv("DETECTRON2_DATASETS", "datasets")


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise KeyError(f"unknown SAM-23 dataset {name!r}; expected one of {list(SAM23_DATASETS)}")
    return _SPECS[name]


def load_sam23(name: str, root: str | None = None, seed: int = SUBSAMPLE_SEED) -> list[dict]:
    """Dataset dicts of one SAM-23 dataset: the paper's split, subsampled if > 15k masks.

    Args:
        name: one of :data:`SAM23_DATASETS`.
        root: folder holding ``sam23/<name>/``; default ``$DETECTRON2_DATASETS`` or "datasets".
        seed: subsampling seed (see :func:`subsample_by_images`).

    Returns:
        Detectron2 dataset dicts (``file_name``, ``image_id``, ``height``, ``width``,
        ``annotations`` with ``segmentation`` (polygons or RLE), ``bbox`` (XYWH_ABS),
        ``bbox_mode``, ``category_id`` 0 and ``iscrowd``), sorted by file name.

    Raises:
        KeyError: unknown dataset name.
        FileNotFoundError: the dataset folder or an expected file is missing (names the path).
        ValueError: an annotation file does not have the expected format (names the file).
    """
    spec = _spec(name)
    base = Path(_default_root(root)) / "sam23" / name
    if not base.is_dir():
        raise FileNotFoundError(
            f"SAM-23 dataset '{name}' ({spec.label}) not found: expected folder {base}; "
            + _README_HINT
        )
    logger.info("loading SAM-23 dataset %s (%s split) from %s", spec.label, spec.split, base)
    return subsample_by_images(spec.load(base), seed=seed)


def register_sam23(name: str, root: str | None = None, catalog_name: str | None = None) -> str:
    """Register one SAM-23 dataset lazily (no file is touched until it is loaded).

    Args:
        name: one of :data:`SAM23_DATASETS`.
        root: folder holding ``sam23/<name>/``; default ``$DETECTRON2_DATASETS`` or "datasets".
        catalog_name: name in Detectron2's catalogs; default ``sam23_<name>``.

    Returns:
        The catalog name.
    """
    spec = _spec(name)
    root = _default_root(root)
    catalog_name = catalog_name or f"sam23_{name}"
    DatasetCatalog.register(catalog_name, partial(load_sam23, name, root))
    MetadataCatalog.get(catalog_name).set(
        evaluator_type="point_miou",
        dataset_label=spec.label,
        split=spec.split,
        thing_classes=["object"],
        dataset_root=os.path.join(root, "sam23", name),
    )
    return catalog_name


def register_all_sam23(root: str | None = None, prefix: str = "sam23_") -> list[str]:
    """Register all 23 datasets as ``<prefix><name>``; safe on import (lazy, no file access).

    Args:
        root: folder holding ``sam23/``; default ``$DETECTRON2_DATASETS`` or "datasets".
        prefix: catalog-name prefix.

    Returns:
        The registered catalog names, in :data:`SAM23_DATASETS` order.
    """
    return [register_sam23(name, root, prefix + name) for name in SAM23_DATASETS]
