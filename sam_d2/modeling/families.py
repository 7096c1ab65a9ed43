"""The SAM family beside SAM itself: which encoder and mask decoder each variant name builds.

:func:`sam_d2.modeling.sam.build_sam_modules` (hence ``MODEL.SAM.VARIANT`` and
``sam_d2.build_sam``) looks variant names up here when they are not one of SAM's own ViT presets.
Every family yields the same three modules as SAM (``image_encoder``, ``prompt_encoder``,
``mask_decoder``), so the meta-architectures, ``SamPredictor`` and the automatic mask generator
take any of them.

| variant | model | encoder | decoder |
| --- | --- | --- | --- |
| ``vit_t`` | MobileSAM | TinyViT-5M (:mod:`.tiny_vit`) | SAM's |
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Type

from torch import nn

from .mask_decoder import MaskDecoder
from .tiny_vit import TINY_VIT_PRESETS, TinyViT

__all__ = ["Family", "FAMILY_VARIANTS", "family_variant_of"]


@dataclass(frozen=True)
class Family:
    """How one variant differs from SAM ViT: its encoder and the class of its mask decoder.

    Attributes:
        description: one line naming the model.
        build_encoder: ``(img_size=, out_chans=, drop_path_rate=, **overrides) -> encoder``.
        decoder_cls: mask decoder class, constructed with :class:`MaskDecoder`'s arguments plus
            ``decoder_kwargs(encoder)``.
        decoder_kwargs: extra decoder arguments that depend on the built encoder.
    """

    description: str
    build_encoder: Callable[..., nn.Module]
    decoder_cls: Type[MaskDecoder] = MaskDecoder
    decoder_kwargs: Callable[[nn.Module], Dict[str, Any]] = field(default=lambda encoder: {})


def _tiny_vit(preset: str) -> Callable[..., TinyViT]:
    def build(**kwargs: Any) -> TinyViT:
        return TinyViT(**{**TINY_VIT_PRESETS[preset], **kwargs})

    return build


FAMILY_VARIANTS: Dict[str, Family] = {
    "vit_t": Family("MobileSAM (TinyViT-5M encoder, SAM's decoder)", _tiny_vit("vit_t")),
}


def family_variant_of(state_dict: Dict[str, Any]) -> Optional[str]:
    """The family variant a state dict's keys reveal (for wrong-file messages), else None."""
    for key in state_dict:
        if key.endswith("image_encoder.patch_embed.seq.0.c.weight"):
            return "vit_t (MobileSAM)"
    return None
