"""SAM 2.1's image encoder: the Hiera trunk (Ryali et al. 2023, as SAM 2 uses it) and its FPN neck.

Hiera: a stride-4 7x7 patch embedding, a position embedding interpolated from a small background
grid plus one tiled window embedding, then four stages of pre-norm transformer blocks. The first
block of stages 2-4 halves the grid by max-pooling its queries (2x2) and widens the channels (x2)
and heads (x2); its residual path is a linear projection, pooled the same way. Blocks attend
within windows (per-stage sizes; a query-pooling block still cuts the windows of the previous
stage and pools each to half its side) except a few global blocks.

FPN neck: a 1x1 conv per stage to ``d_model`` channels; the two lowest-resolution levels also
add the nearest-upsampled level below them (top-down). SAM 2's image path keeps the three
finest levels: stride 16 (the image embedding) and strides 4 and 8 (the decoder's high-res
features).

Parameter names follow the official checkpoints (``sam2.1_hiera_*.pt``: ``image_encoder.trunk.*``,
``image_encoder.neck.convs.*``). The neck's sine position encoding feeds only SAM 2's video memory
and is not built here.

Status: encoder only, with numerical parity to the ``sam2`` package; the SAM 2.1 decoder and the
variant wiring (``MODEL.SAM.VARIANT``) are not implemented yet.
"""

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import stochastic_depth

from .vit import window_partition, window_unpartition

__all__ = ["Hiera", "FpnNeck", "HIERA_PRESETS"]

# SAM 2.1 presets (sam2/configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml).
HIERA_PRESETS: Dict[str, Dict[str, object]] = {
    "hiera_t": dict(
        embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    "hiera_s": dict(
        embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13),
        window_pos_embed_bkg_spatial_size=(7, 7),
    ),
    "hiera_b+": dict(
        embed_dim=112, num_heads=2, stages=(2, 3, 16, 3), global_att_blocks=(12, 16, 20),
        window_pos_embed_bkg_spatial_size=(14, 14),
    ),
    "hiera_l": dict(
        embed_dim=144, num_heads=2, stages=(2, 6, 36, 4), global_att_blocks=(23, 33, 43),
        window_spec=(8, 4, 16, 8), window_pos_embed_bkg_spatial_size=(7, 7),
    ),
}  # fmt: skip


class PatchEmbed(nn.Module):
    """7x7 conv, stride 4, padding 3: (B, 3, H, W) -> (B, H/4, W/4, C)."""

    def __init__(self, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def _pool(x: Tensor, stride: int) -> Tensor:
    """2-D max-pool of a (B, H, W, C) grid with kernel = stride."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), stride, stride).permute(0, 2, 3, 1)


class MultiScaleAttention(nn.Module):
    """Self-attention over a (B, H, W, C) grid whose queries may be max-pooled (``q_stride``)."""

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, H / q_stride, W / q_stride, dim_out)."""
        b, h, w, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).unbind(2)
        if self.q_stride > 1:
            q = _pool(q.reshape(b, h, w, -1), self.q_stride)
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.num_heads, -1)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        )
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class Mlp(nn.Module):
    """Linear, GELU, Linear (names ``layers.0``, ``layers.1``)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(dim, hidden_dim), nn.Linear(hidden_dim, dim)])

    def forward(self, x: Tensor) -> Tensor:
        return self.layers[1](F.gelu(self.layers[0](x)))


class MultiScaleBlock(nn.Module):
    """Pre-norm Hiera block; with ``q_stride`` > 1 it halves the grid and changes the width."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        window_size: int,
        q_stride: int = 1,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
    ) -> None:
        """
        Args:
            window_size: side of the attention windows on the input grid; 0: global attention.
            q_stride: query pooling stride (1: none).
        """
        super().__init__()
        self.window_size = window_size
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = MultiScaleAttention(dim, dim_out, num_heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = Mlp(dim_out, int(dim_out * mlp_ratio))
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else None
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, dim) -> (B, H / q_stride, W / q_stride, dim_out)."""
        y = self.norm1(x)
        shortcut = x if self.proj is None else self.proj(y)
        if self.q_stride > 1:
            shortcut = _pool(shortcut, self.q_stride)
        if self.window_size > 0:
            windows, _ = window_partition(y, self.window_size)
            attn = self.attn(windows)
            win = self.window_size // self.q_stride
            h, w = shortcut.shape[1:3]
            padded = (h + (-h) % win, w + (-w) % win)
            y = window_unpartition(attn, win, padded, (h, w))
        else:
            y = self.attn(y)
        x = shortcut + stochastic_depth(y, self.drop_path, "row", self.training)
        y = self.mlp(self.norm2(x))
        return x + stochastic_depth(y, self.drop_path, "row", self.training)


class Hiera(nn.Module):
    """Hiera trunk: (B, 3, S, S) -> one (B, C_i, S / 4 / 2^i, S / 4 / 2^i) map per stage."""

    def __init__(
        self,
        *,
        embed_dim: int = 96,
        num_heads: int = 1,
        stages: Sequence[int] = (2, 3, 16, 3),
        global_att_blocks: Sequence[int] = (12, 16, 20),
        window_spec: Sequence[int] = (8, 4, 14, 7),
        window_pos_embed_bkg_spatial_size: Tuple[int, int] = (14, 14),
        q_stride: int = 2,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        """
        Args (keyword-only):
            embed_dim, num_heads: of stage 1; doubled at each later stage.
            stages: blocks per stage.
            global_att_blocks: indexes of blocks with global attention.
            window_spec: window side per stage (on the stage's input grid).
            window_pos_embed_bkg_spatial_size: grid of the stored background position embedding.
            q_stride: query pooling stride at each stage transition.
            mlp_ratio: MLP expansion.
            drop_path_rate: stochastic depth, rising linearly over the blocks up to this rate.
        """
        super().__init__()
        if len(stages) != len(window_spec):
            raise ValueError(
                f"Hiera: stages {tuple(stages)} and window_spec {tuple(window_spec)} differ in "
                "length"
            )
        depth = sum(stages)
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(
            torch.zeros(1, embed_dim, window_spec[0], window_spec[0])
        )
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList()
        dim, stage = embed_dim, 0
        for i in range(depth):
            # A stage's first block still works on the previous stage's grid and windows.
            window = 0 if i in global_att_blocks else window_spec[stage]
            dim_out, stride = dim, 1
            if i - 1 in self.stage_ends:
                dim_out, num_heads, stride, stage = 2 * dim, 2 * num_heads, q_stride, stage + 1
            self.blocks.append(
                MultiScaleBlock(dim, dim_out, num_heads, window, stride, mlp_ratio, rates[i])
            )
            dim = dim_out
        self.channel_list = [self.blocks[i].mlp.layers[1].out_features for i in self.stage_ends]

    def _pos_embed(self, hw: Tuple[int, int]) -> Tensor:
        """Background embedding resized (bicubic) to the grid plus the tiled window embedding."""
        pos = F.interpolate(self.pos_embed, size=hw, mode="bicubic")
        win = self.pos_embed_window
        pos = pos + win.tile(1, 1, hw[0] // win.shape[2], hw[1] // win.shape[3])
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: Tensor, recompute: bool = False) -> List[Tensor]:
        """(B, 3, S, S) -> [(B, C_i, h_i, w_i)] per stage, finest first.

        With ``recompute``, each block is recomputed in backward instead of keeping its
        activations (activation checkpointing).
        """
        x = self.patch_embed(x)
        x = x + self._pos_embed(x.shape[1:3])
        outs = []
        for i, blk in enumerate(self.blocks):
            x = checkpoint(blk, x, use_reentrant=False) if recompute else blk(x)
            if i in self.stage_ends:
                outs.append(x.permute(0, 3, 1, 2))
        return outs


class FpnNeck(nn.Module):
    """1x1 lateral convs to ``d_model``; the ``top_down_levels`` add the upsampled coarser level."""

    def __init__(
        self, d_model: int, channel_list: Sequence[int], top_down_levels: Sequence[int] = (2, 3)
    ) -> None:
        """
        Args:
            channel_list: trunk channels per level, finest first.
            top_down_levels: levels (0 = finest) that add the nearest-upsampled coarser output.
        """
        super().__init__()
        self.top_down_levels = tuple(top_down_levels)
        # Official order: coarsest level first.
        self.convs = nn.ModuleList(nn.Sequential() for _ in channel_list)
        for seq, dim in zip(self.convs, reversed(channel_list)):
            seq.add_module("conv", nn.Conv2d(dim, d_model, kernel_size=1))

    def forward(self, xs: Sequence[Tensor]) -> List[Tensor]:
        """Per-level trunk maps, finest first -> (B, d_model, h_i, w_i) per level, finest first."""
        n = len(xs)
        outs: List[Tensor] = [None] * n
        prev = None
        for i in range(n - 1, -1, -1):
            lateral = self.convs[n - 1 - i](xs[i])
            if prev is not None and i in self.top_down_levels:
                lateral = lateral + F.interpolate(prev.float(), scale_factor=2.0, mode="nearest")
            outs[i] = prev = lateral
        return outs
