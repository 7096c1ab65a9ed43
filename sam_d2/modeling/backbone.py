"""ViTDet in yacs: the shared :class:`~sam_d2.modeling.vit.ViT` inside Detectron2's own
``SimpleFeaturePyramid``, built from ``cfg.MODEL.VIT``.

Upstream ViTDet exists only as LazyConfig python files (``projects/ViTDet/configs``); this builder
reproduces their backbone (``common/models/mask_rcnn_vitdet.py``) so that the ViTDet detectors can
be described by yacs files (``configs/ViTDet/``) and loaded from the official model-zoo
``model_final_*.pkl`` checkpoints through any Detectron2 loading path (parameter names and shapes
are upstream's: ``backbone.net.*`` with the cls-token position embedding, ``backbone.simfp_*``).

Usage: ``MODEL.BACKBONE.NAME: "build_vitdet_backbone"`` (see ``configs/ViTDet/Base-ViTDet.yaml``).
"""

from typing import List, Optional, Sequence

from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid

from .vit import ViT

__all__ = [
    "build_vitdet_backbone",
    "build_vitdet_vit",
    "global_attn_indexes_from_window_blocks",
]


def global_attn_indexes_from_window_blocks(depth: int, window_blocks: Sequence[int]) -> List[int]:
    """Blocks with global attention = the blocks not listed in ViTDet's ``window_block_indexes``.

    Raises:
        ValueError: if an index is outside ``[0, depth)``.
    """
    bad = [i for i in window_blocks if not 0 <= int(i) < depth]
    if bad:
        raise ValueError(
            f"MODEL.VIT.WINDOW_BLOCK_INDEXES {bad} out of range for MODEL.VIT.DEPTH={depth}"
        )
    windowed = {int(i) for i in window_blocks}
    return [i for i in range(depth) if i not in windowed]


def build_vitdet_vit(cfg: CfgNode, in_chans: int = 3) -> ViT:
    """The plain ViT trunk of ViTDet from ``cfg.MODEL.VIT``."""
    v = cfg.MODEL.VIT
    if v.PRETRAIN_IMG_SIZE % v.PATCH_SIZE:
        raise ValueError(
            f"MODEL.VIT.PRETRAIN_IMG_SIZE={v.PRETRAIN_IMG_SIZE} is not a multiple of "
            f"MODEL.VIT.PATCH_SIZE={v.PATCH_SIZE}"
        )
    return ViT(
        img_size=v.IMG_SIZE,
        patch_size=v.PATCH_SIZE,
        in_chans=in_chans,
        embed_dim=v.EMBED_DIM,
        depth=v.DEPTH,
        num_heads=v.NUM_HEADS,
        mlp_ratio=v.MLP_RATIO,
        qkv_bias=v.QKV_BIAS,
        drop_path_rate=v.DROP_PATH_RATE,
        use_abs_pos=True,
        use_rel_pos=v.USE_REL_POS,
        window_size=v.WINDOW_SIZE,
        global_attn_indexes=global_attn_indexes_from_window_blocks(v.DEPTH, v.WINDOW_BLOCK_INDEXES),
        pos_embed_size=v.PRETRAIN_IMG_SIZE // v.PATCH_SIZE,
        pretrain_use_cls_token=v.PRETRAIN_USE_CLS_TOKEN,
        out_feature=v.OUT_FEATURE,
    )


@BACKBONE_REGISTRY.register()
def build_vitdet_backbone(
    cfg: CfgNode, input_shape: Optional[ShapeSpec] = None
) -> SimpleFeaturePyramid:
    """ViTDet backbone: our ViT in Detectron2's ``SimpleFeaturePyramid`` (outputs p2-p6).

    Args:
        cfg: config with ``MODEL.VIT.*`` (see :func:`sam_d2.add_sam_config`).
        input_shape: channels of the input images (default 3).

    Returns:
        a ``SimpleFeaturePyramid`` whose ``net`` is a :class:`ViT`; parameter names are those of
        upstream's ViTDet (``net.blocks.N.attn.qkv``, ``simfp_2.0``, ...).
    """
    v = cfg.MODEL.VIT
    in_chans = input_shape.channels if input_shape is not None and input_shape.channels else 3
    net = build_vitdet_vit(cfg, in_chans)
    return SimpleFeaturePyramid(
        net=net,
        in_feature=v.OUT_FEATURE,
        out_channels=v.SFP_OUT_CHANNELS,
        scale_factors=tuple(float(s) for s in v.SFP_SCALE_FACTORS),
        top_block=LastLevelMaxPool() if v.SFP_TOP_BLOCK else None,
        norm=v.SFP_NORM,
        square_pad=v.SQUARE_PAD,
    )
