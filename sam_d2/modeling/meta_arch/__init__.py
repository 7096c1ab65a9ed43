"""sam_d2's Detectron2 meta-architectures (registered in META_ARCH_REGISTRY on import)."""

from .edge_detector import SamEdgeDetector
from .click_benchmark import SamClickBenchmark
from .promptable import PromptableSam
from .detector_prompted import DetectorPromptedSam
from .proposals import SamAutomaticProposals

__all__ = [
    "PromptableSam",
    "SamAutomaticProposals",
    "SamEdgeDetector",
    "SamClickBenchmark",
    "DetectorPromptedSam",
]
