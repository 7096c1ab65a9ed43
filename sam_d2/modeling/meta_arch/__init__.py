"""sam_d2's Detectron2 meta-architectures (registered in META_ARCH_REGISTRY on import)."""

from .click_benchmark import SamClickBenchmark
from .detector_prompted import DetectorPromptedSam
from .edge_detector import SamEdgeDetector
from .promptable import PromptableSam
from .proposals import SamAutomaticProposals

__all__ = [
    "PromptableSam",
    "SamAutomaticProposals",
    "SamEdgeDetector",
    "SamClickBenchmark",
    "DetectorPromptedSam",
]
