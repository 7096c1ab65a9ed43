"""Builders from a yacs config and the official-style ``build_sam(variant, checkpoint)``."""

from typing import Any, Dict, Optional

from detectron2.config import CfgNode

from .sam import build_sam_modules

__all__ = ["sam_kwargs_from_cfg", "build_sam"]


def sam_kwargs_from_cfg(cfg: CfgNode) -> Dict[str, Any]:
    """Arguments of :func:`build_sam_modules` from ``cfg.MODEL.SAM``."""
    c = cfg.MODEL.SAM
    kwargs: Dict[str, Any] = dict(
        variant=c.VARIANT,
        img_size=c.IMAGE_SIZE,
        prompt_embed_dim=c.ENCODER.OUT_CHANS,
        mask_in_chans=c.MASK_IN_CHANS,
        decoder_depth=c.DECODER.DEPTH,
        decoder_mlp_dim=c.DECODER.MLP_DIM,
        decoder_num_heads=c.DECODER.NUM_HEADS,
        num_multimask_outputs=c.DECODER.NUM_MULTIMASK_OUTPUTS,
        iou_head_depth=c.DECODER.IOU_HEAD_DEPTH,
        iou_head_hidden_dim=c.DECODER.IOU_HEAD_HIDDEN_DIM,
        drop_path_rate=c.DROP_PATH_RATE,
    )
    if c.VARIANT.startswith("hq_"):  # HQ-SAM (sam_d2.modeling.families)
        kwargs["hq_token_only"] = c.HQ_TOKEN_ONLY
    if c.VARIANT == "custom":
        e = c.ENCODER
        kwargs.update(
            embed_dim=e.EMBED_DIM,
            depth=e.DEPTH,
            num_heads=e.NUM_HEADS,
            global_attn_indexes=tuple(e.GLOBAL_ATTN_INDEXES),
            window_size=e.WINDOW_SIZE,
            patch_size=e.PATCH_SIZE,
            mlp_ratio=e.MLP_RATIO,
        )
    return kwargs


def build_sam(variant: str = "vit_b", checkpoint: Optional[str] = None, **kwargs: Any):
    """Build a SAM model like ``segment_anything.sam_model_registry[variant](checkpoint)``.

    Args:
        variant: "vit_b", "vit_l" or "vit_h" (or "custom" with encoder kwargs), or a SAM-family
            variant ("vit_t", "hq_vit_b", "sam2.1_hiera_t", ...: ``FAMILY_VARIANTS``).
        checkpoint: optional path to an official file of the variant (``sam_vit_*.pth``,
            ``sam2.1_hiera_*.pt``, ...) or a sam_d2 checkpoint.
        kwargs: further arguments of :func:`build_sam_modules` / :class:`PromptableSam`.

    Returns:
        a :class:`PromptableSam` in eval mode, on CPU.
    """
    from ..checkpoint import load_sam_checkpoint
    from .meta_arch.promptable import PromptableSam

    own = {k: kwargs.pop(k) for k in ("multimask_output", "prompt_chunk_size") if k in kwargs}
    encoder, prompt_encoder, decoder = build_sam_modules(variant, **kwargs)
    model = PromptableSam(
        image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=decoder, **own
    )
    if checkpoint:
        load_sam_checkpoint(model, checkpoint)
    return model.eval()
