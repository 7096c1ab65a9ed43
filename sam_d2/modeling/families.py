"""The SAM family beside SAM itself: which encoder and mask decoder each variant name builds.

:func:`sam_d2.modeling.sam.build_sam_modules` (hence ``MODEL.SAM.VARIANT`` and
``sam_d2.build_sam``) looks variant names up here when they are not one of SAM's own ViT presets.
Every family yields the same three modules as SAM (``image_encoder``, ``prompt_encoder``,
``mask_decoder``), so the meta-architectures, ``SamPredictor`` and the automatic mask generator
take any of them.

| variant | model | encoder | decoder | frame |
| --- | --- | --- | --- | --- |
| ``vit_t`` | MobileSAM | TinyViT-5M (:mod:`.tiny_vit`) | SAM's | pad |
| ``hq_vit_{b,l,h}`` | HQ-SAM | SAM's ViT (+ early feature) | + HQ token (:mod:`.hq_sam`) | pad |
| ``sam2.1_hiera_{t,s,b+,l}`` | SAM 2.1 image | Hiera + FPN (:mod:`.hiera`) | SAM 2's | stretch |

The frame is how images enter the encoder (:mod:`sam_d2.data.transforms`): "pad" (longest side
resized, zero-padded square, SAM's) or "stretch" (resized to the square, SAM 2's).
"""

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Dict, Optional, Tuple, Type

from torch import nn

from .hiera import HIERA_PRESETS
from .hq_sam import HQImageEncoder, HQMaskDecoder
from .image_encoder import ENCODER_PRESETS
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam2 import Sam2ImageEncoder, Sam2MaskDecoder, Sam2PromptEncoder, build_sam2_encoder
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
        prompt_encoder_cls: prompt encoder class, constructed with :class:`PromptEncoder`'s
            arguments.
        frame: "pad" or "stretch" (module docstring); the built encoder's ``frame`` attribute
            (absent: "pad") says the same, which is what :class:`~sam_d2.modeling.sam.Sam` reads,
            and so does :func:`sam_d2.data.transforms.variant_frame` for config-only callers.
    """

    description: str
    build_encoder: Callable[..., nn.Module]
    decoder_cls: Type[MaskDecoder] = MaskDecoder
    decoder_kwargs: Callable[[nn.Module], Dict[str, Any]] = field(default=lambda encoder: {})
    decoder_options: Tuple[str, ...] = ()
    prompt_encoder_cls: Type[PromptEncoder] = PromptEncoder
    frame: str = "pad"


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
    **{
        f"sam2.1_{preset}": Family(
            f"SAM 2.1 {preset} image model (Hiera + FPN encoder, SAM 2's decoder; no video memory)",
            partial(build_sam2_encoder, preset),
            Sam2MaskDecoder,
            prompt_encoder_cls=Sam2PromptEncoder,
            frame=Sam2ImageEncoder.frame,
        )
        for preset in HIERA_PRESETS
    },
}

# SAM 2.1's Hiera presets by (stage-1 width, number of blocks), for wrong-file messages.
_HIERA_BY_SHAPE = {
    (int(p["embed_dim"]), sum(p["stages"])): name for name, p in HIERA_PRESETS.items()
}


def family_variant_of(state_dict: Dict[str, Any]) -> Optional[str]:
    """The family variant a state dict's keys reveal (for wrong-file messages), else None.

    Works on sam_d2's layouts and on the official files (SAM 2's ``sam2.1_hiera_*.pt`` too).
    """
    hq = any(key.endswith("mask_decoder.hf_token.weight") for key in state_dict)
    blocks = {k.split("trunk.blocks.")[1].split(".")[0] for k in state_dict if "trunk.blocks." in k}
    for key, value in state_dict.items():
        if key.endswith("image_encoder.trunk.patch_embed.proj.weight"):
            preset = _HIERA_BY_SHAPE.get((int(value.shape[0]), len(blocks)), "hiera")
            return f"sam2.1_{preset} (SAM 2.1)"
        if key.endswith("image_encoder.patch_embed.seq.0.c.weight"):
            return "vit_t (MobileSAM)"
        if hq and key.endswith("image_encoder.patch_embed.proj.weight"):
            vit = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}.get(int(value.shape[0]), "vit")
            return f"hq_{vit} (HQ-SAM)"
    return None
