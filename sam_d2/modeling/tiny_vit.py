"""TinyViT, MobileSAM's image encoder: a 5 M-parameter drop-in for SAM's ViT (256x64x64 output).

Architecture (TinyViT, Wu et al. 2022; distilled from SAM ViT-H by MobileSAM, Zhang et al. 2023):
a two-conv stem (stride 4), one stage of inverted-residual convolutions (MBConv) and three stages
of windowed self-attention blocks with a LeViT-style learned bias per head and per (|dy|, |dx|)
offset, a depthwise 3x3 conv between attention and MLP, patch-merging convolutions between stages
(strides 2, 2, 1: the last keeps the 1/16 grid SAM's decoder expects), and SAM's conv neck.

Parameter names follow the official MobileSAM checkpoint (``mobile_sam.pt``: ``image_encoder.*``),
so it loads as it is through any path; its ImageNet classifier (``norm_head``, ``head``, unused by
SAM) is dropped while loading. BatchNorm layers use running statistics in eval mode.
"""

from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.layers.batch_norm import LayerNorm
from detectron2.modeling.backbone import Backbone
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint
from torchvision.ops import stochastic_depth

from .vit import window_partition, window_unpartition

__all__ = ["TinyViT", "TINY_VIT_PRESETS"]

# MobileSAM's encoder ("vit_t" in its registry): TinyViT-5M.
TINY_VIT_PRESETS: Dict[str, Dict[str, Tuple[int, ...]]] = {
    "vit_t": dict(
        embed_dims=(64, 128, 160, 320),
        depths=(2, 2, 6, 2),
        num_heads=(2, 4, 5, 10),
        window_sizes=(7, 7, 14, 7),
    ),
}


class ConvBN(nn.Sequential):
    """Conv2d without bias followed by BatchNorm2d (names ``c``, ``bn``)."""

    def __init__(
        self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1
    ) -> None:
        super().__init__()
        self.add_module(
            "c", nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        )
        self.add_module("bn", nn.BatchNorm2d(cout))


class PatchEmbed(nn.Module):
    """Stem: two stride-2 3x3 ConvBN with GELU between: (B, 3, H, W) -> (B, C, H/4, W/4)."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.seq = nn.Sequential(
            ConvBN(in_chans, embed_dim // 2, 3, 2),
            nn.GELU(),
            ConvBN(embed_dim // 2, embed_dim, 3, 2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.seq(x)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project, residual, GELU after the sum."""

    def __init__(self, dim: int, expand_ratio: float, drop_path: float) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.conv3 = ConvBN(hidden, dim)
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        y = self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))
        return F.gelu(x + stochastic_depth(y, self.drop_path, "row", self.training))


class PatchMerging(nn.Module):
    """1x1 ConvBN, GELU, depthwise 3x3 ConvBN with ``stride``, GELU, 1x1 ConvBN."""

    def __init__(self, dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(dim, out_dim)
        self.conv2 = ConvBN(out_dim, out_dim, 3, stride, groups=out_dim)
        self.conv3 = ConvBN(out_dim, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, out_dim, H/stride, W/stride)."""
        return self.conv3(F.gelu(self.conv2(F.gelu(self.conv1(x)))))


class WindowAttention(nn.Module):
    """Pre-norm multi-head attention inside one square window, with a learned bias per head and
    per offset (|dy|, |dx|) between query and key (LeViT's "attention biases").

    The (heads, window**2) table ``attention_biases`` is indexed by ``|dy| * window + |dx|``.
    """

    def __init__(self, dim: int, num_heads: int, window: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"TinyViT attention: dim={dim} is not divisible by heads={num_heads}")
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)  # per head: [q, k, v] of dim // num_heads each
        self.proj = nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window * window))
        ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        offsets = (ys[:, None] - ys[None]).abs() * window + (xs[:, None] - xs[None]).abs()
        self.register_buffer("attention_bias_idxs", offsets, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, C) tokens of B windows (N = window**2) -> (B, N, C)."""
        b, n, c = x.shape
        qkv = self.qkv(self.norm(x)).view(b, n, self.num_heads, 3, c // self.num_heads)
        q, k, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
        bias = self.attention_biases[:, self.attention_bias_idxs].to(q.dtype)  # (heads, N, N)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """Pre-norm two-layer MLP with GELU (names ``norm``, ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(self.norm(x))))


class TinyViTBlock(nn.Module):
    """Windowed attention (residual), depthwise 3x3 ConvBN (no residual), MLP (residual).

    The grid is zero-padded to whole windows before the attention's LayerNorm, so padded cells
    take part as keys, exactly as in TinyViT.
    """

    def __init__(
        self, dim: int, num_heads: int, window: int, mlp_ratio: float, drop_path: float
    ) -> None:
        super().__init__()
        self.window = window
        self.attn = WindowAttention(dim, num_heads, window)
        self.local_conv = ConvBN(dim, dim, 3, groups=dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def _drop(self, x: Tensor) -> Tensor:
        return stochastic_depth(x, self.drop_path, "row", self.training)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        b, c, h, w = x.shape
        grid = x.permute(0, 2, 3, 1)
        windows, padded = window_partition(grid, self.window)
        attn = self.attn(windows.flatten(1, 2)).view_as(windows)
        grid = grid + self._drop(window_unpartition(attn, self.window, padded, (h, w)))
        grid = self.local_conv(grid.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        grid = grid + self._drop(self.mlp(grid))
        return grid.permute(0, 3, 1, 2)


class Stage(nn.Module):
    """``blocks`` then an optional ``downsample`` (PatchMerging) into the next stage's width."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: nn.Module = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


class TinyViT(Backbone):
    """TinyViT trunk + SAM neck as SAM's image encoder (a Detectron2 backbone).

    Input (B, 3, S, S) normalised, padded images (S = ``img_size``); output
    ``{"image_embed": (B, out_chans, S/16, S/16)}``.
    """

    #: Recompute each block in backward instead of storing its activations (training only).
    activation_checkpointing: bool = False

    def __init__(
        self,
        *,
        embed_dims: Sequence[int] = (64, 128, 160, 320),
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (2, 4, 5, 10),
        window_sizes: Sequence[int] = (7, 7, 14, 7),
        merge_strides: Sequence[int] = (2, 2, 1),
        img_size: int = 1024,
        mlp_ratio: float = 4.0,
        mbconv_expand_ratio: float = 4.0,
        out_chans: int = 256,
        drop_path_rate: float = 0.0,
        in_chans: int = 3,
    ) -> None:
        """
        Args (keyword-only):
            embed_dims, depths, num_heads, window_sizes: per stage; stage 0 is convolutional
                (its heads and window are unused).
            merge_strides: strides of the patch mergings between stages; with the stride-4 stem,
                (2, 2, 1) gives SAM's 1/16 grid.
            img_size: side of the square input.
            mlp_ratio, mbconv_expand_ratio: MLP and MBConv expansions.
            out_chans: channels of the neck (= SAM's prompt embedding width).
            drop_path_rate: stochastic depth, rising linearly over all blocks up to this rate.
        """
        super().__init__()
        n = len(embed_dims)
        lengths = {len(depths), len(num_heads), len(window_sizes), len(merge_strides) + 1}
        if lengths != {n}:
            raise ValueError(
                f"TinyViT: embed_dims, depths, num_heads, window_sizes need one entry per stage "
                f"and merge_strides one fewer; got {n}, {len(depths)}, {len(num_heads)}, "
                f"{len(window_sizes)}, {len(merge_strides)}"
            )
        self.img_size = img_size
        self.patch_embed = PatchEmbed(in_chans, embed_dims[0])
        total = sum(depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.layers = nn.ModuleList()
        for i, (dim, depth) in enumerate(zip(embed_dims, depths)):
            r = rates[sum(depths[:i]) : sum(depths[: i + 1])]
            if i == 0:
                blocks = [MBConv(dim, mbconv_expand_ratio, r[j]) for j in range(depth)]
            else:
                blocks = [
                    TinyViTBlock(dim, num_heads[i], window_sizes[i], mlp_ratio, r[j])
                    for j in range(depth)
                ]
            down = PatchMerging(dim, embed_dims[i + 1], merge_strides[i]) if i < n - 1 else None
            self.layers.append(Stage(blocks, down))
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dims[-1], out_chans, kernel_size=1, bias=False),
            LayerNorm(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm(out_chans),
        )
        stride = 4
        for s in merge_strides:
            stride *= s
        self._out_features = ["image_embed"]
        self._out_feature_channels = {"image_embed": out_chans}
        self._out_feature_strides = {"image_embed": stride}

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """(B, 3, S, S) -> {"image_embed": (B, out_chans, S/16, S/16)}."""
        x = self.patch_embed(x)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for stage in self.layers:
            for blk in stage.blocks:
                x = checkpoint(blk, x, use_reentrant=False) if recompute else blk(x)
            if stage.downsample is not None:
                x = stage.downsample(x)
        return {"image_embed": self.neck(x)}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            "image_embed": ShapeSpec(
                channels=self._out_feature_channels["image_embed"],
                stride=self._out_feature_strides["image_embed"],
            )
        }

    # The ImageNet classifier of TinyViT pretraining, kept in MobileSAM's checkpoint, unused.
    _UNUSED_OFFICIAL = ("norm_head.", "head.")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for key in [k for k in state_dict if k.startswith(prefix)]:
            if key[len(prefix) :].startswith(self._UNUSED_OFFICIAL):
                del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
