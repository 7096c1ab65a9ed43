"""sam_d2: Segment Anything (SAM) as a first-class Detectron2 plugin.

Importing the package registers its meta-architectures, backbones and datasets with Detectron2.
"""

from .checkpoint import CheckpointError, SamCheckpointer, load_sam_checkpoint
from .config import add_sam_config
from .modeling.build import build_sam, build_sam_image_encoder
from .modeling.meta_arch.promptable import PromptableSam
from .modeling.sam import Sam
from .predictor import SamPredictor
from .prompts import PromptError

__all__ = [
    "add_sam_config",
    "build_sam",
    "build_sam_image_encoder",
    "CheckpointError",
    "load_sam_checkpoint",
    "PromptableSam",
    "PromptError",
    "Sam",
    "SamCheckpointer",
    "SamPredictor",
]
