"""sam_d2: Segment Anything (SAM) as a first-class Detectron2 plugin.

Importing the package registers its meta-architectures, backbones and datasets with Detectron2.
"""

from . import data  # noqa: F401  (registers datasets)
from .annotate.register import register_from_env
from .automatic import AutomaticMaskGenerator
from .checkpoint import CheckpointError, SamCheckpointer, load_sam_checkpoint
from .config import add_sam_config
from .data.bsds500_regions import register_bsds500_regions
from .data.sa1b import register_sa1b
from .model_registry import SamAutomaticMaskGenerator, sam_model_registry
from .modeling.backbone import build_vitdet_backbone
from .modeling.build import build_sam
from .modeling.meta_arch import (
    DetectorPromptedSam,
    PromptableSam,
    SamAutomaticProposals,
    SamClickBenchmark,
    SamEdgeDetector,
)
from .modeling.sam import Sam
from .predictor import SamPredictor
from .prompts import PromptError

# The annotation app's COCO exports named in $SAM_D2_COCO_DATASETS (the retrain loop).
register_from_env()

__all__ = [
    "register_bsds500_regions",
    "register_sa1b",
    "AutomaticMaskGenerator",
    "SamAutomaticProposals",
    "SamEdgeDetector",
    "SamClickBenchmark",
    "add_sam_config",
    "build_sam",
    "build_vitdet_backbone",
    "CheckpointError",
    "load_sam_checkpoint",
    "PromptableSam",
    "PromptError",
    "Sam",
    "SamAutomaticMaskGenerator",
    "sam_model_registry",
    "SamCheckpointer",
    "SamPredictor",
    "DetectorPromptedSam",
]
