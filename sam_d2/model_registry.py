"""The official package's top-level names, so notebooks run with only the import swapped.

``from sam_d2 import sam_model_registry, SamPredictor, SamAutomaticMaskGenerator`` replaces
``from segment_anything import ...``: ``sam_model_registry[variant](checkpoint=path)`` builds the
same architecture and loads an official ``sam_vit_*.pth`` file. The SAM family's variants are
there too (``vit_t``, ``hq_vit_*``, ``sam2.1_hiera_*``: every name of
:data:`~sam_d2.modeling.families.FAMILY_VARIANTS`), each loading its own official file.
"""

from functools import partial
from typing import Callable, Dict

from .automatic import AutomaticMaskGenerator
from .modeling.build import build_sam
from .modeling.families import FAMILY_VARIANTS

__all__ = ["sam_model_registry", "SamAutomaticMaskGenerator"]

#: variant -> ``builder(checkpoint=None)``; "default" is ViT-H, as in the official registry.
sam_model_registry: Dict[str, Callable] = {
    "default": partial(build_sam, "vit_h"),
    "vit_h": partial(build_sam, "vit_h"),
    "vit_l": partial(build_sam, "vit_l"),
    "vit_b": partial(build_sam, "vit_b"),
    **{variant: partial(build_sam, variant) for variant in FAMILY_VARIANTS},
}

#: The official class name of :class:`~sam_d2.automatic.AutomaticMaskGenerator`.
SamAutomaticMaskGenerator = AutomaticMaskGenerator
