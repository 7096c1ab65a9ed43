"""Per-image evaluation records on disk, so that a killed evaluation resumes where it stopped.

:class:`ResumableEvaluator` wraps a Detectron2 ``DatasetEvaluator``: every image's evaluator
state (its "record": e.g. COCO-format detections, BSDS match counts) is written to its own file
as soon as it exists, atomically, by the rank that produced it
(``<folder>/rank<r>/<image key>.pkl``). A later run over the same dataset and configuration reads
the records back into the evaluator (on rank 0 only, so that gathering does not duplicate them)
and the inference loop skips those images (:mod:`sam_d2.engine.resumable`); since ``evaluate``
then sees the same per-image state, the final numbers are those of an uninterrupted run.

An evaluator takes part either by offering ``take_records(final) -> [(key, record)]`` and
``restore_records([(key, record)])`` itself (the BSDS and LVIS AP evaluators do), or by keeping
its per-image results in a list of dicts with an ``"image_id"`` (Detectron2's
``COCOEvaluator``, the LVIS proposal and point-benchmark evaluators), which an adapter here reads.
``<folder>/manifest.json`` holds a fingerprint of the configuration that made the records; a run
with another configuration refuses to reuse them.
"""

import glob
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from detectron2.evaluation import COCOEvaluator, DatasetEvaluator
from detectron2.utils import comm

from ..utils.atomic import atomic_open
from .lvis_mask_ar import LVISMaskProposalEvaluator
from .point_miou import PointMIoUEvaluator

__all__ = [
    "RecordStore",
    "ResumableEvaluator",
    "image_key",
    "saved_records",
    "supports_records",
]

logger = logging.getLogger(__name__)

Record = Tuple[str, Any]  # (image key, picklable per-image evaluator state)

# Evaluators whose per-image results are dicts with "image_id" appended to a list attribute.
_LIST_STATE = (
    (COCOEvaluator, "_predictions"),
    (LVISMaskProposalEvaluator, "_predictions"),
    (PointMIoUEvaluator, "_records"),
)


def image_key(item: Any) -> Optional[str]:
    """The key naming one image: ``str(image_id)`` (else ``file_name``) of a dataset dict or an
    evaluator item; None when the item has neither."""
    if not isinstance(item, dict):
        return None
    value = item.get("image_id", item.get("file_name"))
    return None if value is None else str(value)


class _ListState:
    """``take_records`` / ``restore_records`` for an evaluator keeping a list of per-image dicts."""

    def __init__(self, evaluator: DatasetEvaluator, attr: str) -> None:
        self._evaluator = evaluator
        self._attr = attr
        self._taken = 0

    def _items(self) -> List[Dict[str, Any]]:
        return getattr(self._evaluator, self._attr)

    def take_records(self, final: bool = False) -> List[Record]:
        items = self._items()
        new, self._taken = items[self._taken :], len(items)
        return [(image_key(item), item) for item in new]

    def restore_records(self, records: List[Record]) -> None:
        self._items().extend(item for _, item in records)
        self._taken = len(self._items())


def _record_state(evaluator: DatasetEvaluator) -> Optional[Any]:
    """The object offering take/restore for ``evaluator``, or None if it cannot take part."""
    if hasattr(evaluator, "take_records") and hasattr(evaluator, "restore_records"):
        return evaluator
    for cls, attr in _LIST_STATE:
        if isinstance(evaluator, cls):
            return _ListState(evaluator, attr)
    return None


def supports_records(evaluator: DatasetEvaluator) -> bool:
    """Whether ``evaluator`` can save and restore per-image records."""
    return _record_state(evaluator) is not None


def _file_name(key: str) -> str:
    """A file name for an image key: readable where safe, unique through a hash."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", key)[:64]
    return f"{safe}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.pkl"


class RecordStore:
    """The record folder of one dataset's evaluation.

    Args:
        folder: e.g. ``OUTPUT_DIR/inference/<dataset>/records``.
        fingerprint: identifies the configuration whose results the records are.
    """

    def __init__(self, folder: str, fingerprint: str) -> None:
        self.folder = folder
        self.fingerprint = fingerprint

    def _manifest(self) -> str:
        return os.path.join(self.folder, "manifest.json")

    def prepare(self, resume: bool) -> None:
        """Start a fresh folder (``resume=False``: old records removed) or check that the existing
        records were made by this configuration. Collective: every rank calls it."""
        if comm.is_main_process():
            if not resume and os.path.isdir(self.folder):
                shutil.rmtree(self.folder)
            if os.path.isfile(self._manifest()):
                with open(self._manifest()) as f:
                    found = json.load(f).get("fingerprint")
                if found != self.fingerprint:
                    raise ValueError(
                        f"{self.folder} holds records of another configuration; remove the "
                        "folder or evaluate with TEST.RESUME False"
                    )
            else:
                with atomic_open(self._manifest()) as f:
                    json.dump({"fingerprint": self.fingerprint}, f)
        comm.synchronize()

    def load(self) -> Dict[str, Any]:
        """Every saved record, by image key (all ranks' folders)."""
        records = {}
        for path in sorted(glob.glob(os.path.join(self.folder, "rank*", "*.pkl"))):
            with open(path, "rb") as f:
                key, record = pickle.load(f)
            records[key] = record
        return records

    def save(self, records: Sequence[Record]) -> None:
        """Write each record to its own file, atomically, in this rank's folder."""
        rank_folder = os.path.join(self.folder, f"rank{comm.get_rank()}")
        for key, record in records:
            with atomic_open(os.path.join(rank_folder, _file_name(key)), "wb") as f:
                pickle.dump((key, record), f, protocol=pickle.HIGHEST_PROTOCOL)


class ResumableEvaluator(DatasetEvaluator):
    """An evaluator whose per-image records go to a :class:`RecordStore` as they are produced.

    Args:
        evaluator: the wrapped evaluator (see module docstring for what it must offer).
        store: where the records go.
        restore: records to load back into the evaluator at ``reset`` (rank 0 only): those of the
            images the inference loop skips.
    """

    def __init__(
        self, evaluator: DatasetEvaluator, store: RecordStore, restore: Dict[str, Any]
    ) -> None:
        state = _record_state(evaluator)
        if state is None:
            raise TypeError(f"{type(evaluator).__name__} cannot save per-image records")
        self._evaluator = evaluator
        self._state = state
        self._store = store
        self._restore = restore

    def reset(self) -> None:
        self._evaluator.reset()
        state = _record_state(self._evaluator)  # reset may have replaced the evaluator's lists
        self._state = state
        if comm.is_main_process() and self._restore:
            state.restore_records(sorted(self._restore.items()))
            logger.info(
                "restored the records of %d images from %s", len(self._restore), self._store.folder
            )

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        self._evaluator.process(inputs, outputs)
        self._save(self._state.take_records())

    def _save(self, records: List[Record]) -> None:
        unnamed = [record for key, record in records if key is None]
        if unnamed:
            raise ValueError(
                f"{type(self._evaluator).__name__} produced a record without an image id"
            )
        self._store.save(records)

    def evaluate(self) -> Any:
        self._save(self._state.take_records(final=True))
        return self._evaluator.evaluate()


def saved_records(store: RecordStore, dataset_keys: Set[str]) -> Dict[str, Any]:
    """The saved records of images of the dataset, on rank 0; on the other ranks the same keys
    with None (only rank 0 restores records). Records of other keys are ignored. Collective."""
    records = done = None
    if comm.is_main_process():
        records = {k: v for k, v in store.load().items() if k in dataset_keys}
        done = sorted(records)
    done = comm.all_gather(done)[0]
    return records if comm.is_main_process() else dict.fromkeys(done)
