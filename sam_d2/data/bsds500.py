"""BSDS500 (Berkeley Segmentation Data Set) as Detectron2 datasets for the edge benchmark.

Expected layout (the official BSR release, ``BSR/BSDS500/data`` renamed to ``bsds500``)::

    <root>/bsds500/images/{train,val,test}/<image_id>.jpg
    <root>/bsds500/groundTruth/{train,val,test}/<image_id>.mat

Each ``.mat`` holds a MATLAB cell array ``groundTruth{k}`` with one struct per annotator, fields
``Segmentation`` (uint16 labels) and ``Boundaries`` (logical, 1-pixel-wide boundaries).
"""

import logging
import os
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import scipy.io
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

__all__ = [
    "BSDS500_SPLITS",
    "load_bsds500_dicts",
    "load_bsds_boundaries",
    "register_bsds500",
]

logger = logging.getLogger(__name__)

#: Split name -> number of images in the official release.
BSDS500_SPLITS: Dict[str, int] = {"train": 200, "val": 100, "test": 200}


def load_bsds500_dicts(root: str, split: str) -> List[Dict]:
    """Dataset dicts of one BSDS500 split.

    Args:
        root: folder containing ``bsds500/`` (usually ``$DETECTRON2_DATASETS``).
        split: "train", "val" or "test".

    Returns:
        One dict per image, sorted by image id, with keys ``file_name`` (jpg path), ``image_id``
        (file stem, e.g. "100007"), ``height``, ``width`` and ``edge_gt_file`` (path of the
        ground-truth ``.mat``).

    Raises:
        ValueError: unknown split.
        FileNotFoundError: the image folder is missing or empty, or an image has no ``.mat``.
    """
    if split not in BSDS500_SPLITS:
        raise ValueError(f"unknown BSDS500 split {split!r}; expected one of {list(BSDS500_SPLITS)}")
    image_dir = Path(root) / "bsds500" / "images" / split
    gt_dir = Path(root) / "bsds500" / "groundTruth" / split
    if not image_dir.is_dir():
        raise FileNotFoundError(
            f"BSDS500 image folder {image_dir} not found; see datasets/README.md (BSDS500)"
        )
    if not gt_dir.is_dir():
        raise FileNotFoundError(
            f"BSDS500 ground-truth folder {gt_dir} not found; see datasets/README.md (BSDS500)"
        )
    image_files = sorted(image_dir.glob("*.jpg"))
    if not image_files:
        raise FileNotFoundError(f"no .jpg images in BSDS500 image folder {image_dir}")

    dicts = []
    for image_file in image_files:
        gt_file = gt_dir / f"{image_file.stem}.mat"
        if not gt_file.is_file():
            raise FileNotFoundError(
                f"BSDS500 ground truth {gt_file} is missing for image {image_file}"
            )
        with Image.open(image_file) as img:  # reads the header only
            width, height = img.size
        dicts.append(
            {
                "file_name": str(image_file),
                "image_id": image_file.stem,
                "height": height,
                "width": width,
                "edge_gt_file": str(gt_file),
            }
        )
    if len(dicts) != BSDS500_SPLITS[split]:
        logger.warning(
            "BSDS500 %s: found %d images in %s, the official split has %d",
            split,
            len(dicts),
            image_dir,
            BSDS500_SPLITS[split],
        )
    return dicts


def load_bsds_boundaries(mat_file: str) -> List[np.ndarray]:
    """Every annotator's boundary map from a BSDS ground-truth ``.mat``.

    Args:
        mat_file: path of a BSDS ``groundTruth`` file.

    Returns:
        One bool array (H, W) per annotator (BSDS500 has 4 to 9), all of the same shape.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a BSDS ground-truth file (key or field missing, shapes differ).
    """
    if not os.path.isfile(mat_file):
        raise FileNotFoundError(f"BSDS ground-truth file {mat_file} not found")
    try:
        mat = scipy.io.loadmat(mat_file)
    except (ValueError, OSError, NotImplementedError) as e:
        raise ValueError(f"cannot read BSDS ground-truth file {mat_file}: {e}") from e
    if "groundTruth" not in mat:
        names = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{mat_file} has no 'groundTruth' variable (it has: {names})")
    cells = mat["groundTruth"].ravel()
    if cells.size == 0:
        raise ValueError(f"{mat_file}: 'groundTruth' holds no annotation")
    boundaries = []
    for k, cell in enumerate(cells):
        if cell.dtype.names is None or "Boundaries" not in cell.dtype.names:
            raise ValueError(f"{mat_file}: groundTruth{{{k + 1}}} has no 'Boundaries' field")
        bmap = np.asarray(cell["Boundaries"].ravel()[0]).astype(bool)
        if bmap.ndim != 2:
            raise ValueError(
                f"{mat_file}: groundTruth{{{k + 1}}}.Boundaries has shape {bmap.shape}, not (H, W)"
            )
        if boundaries and bmap.shape != boundaries[0].shape:
            raise ValueError(
                f"{mat_file}: groundTruth{{{k + 1}}}.Boundaries has shape {bmap.shape}, "
                f"groundTruth{{1}} has {boundaries[0].shape}"
            )
        boundaries.append(bmap)
    return boundaries


def register_bsds500(root: Optional[str] = None) -> None:
    """Register ``bsds500_train``, ``bsds500_val`` and ``bsds500_test`` (lazily loaded).

    Args:
        root: folder containing ``bsds500/``; defaults to ``$DETECTRON2_DATASETS`` or "datasets".
    """
    if root is None:
        root = os.getenv("DETECTRON2_DATASETS", "datasets")
    for split in BSDS500_SPLITS:
        name = f"bsds500_{split}"
        DatasetCatalog.register(name, lambda split=split: load_bsds500_dicts(root, split))
        MetadataCatalog.get(name).set(
            evaluator_type="bsds_edges",
            image_root=os.path.join(root, "bsds500", "images", split),
            gt_dir=os.path.join(root, "bsds500", "groundTruth", split),
        )
