"""sam_d2's Detectron2 meta-architectures (registered in META_ARCH_REGISTRY on import)."""
from .point_eval import SamPointEvaluator
from .promptable import PromptableSam
from .prompted import SamPromptedDetector

__all__ = ["PromptableSam", "SamPointEvaluator", "SamPromptedDetector"]
