"""SAM's image encoder: the shared :class:`ViT` trunk plus a conv neck down to 256 channels."""

from typing import Dict, Sequence

from detectron2.layers.batch_norm import LayerNorm
from torch import Tensor, nn

from .vit import ViT

__all__ = ["SamImageEncoder", "ENCODER_PRESETS"]

# SAM paper / official checkpoints: width, depth, heads, global-attention blocks.
ENCODER_PRESETS: Dict[str, Dict[str, object]] = {
    "vit_b": dict(embed_dim=768, depth=12, num_heads=12, global_attn_indexes=(2, 5, 8, 11)),
    "vit_l": dict(embed_dim=1024, depth=24, num_heads=16, global_attn_indexes=(5, 11, 17, 23)),
    "vit_h": dict(embed_dim=1280, depth=32, num_heads=16, global_attn_indexes=(7, 15, 23, 31)),
}


class SamImageEncoder(ViT):
    """ViT trunk + neck (1x1 conv, LayerNorm, 3x3 conv, LayerNorm).

    A Detectron2 backbone: input (B, 3, S, S) normalised, padded images (S = ``img_size``); output
    ``{"image_embed": (B, out_chans, S/16, S/16)}``. Parameter names match the official
    ``image_encoder.*`` layout after the ``mlp.lin1/lin2 -> mlp.fc1/fc2`` renaming done by
    :mod:`sam_d2.checkpoint`.
    """

    def __init__(
        self,
        *,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        global_attn_indexes: Sequence[int] = (2, 5, 8, 11),
        window_size: int = 14,
        img_size: int = 1024,
        patch_size: int = 16,
        mlp_ratio: float = 4.0,
        out_chans: int = 256,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate,
            window_size=window_size,
            global_attn_indexes=global_attn_indexes,
            out_feature="image_embed",
        )
        self.img_size = img_size
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm(out_chans),
        )
        self._out_feature_channels = {self._out_features[0]: out_chans}

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """(B, 3, S, S) -> {"image_embed": (B, out_chans, S/16, S/16)}."""
        return {"image_embed": self.neck(self.tokens(x).permute(0, 3, 1, 2))}
