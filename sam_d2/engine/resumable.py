"""The evaluation loop of ``Trainer.test``: data checked before any model time, per-image records
written as produced, and ``TEST.RESUME True`` skipping the images an earlier run finished.

Same contract as Detectron2's ``DefaultTrainer.test`` (one evaluator per ``DATASETS.TEST`` entry,
``inference_on_dataset``, results by dataset name, a single dataset's results unwrapped), plus:

* every test dataset is loaded and checked first: an unregistered name, a missing folder, an empty
  dataset or files listed but absent fail with one message naming them, before inference starts;
  evaluators are built then too, so missing ground truth also fails early;
* each evaluator that can save per-image records (:mod:`sam_d2.evaluation.resumable`) writes them
  to ``OUTPUT_DIR/inference/<dataset>/records`` as images are processed; a fresh run clears that
  folder, a run with ``TEST.RESUME True`` restores the records there and runs the model only on
  the remaining images, giving the numbers of an uninterrupted run.
"""

import hashlib
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Sequence

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator, inference_on_dataset, print_csv_format
from detectron2.utils import comm
from torch import nn
from torch.utils.data import DataLoader, Sampler

from ..evaluation.resumable import (
    RecordStore,
    ResumableEvaluator,
    image_key,
    saved_records,
    supports_records,
)

__all__ = ["check_test_datasets", "run_evaluation"]

logger = logging.getLogger(__name__)

#: Dataset-dict keys naming files the evaluation reads.
_FILE_KEYS = ("file_name", "sem_seg_file_name", "pan_seg_file_name", "edge_gt_file")


def check_test_datasets(names: Sequence[str]) -> Dict[str, List[Any]]:
    """Load each dataset and check that it is registered, non-empty and its files exist.

    Returns:
        The dataset items by name.

    Raises:
        KeyError: a dataset is not registered.
        FileNotFoundError: its loader found a folder or file missing, or listed files are absent.
        ValueError: a dataset is empty.
    """
    if not names:
        raise ValueError("DATASETS.TEST is empty: nothing to evaluate")
    datasets = {}
    for name in names:
        if name not in DatasetCatalog.list():
            raise KeyError(f"test dataset {name!r} is not registered")
        try:
            items = DatasetCatalog.get(name)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"test dataset {name}: {e}") from e
        if not len(items):
            raise ValueError(f"test dataset {name} has no images")
        missing = [
            item[key]
            for item in items
            if isinstance(item, dict)
            for key in _FILE_KEYS
            if isinstance(item.get(key), str) and not os.path.exists(item[key])
        ]
        if missing:
            raise FileNotFoundError(
                f"test dataset {name}: {len(missing)} files listed but missing, e.g. "
                + ", ".join(missing[:3])
            )
        datasets[name] = items
    return datasets


class _ShardSampler(Sampler):
    """This rank's contiguous share of ``indices`` (as Detectron2's ``InferenceSampler``)."""

    def __init__(self, indices: Sequence[int]) -> None:
        rank, world = comm.get_rank(), comm.get_world_size()
        sizes = [len(indices) // world + int(r < len(indices) % world) for r in range(world)]
        start = sum(sizes[:rank])
        self._indices = list(indices[start : start + sizes[rank]])

    def __iter__(self):
        yield from self._indices

    def __len__(self) -> int:
        return len(self._indices)


def _skip_done(loader: DataLoader, indices: List[int]) -> DataLoader:
    """The same loader (dataset, mapper, batching) over the dataset items at ``indices`` only."""
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=_ShardSampler(indices),
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
    )


def _can_skip(loader: DataLoader, keys: List[Optional[str]]) -> bool:
    """Whether the loader can be narrowed to a subset of the dataset items named by ``keys``."""
    return (
        None not in keys
        and len(set(keys)) == len(keys)
        and loader.batch_size is not None
        and hasattr(loader.dataset, "__len__")
        and len(loader.dataset) == len(keys)
    )


def _why_not(evaluator: DatasetEvaluator, can_skip: bool) -> str:
    if not supports_records(evaluator):
        return f"{type(evaluator).__name__} keeps no per-image records"
    return "the loader's items lack unique image ids or do not follow the dataset"


def _fingerprint(cfg: CfgNode, dataset_name: str) -> str:
    """Identifies what the records of a dataset depend on: the config (but TEST.RESUME)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.TEST.RESUME = False
    return hashlib.sha1((dataset_name + cfg.dump()).encode()).hexdigest()


def run_evaluation(
    trainer_cls: Any,
    cfg: CfgNode,
    model: nn.Module,
    evaluators: Optional[Sequence[DatasetEvaluator]] = None,
) -> Dict[str, Any]:
    """Evaluate ``model`` on every ``cfg.DATASETS.TEST`` (see module docstring).

    Args:
        trainer_cls: provides ``build_test_loader(cfg, name)`` and ``build_evaluator(cfg, name)``.
        cfg: the config; ``TEST.RESUME`` reuses the records of an interrupted run.
        model: the model, weights loaded.
        evaluators: one per test dataset, or None to build them.

    Returns:
        ``{dataset: results}``, or the one dataset's results if there is one.
    """
    if isinstance(evaluators, DatasetEvaluator):
        evaluators = [evaluators]
    names = list(cfg.DATASETS.TEST)
    if evaluators is not None and len(evaluators) != len(names):
        raise ValueError(f"got {len(evaluators)} evaluators for {len(names)} test datasets")
    datasets = check_test_datasets(names)
    if evaluators is None:
        evaluators = [trainer_cls.build_evaluator(cfg, name) for name in names]

    results = OrderedDict()
    for name, evaluator in zip(names, evaluators):
        loader = trainer_cls.build_test_loader(cfg, name)
        items = datasets[name]
        keys = [image_key(item) for item in items]
        can_skip = _can_skip(loader, keys)
        if supports_records(evaluator):
            store = RecordStore(
                os.path.join(cfg.OUTPUT_DIR, "inference", name, "records"), _fingerprint(cfg, name)
            )
            resume = bool(cfg.TEST.RESUME) and can_skip
            store.prepare(resume=resume)
            restore = saved_records(store, set(keys)) if resume else {}
            evaluator = ResumableEvaluator(evaluator, store, restore)
            if restore:
                logger.info(
                    "%s: %d of %d images already evaluated (TEST.RESUME); running the rest",
                    name,
                    len(restore),
                    len(items),
                )
                loader = _skip_done(loader, [i for i, k in enumerate(keys) if k not in restore])
        if cfg.TEST.RESUME and not (can_skip and supports_records(evaluator)):
            logger.warning(
                "%s: cannot resume (%s); evaluating every image",
                name,
                _why_not(evaluator, can_skip),
            )
        results[name] = inference_on_dataset(model, loader, evaluator)
        if comm.is_main_process():
            if not isinstance(results[name], dict):
                raise TypeError(f"evaluator of {name} returned {type(results[name]).__name__}")
            logger.info("Evaluation results for %s in csv format:", name)
            print_csv_format(results[name])
    return list(results.values())[0] if len(results) == 1 else results
