"""Single-point valid-mask benchmark: per-dataset mIoU after N clicks (SAM paper §7.1, Fig. 9).

Definition
----------
For every dataset, ``mIoU@N`` is the mean over its evaluated objects of the IoU (at the original
image resolution) between the GT mask and SAM's scored (most confident) mask after N simulated
clicks; ``oracle_mIoU@1`` uses, at one click, the best of SAM's 3 outputs instead. The click
protocol is :mod:`sam_d2.modeling.click_simulation`, run by
:class:`sam_d2.modeling.meta_arch.click_benchmark.SamClickBenchmark`. When several datasets are
evaluated the headline ``point_miou`` numbers are the unweighted mean over datasets of those
per-dataset means (as in the paper; the 23-dataset suite is "SA-23"). All numbers are percent.

Objects whose GT mask is empty are skipped (and counted, ``num_skipped``); crowd annotations are
not objects. A dataset with no evaluated object is reported with NaN and left out of the mean.
Means use ``math.fsum`` (exactly rounded, independent of order), so 1 and N processes give the
same numbers; if the same (image, object) reaches the evaluator twice it counts once.

Reference: SAM ViT-H on SA-23 ≈ 58.1 mIoU@1, 81.3 mIoU@5 (as re-reported by SAM 2).
"""

import itertools
import json
import logging
import math
import os
from collections import OrderedDict, defaultdict
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm
from detectron2.utils.file_io import PathManager
from tabulate import tabulate

from ..utils.atomic import atomic_open

__all__ = ["PointMIoUEvaluator", "average_point_miou", "point_miou_table", "TASK"]

logger = logging.getLogger(__name__)

#: Task name of the results (mean over datasets); per dataset: ``f"{TASK}/{dataset_name}"``.
TASK = "point_miou"


def _metric_names(num_points: Sequence[int]) -> List[str]:
    return [f"mIoU@{n}" for n in num_points] + ["oracle_mIoU@1"]


def _mean(values: np.ndarray) -> float:
    return 100.0 * math.fsum(values.tolist()) / len(values) if len(values) else float("nan")


def _label(dataset_name: str) -> str:
    return MetadataCatalog.get(dataset_name).get("dataset_label", dataset_name)


def point_miou_table(
    per_dataset: Mapping[str, Mapping[str, float]], mean: Mapping[str, float]
) -> str:
    """A per-dataset table (plus the mean row) of point-benchmark results.

    Args:
        per_dataset: dataset name -> its metrics (``mIoU@N``..., ``oracle_mIoU@1``,
            ``num_objects``).
        mean: the mean metrics.
    """
    metrics = [k for k in mean if k.startswith(("mIoU@", "oracle_"))]
    header = ["dataset", "objects"] + metrics
    rows = [
        [_label(name), int(res.get("num_objects", 0))] + [res[k] for k in metrics]
        for name, res in per_dataset.items()
    ]
    total = sum(int(res.get("num_objects", 0)) for res in per_dataset.values())
    rows.append(
        [f"mean of {int(mean.get('num_datasets', len(per_dataset)))}", total]
        + [mean[k] for k in metrics]
    )
    return tabulate(rows, headers=header, tablefmt="pipe", floatfmt=".2f", numalign="left")


def average_point_miou(results: Mapping[str, Mapping[str, Any]]) -> "OrderedDict[str, Dict]":
    """Combine point-benchmark results of several evaluator runs into the mean over datasets.

    Use it when each dataset ran with its own evaluator (Detectron2's per-dataset test loop).

    Args:
        results: anything whose values are evaluator results: e.g. ``{dataset_name:
            PointMIoUEvaluator(...).evaluate()}``; every ``"point_miou/<dataset>"`` entry found
            is used (other entries are ignored).

    Returns:
        ``{"point_miou": mean over datasets, "point_miou/<dataset>": per dataset, ...}``; the
        table is logged.
    """
    per_dataset: Dict[str, Dict[str, float]] = OrderedDict()
    for res in results.values():
        if not isinstance(res, Mapping):
            continue
        for task, metrics in res.items():
            if isinstance(task, str) and task.startswith(TASK + "/"):
                per_dataset[task[len(TASK) + 1 :]] = dict(metrics)
    if not per_dataset:
        raise ValueError(f"no '{TASK}/<dataset>' entry in the given results")
    return _summarize(per_dataset)


def _summarize(per_dataset: "OrderedDict[str, Dict[str, float]]") -> "OrderedDict[str, Dict]":
    names = next(iter(per_dataset.values())).keys()
    metrics = [k for k in names if k.startswith(("mIoU@", "oracle_"))]
    evaluated = [r for r in per_dataset.values() if r.get("num_objects", 0) > 0]
    mean: Dict[str, float] = {
        k: (math.fsum(r[k] for r in evaluated) / len(evaluated) if evaluated else float("nan"))
        for k in metrics
    }
    mean["num_datasets"] = len(evaluated)
    for name, r in per_dataset.items():
        if r.get("num_objects", 0) == 0:
            logger.warning(
                "point benchmark: dataset %s has no evaluated object (left out of the mean)", name
            )
    logger.info(
        "Single-point valid-mask mIoU (%%), per dataset and mean over datasets:\n%s",
        point_miou_table(per_dataset, mean),
    )
    out: "OrderedDict[str, Dict]" = OrderedDict()
    out[TASK] = mean
    for name, r in per_dataset.items():
        out[f"{TASK}/{name}"] = r
    return out


class PointMIoUEvaluator(DatasetEvaluator):
    """mIoU after N clicks per dataset, and their mean (module docstring).

    ``process`` takes the outputs of ``SamClickBenchmark`` (``point_ious``, ``oracle_iou_1pt``,
    ``object_ids``, ``num_points``, ``dataset_name``; the inputs' ``num_empty_masks``).
    ``evaluate`` returns::

        {"point_miou": {"mIoU@1", ..., "mIoU@9", "oracle_mIoU@1", "num_datasets"},
         "point_miou/<dataset>": {"mIoU@1", ..., "oracle_mIoU@1", "num_objects", "num_skipped"}}

    in percent (counts as numbers); on non-main processes it returns ``{}``.
    """

    def __init__(
        self,
        dataset_names: Union[str, Sequence[str]],
        output_dir: Optional[str] = None,
        *,
        num_points: Sequence[int] = (1, 2, 3, 5, 9),
        distributed: bool = True,
    ) -> None:
        """
        Args:
            dataset_names: the dataset(s) of the loader; with several, every input or output
                must carry ``dataset_name`` (``build_point_eval_loader`` tags them).
            output_dir: where ``point_miou.json`` and the per-object IoUs
                (``point_miou_per_object.pth``) are written; None writes nothing.
            num_points: the model's ``TEST.POINT_EVAL.NUM_POINTS``; checked against the outputs.
            distributed: gather the results of every process to the main one.
        """
        if isinstance(dataset_names, str):
            dataset_names = [dataset_names]
        if not dataset_names:
            raise ValueError("PointMIoUEvaluator needs at least one dataset name")
        self._dataset_names = list(dict.fromkeys(dataset_names))
        self._output_dir = output_dir
        self._num_points = tuple(int(n) for n in num_points)
        self._distributed = distributed
        self.reset()

    def reset(self) -> None:
        self._records: List[Dict[str, Any]] = []

    def _dataset_of(self, inp: Mapping[str, Any], out: Mapping[str, Any]) -> str:
        name = out.get("dataset_name") or inp.get("dataset_name")
        if name is None:
            if len(self._dataset_names) > 1:
                raise KeyError(
                    "an input has no 'dataset_name' while several datasets are evaluated; build "
                    "the loader with sam_d2.data.point_mapper.build_point_eval_loader"
                )
            return self._dataset_names[0]
        if name not in self._dataset_names:
            raise KeyError(f"result of dataset {name!r}, not one of {self._dataset_names}")
        return name

    def process(self, inputs: List[Dict[str, Any]], outputs: List[Dict[str, Any]]) -> None:
        for inp, out in zip(inputs, outputs):
            if "point_ious" not in out:
                raise KeyError(
                    "PointMIoUEvaluator needs outputs of SamClickBenchmark ('point_ious' missing; "
                    "set MODEL.META_ARCHITECTURE to SamClickBenchmark)"
                )
            if tuple(out.get("num_points", self._num_points)) != self._num_points:
                raise ValueError(
                    f"model used num_points {tuple(out['num_points'])}, evaluator expects "
                    f"{self._num_points}"
                )
            point_ious = torch.as_tensor(out["point_ious"]).double().cpu().numpy()
            if point_ious.ndim != 2 or point_ious.shape[1] != len(self._num_points):
                raise ValueError(
                    f"point_ious must be (M, {len(self._num_points)}), got {point_ious.shape}"
                )
            image_id = out.get("image_id")
            if image_id is None:
                image_id = inp.get("image_id", inp.get("file_name"))
            self._records.append(
                {
                    "dataset": self._dataset_of(inp, out),
                    "image_id": image_id,
                    "object_ids": torch.as_tensor(out["object_ids"]).cpu().numpy().astype(np.int64),
                    "point_ious": point_ious,
                    "oracle": torch.as_tensor(out["oracle_iou_1pt"]).double().cpu().numpy(),
                    "num_skipped": int(inp.get("num_empty_masks", 0)),
                }
            )

    def evaluate(self) -> "OrderedDict[str, Dict]":
        if self._distributed:
            comm.synchronize()
            gathered = comm.gather(self._records, dst=0)
            if not comm.is_main_process():
                return OrderedDict()
            records = list(itertools.chain(*gathered))
        else:
            records = self._records

        by_dataset: Dict[str, Dict[Any, Dict[str, Any]]] = {n: {} for n in self._dataset_names}
        skipped: Dict[str, int] = defaultdict(int)
        duplicates = 0
        for rec in records:
            objects = by_dataset[rec["dataset"]]
            key_image = repr(rec["image_id"])
            skipped[rec["dataset"]] += rec["num_skipped"]
            for k, obj in enumerate(rec["object_ids"]):
                key = (key_image, int(obj))
                if key in objects and rec["image_id"] is not None:
                    duplicates += 1
                    continue
                if rec["image_id"] is None:
                    key = (key_image, int(obj), len(objects))
                objects[key] = {
                    "image_id": rec["image_id"],
                    "object_id": int(obj),
                    "point_ious": rec["point_ious"][k],
                    "oracle": float(rec["oracle"][k]),
                }
        if duplicates:
            logger.warning(
                "point benchmark: %d duplicated (image, object) results counted once", duplicates
            )

        per_dataset: "OrderedDict[str, Dict[str, float]]" = OrderedDict()
        per_object: Dict[str, Dict[str, Any]] = {}
        names = _metric_names(self._num_points)
        for name in self._dataset_names:
            objects = [by_dataset[name][k] for k in sorted(by_dataset[name])]
            ious = (
                np.stack([o["point_ious"] for o in objects])
                if objects
                else np.zeros((0, len(self._num_points)))
            )
            oracle = np.array([o["oracle"] for o in objects], dtype=np.float64)
            metrics = {names[j]: _mean(ious[:, j]) for j in range(len(self._num_points))}
            metrics["oracle_mIoU@1"] = _mean(oracle)
            metrics["num_objects"] = len(objects)
            metrics["num_skipped"] = skipped[name]
            per_dataset[name] = metrics
            per_object[name] = {
                "image_ids": [o["image_id"] for o in objects],
                "object_ids": np.array([o["object_id"] for o in objects], dtype=np.int64),
                "num_points": self._num_points,
                "point_ious": ious,
                "oracle_iou_1pt": oracle,
            }
        results = _summarize(per_dataset)
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            with atomic_open(os.path.join(self._output_dir, "point_miou.json"), "w") as f:
                json.dump(results, f, indent=2)
            with atomic_open(
                os.path.join(self._output_dir, "point_miou_per_object.pth"), "wb"
            ) as f:
                torch.save(per_object, f)
        return results
