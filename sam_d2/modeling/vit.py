"""One plain ViT serving as SAM's image encoder trunk and as ViTDet's backbone.

Blocks use windowed attention except a few global ones, with decomposed relative position bias
(MViTv2/ViTDet) through ``scaled_dot_product_attention``: folded into widened queries and keys on
large (global) grids, so no (heads, N, N) bias exists, and as a small additive bias in windows.
Tokens stay in (B, H, W, C) layout between blocks so windows are cheap to cut.

Parameter names and shapes follow Detectron2's ViT (``blocks.N.attn.qkv``, ``blocks.N.mlp.fc1``,
the position embedding with its class-token slot when ``pretrain_use_cls_token``) and SAM's encoder
(position embedding as a grid); the official SAM checkpoints' ``mlp.lin1/lin2`` are renamed by
:class:`Mlp` while loading. Official files thus load through any loading path, including plain
``load_state_dict`` and Detectron2's ``DetectionCheckpointer``.
"""

import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import Backbone
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = [
    "ViT",
    "PatchEmbed",
    "Block",
    "Attention",
    "chunked_bias_attention",
    "folded_rel_pos_attention",
    "relative_position_bias",
    "relative_position_terms",
    "lr_decay_rate",
]


def _offset_table(table: Tensor, size: int) -> Tensor:
    """(L, C) offset embeddings resized (linear) to the ``2 * size - 1`` offsets of one axis."""
    span = 2 * size - 1
    if table.shape[0] != span:
        table = F.interpolate(table.t()[None], size=span, mode="linear")[0].t()
    return table


def relative_position_terms(
    q: Tensor, table_h: Tensor, table_w: Tensor, hw: Tuple[int, int]
) -> Tuple[Tensor, Tensor]:
    """The two factors of the decomposed relative position bias (MViTv2) of self-attention.

    The bias between the query ``q`` at (y, x) and the key at (ky, kx) is
    ``rel_h[..., y, x, ky] + rel_w[..., y, x, kx]``, with ``rel_h[..., y, x, ky] = q.T_h[y - ky]``
    and ``rel_w[..., y, x, kx] = q.T_w[x - kx]``.
    One GEMM scores every query against every offset of both (flipped) tables; the query in row
    ``y`` needs the ``H`` consecutive height scores starting at ``H - 1 - y``, so both factors are
    strided views of that product (no per-row gather or batched GEMM).

    Args:
        q: (B, heads, H * W, C) unscaled queries.
        table_h, table_w: (2 * size - 1, C) learned offset embeddings along height and width.
        hw: (H, W) of the token grid (queries and keys).

    Returns:
        rel_h (B, heads, H, W, H) and rel_w (B, heads, H, W, W), strided views.
    """
    h, w = hw
    b, heads = q.shape[:2]
    tables = torch.cat([_offset_table(table_h, h).flip(0), _offset_table(table_w, w).flip(0)])
    scores = torch.matmul(q, tables.t().to(q.dtype))  # (B, heads, N, 2H - 1 + 2W - 1)
    length, (sb, sn) = scores.shape[-1], scores.stride()[:2]
    start = scores.storage_offset()
    rel_h = scores.as_strided(
        (b, heads, h, w, h), (sb, sn, w * length - 1, length, 1), start + h - 1
    )
    rel_w = scores.as_strided(
        (b, heads, h, w, w), (sb, sn, w * length, length - 1, 1), start + 2 * h - 1 + w - 1
    )
    return rel_h, rel_w


def relative_position_bias(
    q: Tensor, table_h: Tensor, table_w: Tensor, hw: Tuple[int, int]
) -> Tensor:
    """Decomposed relative position bias (MViTv2) of self-attention as an additive bias.

    Args:
        q: (B, heads, H * W, C) unscaled queries.
        table_h, table_w: (2 * size - 1, C) learned offset embeddings along height and width.
        hw: (H, W) of the token grid.

    Returns:
        (B, heads, H * W, H * W) bias to add to the attention logits.
    """
    b, heads, n, _ = q.shape
    rel_h, rel_w = relative_position_terms(q, table_h, table_w, hw)
    return (rel_h[..., :, None] + rel_w[..., None, :]).view(b, heads, n, n)


def folded_rel_pos_attention(
    q: Tensor, k: Tensor, v: Tensor, table_h: Tensor, table_w: Tensor, hw: Tuple[int, int]
) -> Tensor:
    """Self-attention with decomposed relative position bias, without any (N, N) bias tensor.

    The logit ``scale * q.k + rel_h[q, ky] + rel_w[q, kx]`` is the plain dot product of the
    widened vectors ``q' = [scale * q, rel_h[q, :], rel_w[q, :]]`` and
    ``k' = [k, onehot(ky), onehot(kx)]`` (exact math, ``../shared/DESIGN.md`` §7), so
    ``scaled_dot_product_attention`` runs with scale 1 and no mask and may use its fused
    (flash / memory-efficient) kernels. The widths are zero-padded to a multiple of 8 and ``v``
    to the same width, as the fused kernels require.

    Args:
        q, k, v: (B, heads, H * W, C) over an (H, W) token grid (``hw``).
        table_h, table_w: (2 * size - 1, C) rel-pos tables.
        hw: (H, W).

    Returns:
        (B, heads, H * W, C) attention output.
    """
    h, w = hw
    b, heads, n, c = q.shape
    rel_h, rel_w = relative_position_terms(q, table_h, table_w, hw)
    width = c + h + w
    pad = (-width) % 8
    key_pos = torch.arange(n, device=q.device)
    onehot_h = F.one_hot(key_pos // w, h).to(k.dtype)  # (N, H): row of each key
    onehot_w = F.one_hot(key_pos % w, w).to(k.dtype)  # (N, W): column of each key
    key_extra = F.pad(torch.cat([onehot_h, onehot_w], dim=1), (0, pad))
    scaled = (q * c**-0.5).view(b, heads, h, w, c)
    q2 = torch.cat([scaled, rel_h, rel_w, q.new_zeros(b, heads, h, w, pad)], dim=-1)
    k2 = torch.cat([k, key_extra.expand(b, heads, n, h + w + pad)], dim=-1)
    v2 = F.pad(v, (0, width + pad - c))
    return F.scaled_dot_product_attention(q2.view(b, heads, n, -1), k2, v2, scale=1.0)[..., :c]


def chunked_bias_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    table_h: Tensor,
    table_w: Tensor,
    hw: Tuple[int, int],
    chunk_tokens: int = 1024,
) -> Tensor:
    """Self-attention with decomposed relative position bias, the bias built per query chunk.

    Runs ``scaled_dot_product_attention`` on whole query rows at a time (at least
    ``chunk_tokens`` queries), each with its (B, heads, rows * W, H * W) additive bias written
    into one reused buffer, so memory stays bounded and the kernel keeps plain head-width GEMMs
    (the folded form widens them ~3x, which costs more than it saves in fp32 on CPU). Inference
    only (the bias is written in place).

    Args:
        q, k, v: (B, heads, H * W, C) over an (H, W) token grid (``hw``).
        table_h, table_w: (2 * size - 1, C) rel-pos tables.
        hw: (H, W).
        chunk_tokens: queries per chunk (rounded up to whole rows).

    Returns:
        (B, heads, H * W, C) attention output, laid out as (B, H * W, heads, C) in memory.
    """
    h, w = hw
    b, heads, n, c = q.shape
    rel_h, rel_w = relative_position_terms(q, table_h, table_w, hw)
    rows = min(-(-chunk_tokens // w), h)
    out = q.new_empty(b, n, heads, c)
    bias = q.new_empty(b, heads, rows, w, h, w)  # reused: fresh pages each chunk cost ~25%
    for y in range(0, h, rows):
        end = min(y + rows, h)
        torch.add(
            rel_h[:, :, y:end, :, :, None],
            rel_w[:, :, y:end, :, None, :],
            out=bias[:, :, : end - y],
        )
        queries = slice(y * w, end * w)
        mask = bias[:, :, : end - y].view(b, heads, -1, n)
        out[:, queries] = F.scaled_dot_product_attention(
            q[:, :, queries], k, v, attn_mask=mask
        ).transpose(1, 2)
    return out.transpose(1, 2)


#: Token grids at least this large (global blocks) never build the whole (heads, N, N) bias: in
#: fp32 without autograd they attend query chunk by query chunk (:func:`chunked_bias_attention`),
#: otherwise (half precision, or training) through :func:`folded_rel_pos_attention`. Smaller
#: grids (windows) add the whole bias. Measured on CPU (``tools/bench_attention.py``), ViT-B
#: 64x64 global grid: fp32 chunked 0.77 s vs folded 0.91 s, bf16 folded 0.21 s vs chunked 0.40 s;
#: 14x14 windows: the bias is faster than folding in fp32 and as fast in bf16.
FOLD_MIN_TOKENS = 1024


class Attention(nn.Module):
    """Multi-head self-attention over a (B, H, W, C) token grid, optional rel-pos bias."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        input_size: Optional[Tuple[int, int]] = None,
    ) -> None:
        """
        Args:
            dim: channels.
            num_heads: attention heads (``dim`` must be divisible by it).
            qkv_bias: add a learnable bias to q, k, v.
            use_rel_pos: add decomposed relative position bias.
            input_size: (H, W) of the grid this block attends over; sizes the rel-pos tables.
        """
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Attention: dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.use_rel_pos = use_rel_pos
        if use_rel_pos:
            if input_size is None:
                raise ValueError("Attention: input_size is required when use_rel_pos=True")
            head_dim = dim // num_heads
            self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
            self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, HW, head_dim)
        if not self.use_rel_pos:
            out = F.scaled_dot_product_attention(q, k, v)
        elif h * w < FOLD_MIN_TOKENS:
            bias = relative_position_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        elif q.dtype == torch.float32 and not torch.is_grad_enabled():
            out = chunked_bias_attention(q, k, v, self.rel_pos_h, self.rel_pos_w, (h, w))
        else:
            out = folded_rel_pos_attention(q, k, v, self.rel_pos_h, self.rel_pos_w, (h, w))
        return self.proj(out.transpose(1, 2).reshape(b, h, w, c))


class Mlp(nn.Module):
    """Two-layer MLP with GELU; names ``fc1``/``fc2`` as in Detectron2/timm.

    Official SAM checkpoints name the same layers ``lin1``/``lin2``; they load as they are
    (renamed in :meth:`_load_from_state_dict`), through any loading path.
    """

    _OFFICIAL_SAM_NAMES = {"lin1.": "fc1.", "lin2.": "fc2."}

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        for old, new in self._OFFICIAL_SAM_NAMES.items():
            for key in [k for k in state_dict if k.startswith(prefix + old)]:
                state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def window_partition(x: Tensor, window: int) -> Tuple[Tensor, Tuple[int, int]]:
    """Cut a (B, H, W, C) grid into (B * nW, window, window, C) windows, zero-padding H and W.

    Returns:
        windows, and the padded (Hp, Wp).
    """
    b, h, w, c = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(b, hp // window, window, wp // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c), (hp, wp)


def window_unpartition(
    windows: Tensor, window: int, padded_hw: Tuple[int, int], hw: Tuple[int, int]
) -> Tensor:
    """Inverse of :func:`window_partition`: (B * nW, win, win, C) -> (B, H, W, C)."""
    hp, wp = padded_hw
    nh, nw = hp // window, wp // window
    b = windows.shape[0] // (nh * nw)
    x = windows.view(b, nh, nw, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, hp, wp, -1)
    return x[:, : hw[0], : hw[1]]


class Block(nn.Module):
    """Pre-norm transformer block with windowed (``window_size > 0``) or global attention."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        use_rel_pos: bool = True,
        window_size: int = 0,
        input_size: Optional[Tuple[int, int]] = None,
    ) -> None:
        """
        Args:
            window_size: side of attention windows; 0 means global attention.
            input_size: token grid (H, W) of the image; rel-pos tables of global blocks cover it,
                those of windowed blocks cover one window.
        """
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        attn_size = (window_size, window_size) if window_size > 0 else input_size
        self.attn = Attention(dim, num_heads, qkv_bias, use_rel_pos, attn_size)
        self.drop_path = drop_path
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.window_size = window_size

    def _drop_path(self, x: Tensor) -> Tensor:
        """Stochastic depth per sample (training only)."""
        if not self.training or self.drop_path == 0.0:
            return x
        keep = 1.0 - self.drop_path
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        y = self.norm1(x)
        if self.window_size > 0:
            hw = (x.shape[1], x.shape[2])
            y, padded = window_partition(y, self.window_size)
            y = window_unpartition(self.attn(y), self.window_size, padded, hw)
        else:
            y = self.attn(y)
        x = x + self._drop_path(y)
        return x + self._drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: (B, 3, H, W) -> (B, H/p, W/p, C), contiguous.

    Contiguous because every later op reads tokens along C: left as the convolution's permuted
    view, each LayerNorm copied it and each residual add ran strided (~1 s of a 10 s fp32 ViT-B
    encoder on CPU).
    """

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1).contiguous()


class ViT(Backbone):
    """Plain ViT with window + global attention (ViTDet / SAM image encoder trunk).

    Output: ``{"last_feat": (B, embed_dim, H/patch, W/patch)}``.
    """

    #: Recompute each block in backward instead of storing its activations (training only).
    activation_checkpointing: bool = False

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
        qkv_bias: bool = True,
        use_rel_pos: bool = True,
        use_abs_pos: bool = True,
        pos_embed_size: Optional[int] = None,
        pretrain_use_cls_token: bool = False,
        drop_path_rate: float = 0.0,
        in_chans: int = 3,
        out_feature: str = "last_feat",
    ) -> None:
        """
        Args (keyword-only):
            embed_dim, depth, num_heads: width, number of blocks, attention heads.
            global_attn_indexes: blocks with global attention; the others use windows.
            window_size: window side of the windowed blocks.
            img_size: input side the model is built for (sizes the global rel-pos tables).
            patch_size, mlp_ratio, qkv_bias: patch side, MLP expansion, q/k/v bias.
            use_rel_pos: decomposed relative position bias in every block.
            use_abs_pos: learned absolute position embedding, stored on a
                (pos_embed_size x pos_embed_size) grid and resized (bicubic) to the input grid.
            pos_embed_size: grid side of the stored position embedding; defaults to
                ``img_size // patch_size`` (SAM); ViTDet checkpoints store 14 (224 pretraining).
            pretrain_use_cls_token: store the position embedding as ViTDet / MAE checkpoints do,
                (1, 1 + s*s, C) with an (unused) class-token slot first; otherwise as SAM does,
                (1, s, s, C). Either way checkpoints load without conversion.
            drop_path_rate: stochastic depth, increasing linearly with depth up to this rate.
            in_chans: input channels.
            out_feature: name of the output feature.
        """
        super().__init__()
        bad = [i for i in global_attn_indexes if not 0 <= i < depth]
        if bad:
            raise ValueError(f"ViT: global_attn_indexes {bad} out of range for depth={depth}")
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim)
        self.pos_embed: Optional[nn.Parameter] = None
        if use_abs_pos:
            size = pos_embed_size or grid
            shape = (1, 1 + size * size) if pretrain_use_cls_token else (1, size, size)
            self.pos_embed = nn.Parameter(torch.zeros(*shape, embed_dim))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(
                embed_dim,
                num_heads,
                mlp_ratio,
                qkv_bias,
                rates[i],
                use_rel_pos,
                0 if i in global_attn_indexes else window_size,
                (grid, grid),
            )
            for i in range(depth)
        )
        self._out_features = [out_feature]
        self._out_feature_channels = {out_feature: embed_dim}
        self._out_feature_strides = {out_feature: patch_size}
        self._init_weights()

    def _init_weights(self) -> None:
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def abs_pos(self, hw: Tuple[int, int]) -> Tensor:
        """Absolute position embedding resized to a (H, W) token grid: (1, H, W, C)."""
        pos = self.pos_embed
        if pos.dim() == 3:  # ViTDet layout: drop the class-token slot, then to a square grid
            side = math.isqrt(pos.shape[1] - 1)
            pos = pos[:, 1:].reshape(1, side, side, pos.shape[2])
        if pos.shape[1:3] != hw:
            pos = F.interpolate(
                pos.permute(0, 3, 1, 2), size=hw, mode="bicubic", align_corners=False
            ).permute(0, 2, 3, 1)
        return pos

    def tokens(self, x: Tensor) -> Tensor:
        """Run the trunk: (B, 3, H, W) images -> (B, H/p, W/p, C) tokens.

        With ``activation_checkpointing`` set, training keeps only each block's input and
        recomputes the block in backward (less memory, ~1/3 more compute).
        """
        x = self.patch_embed(x)
        if self.pos_embed is not None:
            x = x + self.abs_pos((x.shape[1], x.shape[2]))
        for blk in self.blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """(B, 3, H, W) -> {out_feature: (B, C, H/p, W/p)}."""
        return {self._out_features[0]: self.tokens(x).permute(0, 3, 1, 2)}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        name = self._out_features[0]
        return {
            name: ShapeSpec(
                channels=self._out_feature_channels[name], stride=self._out_feature_strides[name]
            )
        }


def lr_decay_rate(name: str, decay: float, num_layers: int) -> float:
    """Layer-wise lr decay factor for a ViT parameter name (ViTDet/MAE recipe).

    Patch/position embeddings count as layer 0, block i as layer i + 1, everything after the
    trunk (neck, heads) as layer ``num_layers + 1``.
    """
    layer = num_layers + 1
    if ".pos_embed" in name or ".patch_embed" in name or name.startswith(("pos_embed", "patch_")):
        layer = 0
    elif ".blocks." in name or name.startswith("blocks."):
        after = name.split("blocks.", 1)[1]
        layer = int(after.split(".", 1)[0]) + 1
    return decay ** (num_layers + 1 - layer)
