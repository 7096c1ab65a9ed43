"""The SAM family beside SAM itself: which encoder and mask decoder each variant name builds.

:func:`sam_d2.modeling.sam.build_sam_modules` (hence ``MODEL.SAM.VARIANT`` and
``sam_d2.build_sam``) looks variant names up here when they are not one of SAM's own ViT presets.
Every family yields the same three modules as SAM (``image_encoder``, ``prompt_encoder``,
``mask_decoder``), so the meta-architectures, ``SamPredictor`` and the automatic mask generator
take any of them.

| variant | model | encoder | decoder |
| --- | --- | --- | --- |
| ``vit_t`` | MobileSAM | TinyViT-5M (:mod:`.tiny_vit`) | SAM's |
| ``hq_vit_{b,l,h}`` | HQ-SAM | SAM's ViT (+ early feature) | SAM's + HQ token (:mod:`.hq_sam`) |
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple, Type

from torch import nn

from .hq_sam import HQImageEncoder, HQMaskDecoder
from .image_encoder import ENCODER_PRESETS
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
        decoder_options: names of optional decoder arguments accepted by ``build_sam_modules``
            (e.g. HQ-SAM's ``hq_token_only``).
    """

    description: str
    build_encoder: Callable[..., nn.Module]
    decoder_cls: Type[MaskDecoder] = MaskDecoder
    decoder_kwargs: Callable[[nn.Module], Dict[str, Any]] = field(default=lambda encoder: {})
    decoder_options: Tuple[str, ...] = ()


def _tiny_vit(preset: str) -> Callable[..., TinyViT]:
    def build(**kwargs: Any) -> TinyViT:
        return TinyViT(**{**TINY_VIT_PRESETS[preset], **kwargs})

    return build


def _hq_vit(preset: str) -> Callable[..., HQImageEncoder]:
    def build(**kwargs: Any) -> HQImageEncoder:
        return HQImageEncoder(**{**ENCODER_PRESETS[preset], **kwargs})

    return build


FAMILY_VARIANTS: Dict[str, Family] = {
    "vit_t": Family("MobileSAM (TinyViT-5M encoder, SAM's decoder)", _tiny_vit("vit_t")),
    **{
        f"hq_{vit}": Family(
            f"HQ-SAM {vit} (SAM's encoder and decoder, HQ token, global-local fusion)",
            _hq_vit(vit),
            HQMaskDecoder,
            lambda encoder: {"vit_dim": encoder.embed_dim},
            ("hq_token_only",),
        )
        for vit in ("vit_b", "vit_l", "vit_h")
    },
}


def family_variant_of(state_dict: Dict[str, Any]) -> Optional[str]:
    """The family variant a state dict's keys reveal (for wrong-file messages), else None."""
    hq = any(key.endswith("mask_decoder.hf_token.weight") for key in state_dict)
    for key, value in state_dict.items():
        if key.endswith("image_encoder.patch_embed.seq.0.c.weight"):
            return "vit_t (MobileSAM)"
        if hq and key.endswith("image_encoder.patch_embed.proj.weight"):
            vit = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}.get(int(value.shape[0]), "vit")
            return f"hq_{vit} (HQ-SAM)"
    return None
