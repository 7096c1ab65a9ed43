"""sam_d2's Detectron2 meta-architectures (registered in META_ARCH_REGISTRY on import)."""

from .edges import SamEdgeDetector
from .point_eval import SamPointEvaluator
from .promptable import PromptableSam
from .prompted import SamPromptedDetector
from .proposals import SamAutomaticProposals

__all__ = [
    "PromptableSam",
    "SamAutomaticProposals",
    "SamEdgeDetector",
    "SamPointEvaluator",
    "SamPromptedDetector",
]
