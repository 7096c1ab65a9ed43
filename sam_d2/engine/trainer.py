"""Detectron2 ``DefaultTrainer`` for sam_d2 models: evaluators from metadata, per-model mappers,
SAM checkpoint loading, AdamW with layer-wise lr decay, results written as JSON."""

import json
import logging
import os
import weakref
from typing import Any, Dict, List, Optional

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
from ..data.mappers import build_detection_mapper
from ..evaluation.build import build_evaluator
from ..evaluation.point_miou import average_point_miou
from ..modeling.vit import ViT, lr_decay_rate

__all__ = ["Trainer", "load_weights", "write_results"]

logger = logging.getLogger(__name__)


def _meta_arch_hook(cfg: CfgNode, name: str) -> Optional[Any]:
    """A classmethod ``name(cfg)`` of the configured meta-architecture, if it defines one."""
    cls = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    return getattr(cls, name, None)


def load_weights(model: nn.Module, cfg: CfgNode, resume: bool = False) -> SamCheckpointer:
    """Load ``MODEL.WEIGHTS`` (or resume), then ``MODEL.SAM.WEIGHTS`` into the SAM part."""
    checkpointer = SamCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
    checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=resume)
    if cfg.MODEL.SAM.WEIGHTS and not (resume and checkpointer.has_checkpoint()):
        SamCheckpointer(model).load(cfg.MODEL.SAM.WEIGHTS)
    return checkpointer


def write_results(cfg: CfgNode, results: Dict[str, Any]) -> None:
    """Write evaluation results to ``OUTPUT_DIR/results.json`` (main process)."""
    if comm.is_main_process() and cfg.OUTPUT_DIR:
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        path = os.path.join(cfg.OUTPUT_DIR, "results.json")
        with open(path, "w") as f:
            json.dump(results, f, indent=2, default=float)
        logger.info(f"Results written to {path}")


class Trainer(DefaultTrainer):
    """DefaultTrainer whose data, evaluation and optimisation fit sam_d2's meta-architectures.

    A meta-architecture may define classmethods ``build_test_mapper(cfg)`` and
    ``build_train_mapper(cfg)``; otherwise Detectron2's ``DatasetMapper`` is used (in training
    with ViTDet's large-scale jitter when ``INPUT.LSJ.ENABLED``).
    """

    def __init__(self, cfg: CfgNode) -> None:
        super().__init__(cfg)
        self.checkpointer = SamCheckpointer(
            self._trainer.model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )

    def resume_or_load(self, resume: bool = True) -> None:
        self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = self.iter + 1
        elif self.cfg.MODEL.SAM.WEIGHTS:
            SamCheckpointer(self._trainer.model).load(self.cfg.MODEL.SAM.WEIGHTS)

    @classmethod
    def build_evaluator(
        cls, cfg: CfgNode, dataset_name: str, output_folder: Optional[str] = None
    ) -> DatasetEvaluator:
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str):
        hook = _meta_arch_hook(cfg, "build_test_mapper")
        return build_detection_test_loader(cfg, dataset_name, mapper=hook(cfg) if hook else None)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode):
        hook = _meta_arch_hook(cfg, "build_train_mapper")
        mapper = hook(cfg) if hook else build_detection_mapper(cfg, is_train=True)
        return build_detection_train_loader(cfg, mapper=mapper)

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        """SGD (Detectron2 default) or AdamW, with layer-wise lr decay for ViT parameters."""
        decay = cfg.SOLVER.LR_DECAY_RATE
        depths = {n: len(m.blocks) for n, m in model.named_modules() if isinstance(m, ViT)}

        def lr_factor(name: str) -> float:
            for prefix, depth in depths.items():
                if decay != 1.0 and name.startswith(prefix):
                    return lr_decay_rate(name[len(prefix) :].lstrip("."), decay, depth)
            return 1.0

        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay=cfg.SOLVER.WEIGHT_DECAY,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            lr_factor_func=lr_factor,
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
        """Evaluate every test set; several point-benchmark sets also get their mean (SA-23)."""
        results = super().test(cfg, model, evaluators)
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
