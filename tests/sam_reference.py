"""Build matching sam_d2 / segment_anything models with the same, fully randomised weights."""

from functools import partial
from typing import Sequence, Tuple

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    TwoWayTransformer,
)
from segment_anything.modeling import (
    Sam as RefSam,
)

import sam_d2
from sam_d2.utils.random_weights import randomize_state_dict as randomize_

# A small encoder at the real input size (1024, 64x64 tokens, window 14): every code path of the
# official models, at a fraction of ViT-B's cost.
MINI = dict(embed_dim=128, depth=4, num_heads=4, global_attn_indexes=(1, 3), window_size=14)


def reference_sam(
    embed_dim: int,
    depth: int,
    num_heads: int,
    global_attn_indexes: Sequence[int],
    window_size: int = 14,
    img_size: int = 1024,
) -> RefSam:
    """The official SAM architecture with the given encoder (mirrors its build_sam composition)."""
    grid = img_size // 16
    return RefSam(
        image_encoder=ImageEncoderViT(
            depth=depth,
            embed_dim=embed_dim,
            img_size=img_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=num_heads,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(global_attn_indexes),
            window_size=window_size,
            out_chans=256,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256,
            image_embedding_size=(grid, grid),
            input_image_size=(img_size, img_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
    ).eval()


def matched_models(
    variant: str = "custom", seed: int = 0, **encoder: object
) -> Tuple[sam_d2.PromptableSam, RefSam]:
    """(ours, reference) SAM with identical random weights; ours loads the official state dict."""
    enc = dict(MINI, **encoder) if variant == "custom" else {}
    if variant == "custom":
        ref = reference_sam(**enc)
    else:
        from segment_anything import sam_model_registry

        ref = sam_model_registry[variant]().eval()
    state = randomize_(ref.state_dict(), seed)
    ref.load_state_dict(state)
    ours = sam_d2.build_sam(variant, **enc)
    result = ours.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return ours.eval(), ref
