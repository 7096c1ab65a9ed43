"""Register the app's COCO exports as Detectron2 datasets, also from an environment variable.

``tools/train_net.py`` imports ``sam_d2``, which calls :func:`register_from_env`: with
``SAM_D2_COCO_DATASETS="my_masks=/path/ANNOT_coco.json"`` (several separated by
``;``) the export trains as ``DATASETS.TRAIN '("my_masks",)'`` without any code. The image folder
is read from the export's ``info.image_root`` (written by :func:`~.storage.export_coco`).
"""

import json
import os
from pathlib import Path
from typing import List, Optional

from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances

__all__ = ["ENV_VAR", "register_export", "register_from_env"]

ENV_VAR = "SAM_D2_COCO_DATASETS"


def register_export(name: str, json_file: str, image_root: Optional[str] = None) -> None:
    """``register_coco_instances`` for an export; ``image_root`` defaults to its
    ``info.image_root``.

    Raises:
        ValueError: the file is missing, is not JSON, or names no image root.
    """
    path = Path(json_file)
    if not path.is_file():
        raise ValueError(f"{ENV_VAR}: dataset {name!r}: export file {path} not found")
    if image_root is None:
        try:
            with open(path) as f:
                image_root = json.load(f).get("info", {}).get("image_root")
        except (json.JSONDecodeError, AttributeError) as e:
            raise ValueError(f"dataset {name!r}: {path} is not a COCO JSON export: {e}") from e
        if not image_root:
            raise ValueError(f"dataset {name!r}: {path} has no info.image_root; pass image_root")
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
    register_coco_instances(name, {}, str(path), image_root)


def register_from_env() -> List[str]:
    """Register every ``name=path`` of ``$SAM_D2_COCO_DATASETS``; returns the names."""
    names = []
    for item in filter(None, (s.strip() for s in os.environ.get(ENV_VAR, "").split(";"))):
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ValueError(f"{ENV_VAR}: expected 'name=/path/to/export.json', got {item!r}")
        register_export(name.strip(), path.strip())
        names.append(name.strip())
    return names
