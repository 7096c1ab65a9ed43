"""Detectron2 ``DefaultTrainer`` for sam_d2 models: the data mapper of each meta-architecture
(decided here, in one place), evaluators from dataset metadata, strict checkpoint loading, AdamW
with layer-wise lr decay, results written as JSON."""

import json
import logging
import os
import weakref
from typing import Any, Callable, Dict, List, Optional

import torch
from detectron2.config import CfgNode
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import DatasetEvaluator
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from torch import nn

from ..checkpoint import SamCheckpointer
from ..data.mappers import DetectorPromptedSamMapper, build_lsj_mapper
from ..data.point_mapper import PointEvalDatasetMapper
from ..data.train_mapper import SamTrainMapper
from ..evaluation.build import build_evaluator
from ..evaluation.point_miou import average_point_miou
from ..modeling.layer_decay import layer_decay_factors
from ..modeling.meta_arch import (
    DetectorPromptedSam,
    PromptableSam,
    SamAutomaticProposals,
    SamClickBenchmark,
    SamEdgeDetector,
)
from ..utils.atomic import atomic_open
from .resumable import run_evaluation

__all__ = [
    "Trainer",
    "build_test_mapper",
    "build_train_mapper",
    "check_trainable",
    "load_weights",
    "write_results",
]

logger = logging.getLogger(__name__)


#: Meta-architectures (and their subclasses) that only run inference: training them fails before
#: anything is built.
INFERENCE_ONLY = (DetectorPromptedSam, SamAutomaticProposals, SamEdgeDetector, SamClickBenchmark)


def _meta_arch(cfg: CfgNode) -> type:
    return META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)


def build_test_mapper(cfg: CfgNode) -> Optional[Callable]:
    """The test-time mapper of ``MODEL.META_ARCHITECTURE``; None means Detectron2's default."""
    arch = _meta_arch(cfg)
    if issubclass(arch, DetectorPromptedSam):
        return DetectorPromptedSamMapper(cfg, is_train=False)
    if issubclass(arch, SamClickBenchmark):
        return PointEvalDatasetMapper(cfg)
    return None


def build_train_mapper(cfg: CfgNode) -> Optional[Callable]:
    """The training mapper of ``MODEL.META_ARCHITECTURE``; None means Detectron2's default.

    PromptableSam trains on GT masks (:class:`SamTrainMapper`); detectors (ViTDet) with
    ``INPUT.LSJ.ENABLED`` on ViTDet's large-scale jitter.
    """
    check_trainable(cfg)
    if issubclass(_meta_arch(cfg), PromptableSam):
        return SamTrainMapper(cfg)
    if cfg.INPUT.LSJ.ENABLED:
        return build_lsj_mapper(cfg)
    return None


def check_trainable(cfg: CfgNode) -> None:
    """Raise at once when ``MODEL.META_ARCHITECTURE`` cannot be trained."""
    if issubclass(_meta_arch(cfg), INFERENCE_ONLY):
        raise ValueError(
            f"MODEL.META_ARCHITECTURE={cfg.MODEL.META_ARCHITECTURE} is inference-only (run it "
            "with --eval-only); "
            "fine-tune SAM with PromptableSam (configs/sam_vit_*.yaml) and a detector with its own "
            "meta-architecture, then load their weights"
        )


def load_weights(model: nn.Module, cfg: CfgNode, resume: bool = False) -> SamCheckpointer:
    """Load ``MODEL.WEIGHTS`` (or the last checkpoint of ``OUTPUT_DIR`` with ``resume``) strictly.

    ``MODEL.SAM.WEIGHTS`` was already loaded into the SAM part when the model was built.
    """
    checkpointer = SamCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    return checkpointer


def write_results(cfg: CfgNode, results: Dict[str, Any]) -> None:
    """Write evaluation results to ``OUTPUT_DIR/results.json`` (main process)."""
    if comm.is_main_process() and cfg.OUTPUT_DIR:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        path = os.path.join(cfg.OUTPUT_DIR, "results.json")
        with atomic_open(path) as f:
            json.dump(results, f, indent=2, default=float)
        logger.info(f"Results written to {path}")


class Trainer(DefaultTrainer):
    """DefaultTrainer whose data, evaluation, optimisation and checkpoints fit sam_d2's models.

    Mappers come from :func:`build_test_mapper` / :func:`build_train_mapper`; checkpoints go
    through :class:`SamCheckpointer` (strict, one-line errors).
    """

    def __init__(self, cfg: CfgNode) -> None:
        check_trainable(cfg)
        super().__init__(cfg)
        self.checkpointer = SamCheckpointer(
            self._trainer.model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None
    ) -> DatasetEvaluator:
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        return build_detection_test_loader(cfg, dataset_name, mapper=build_test_mapper(cfg))

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        return build_detection_train_loader(cfg, mapper=build_train_mapper(cfg))

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        """SGD (Detectron2 default) or AdamW, with layer-wise lr decay of the encoder trunk.

        ``SOLVER.LR_DECAY_RATE`` decays each family's trunk by its own recipe
        (:func:`~sam_d2.modeling.layer_decay.layer_decay_factors`: ViT, TinyViT, Hiera); with an
        encoder it does not know, a rate other than 1 fails at once. Parameters without gradient
        (frozen by ``MODEL.SAM.TRAIN.TRAINABLE``) are left out.
        """
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            lr_factor_func=layer_decay_factors(model, cfg.SOLVER.LR_DECAY_RATE),
            overrides=(
                {"pos_embed": {"weight_decay": cfg.SOLVER.WEIGHT_DECAY_POS_EMBED}}
                if cfg.SOLVER.WEIGHT_DECAY_POS_EMBED is not None
                else None
            ),
        )
        if cfg.SOLVER.OPTIMIZER.upper() == "ADAMW":
            optimizer = torch.optim.AdamW(
                params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS)
            )
        elif cfg.SOLVER.OPTIMIZER.upper() == "SGD":
            optimizer = torch.optim.SGD(
                params,
                lr=cfg.SOLVER.BASE_LR,
                momentum=cfg.SOLVER.MOMENTUM,
                nesterov=cfg.SOLVER.NESTEROV,
            )
        else:
            raise ValueError(f"SOLVER.OPTIMIZER must be SGD or ADAMW, got {cfg.SOLVER.OPTIMIZER!r}")
        return maybe_add_gradient_clipping(cfg, optimizer)

    @classmethod
    def test(cls, cfg: CfgNode, model: nn.Module, evaluators: Optional[List] = None):
        """Evaluate every test set; several point-benchmark sets also get their mean (SA-23).

        No test set (e.g. the evaluation at the end of a training run without one): nothing to do.
        """
        if not cfg.DATASETS.TEST:
            logger.info("DATASETS.TEST is empty: no evaluation")
            return {}
        results = run_evaluation(cls, cfg, model, evaluators)  # checks data, records, resumes
        point = {
            name: res
            for name, res in results.items()
            if isinstance(res, dict) and any(k.startswith("point_miou/") for k in res)
        }
        if len(point) > 1:
            results["point_miou_mean"] = {"point_miou": average_point_miou(point)["point_miou"]}
            logger.info(f"Mean over {len(point)} datasets: {results['point_miou_mean']}")
        write_results(cfg, results)
        return results
