"""HQ-SAM (Ke et al., NeurIPS 2023): SAM with an extra "HQ output token" and global-local fusion.

The encoder is SAM's ViT, unchanged; besides the image embedding it hands the decoder the output
of its first global-attention block (the early, detail-rich ViT feature). The decoder is SAM's,
plus

- the HQ token (``hf_token``) with its own hypernetwork MLP (``hf_mlp``), decoded beside SAM's
  four mask tokens by the same two-way transformer;
- HQ features: the image embedding upsampled 4x (``embedding_encoder``) plus the early ViT feature
  upsampled 4x (``compress_vit_feat``); the HQ mask is the HQ token's hypernetwork weights applied
  to these plus a conv refinement of SAM's upscaled mask features (``embedding_maskfeature``).

Output, as the official code: one mask per prompt. SAM's mask (its single-mask output, or with
``multimask_output`` the multimask output of highest predicted IoU) plus the HQ mask, or the HQ
mask alone with ``hq_token_only``; the IoU is SAM's prediction for the chosen SAM mask.

Hand-over between encoder and decoder: the early feature is on the embedding grid, so the encoder
returns one tensor, the image embedding with the early feature appended along channels
((B, 256 + vit_width, 64, 64)), and the decoder splits it. Every caller that slices, casts or
caches image embeddings thus handles HQ-SAM's unchanged. Parameter names follow the official
checkpoints (``sam_hq_vit_{b,l,h}.pth``), which load as they are.
"""

from typing import Dict, Optional, Tuple

import torch
from detectron2.layers.batch_norm import LayerNorm
from torch import Tensor, nn

from .image_encoder import SamImageEncoder
from .mask_decoder import MLP, MaskDecoder

__all__ = ["HQImageEncoder", "HQMaskDecoder"]


class HQImageEncoder(SamImageEncoder):
    """SAM's ViT encoder whose output also carries the first global block's output.

    Output ``{"image_embed": (B, out_chans + embed_dim, S/16, S/16)}``: channels ``[:out_chans]``
    are SAM's image embedding, the rest the early ViT feature (see the module docstring).
    """

    def __init__(self, **kwargs) -> None:
        """Args: those of :class:`SamImageEncoder`."""
        super().__init__(**kwargs)
        self.early_block = min(i for i, b in enumerate(self.blocks) if b.window_size == 0)
        self.embed_dim = self.patch_embed.proj.out_channels
        out = self._out_feature_channels["image_embed"]
        self._out_feature_channels = {"image_embed": out + self.embed_dim}

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """(B, 3, S, S) -> {"image_embed": (B, out_chans + embed_dim, S/16, S/16)}."""
        early = []
        hook = self.blocks[self.early_block].register_forward_hook(
            lambda module, inputs, output: early.append(output)
        )
        try:
            tokens = self.tokens(x)
        finally:
            hook.remove()
        embed = self.neck(tokens.permute(0, 3, 1, 2))
        return {"image_embed": torch.cat([embed, early[0].permute(0, 3, 1, 2)], dim=1)}


def _upsample4(cin: int, mid: int, cout: int) -> nn.Sequential:
    """Two stride-2 transposed convs (4x), LayerNorm and GELU between them."""
    return nn.Sequential(
        nn.ConvTranspose2d(cin, mid, kernel_size=2, stride=2),
        LayerNorm(mid),
        nn.GELU(),
        nn.ConvTranspose2d(mid, cout, kernel_size=2, stride=2),
    )


class HQMaskDecoder(MaskDecoder):
    """SAM's mask decoder plus HQ-SAM's HQ token and global-local fusion (module docstring).

    Expects image embeddings from :class:`HQImageEncoder` (early ViT feature appended).
    """

    def __init__(self, *, vit_dim: int, hq_token_only: bool = False, **kwargs) -> None:
        """
        Args:
            vit_dim: width of the encoder's ViT (the early feature's channels).
            hq_token_only: return the HQ mask alone instead of SAM's mask plus the HQ mask.
            kwargs: arguments of :class:`MaskDecoder`.
        """
        super().__init__(**kwargs)
        c = self.transformer_dim
        self.vit_dim = vit_dim
        self.hq_token_only = hq_token_only
        self.hf_token = nn.Embedding(1, c)
        self.hf_mlp = MLP(c, c, c // 8, 3)
        self.compress_vit_feat = _upsample4(vit_dim, c, c // 8)
        self.embedding_encoder = _upsample4(c, c // 4, c // 8)
        self.embedding_maskfeature = nn.Sequential(
            nn.Conv2d(c // 8, c // 4, 3, 1, 1),
            LayerNorm(c // 4),
            nn.GELU(),
            nn.Conv2d(c // 4, c // 8, 3, 1, 1),
        )

    def num_outputs(self, multimask_output: bool) -> int:
        """One mask per prompt, as the official HQ-SAM returns (SAM's mask + the HQ mask)."""
        return 1

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        multimask_output: bool,
        image_index: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """
        Args:
            image_embeddings: (B, C + vit_dim, h, w) from :class:`HQImageEncoder`.
            image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, image_index: as
                :meth:`MaskDecoder.forward`.
            multimask_output: SAM's part is its best multimask output (else its single output).

        Returns:
            mask logits (N, 1, 4h, 4w) and predicted IoUs (N, 1).
        """
        c = self.transformer_dim
        if image_embeddings.shape[1] != c + self.vit_dim:
            raise ValueError(
                f"HQMaskDecoder: image embeddings of {image_embeddings.shape[1]} channels, "
                f"expected {c} + {self.vit_dim} (SAM embedding + early ViT feature, as "
                "HQImageEncoder returns them)"
            )
        n = sparse_prompt_embeddings.shape[0]
        if image_index is None:
            if image_embeddings.shape[0] != 1:
                raise ValueError(
                    f"HQMaskDecoder: {image_embeddings.shape[0]} image embeddings given without "
                    "image_index; pass which image each prompt belongs to"
                )
            image_index = torch.zeros(n, dtype=torch.long, device=image_embeddings.device)
        embed, early = image_embeddings[:, :c], image_embeddings[:, c:]
        hq_features = self.embedding_encoder(embed) + self.compress_vit_feat(early)

        output_tokens = torch.cat(
            [self.iou_token.weight, self.mask_tokens.weight, self.hf_token.weight], dim=0
        )
        output_tokens = output_tokens[None].expand(n, -1, -1).to(sparse_prompt_embeddings.dtype)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)
        src = embed[image_index] + dense_prompt_embeddings
        b, _, h, w = src.shape
        hs, src = self.transformer(src, image_pe.expand(n, -1, -1, -1), tokens)
        k = self.num_mask_tokens  # SAM's mask tokens; the HQ token follows them
        sam_weights = torch.stack(
            [mlp(hs[:, 1 + i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # (N, k, C/8)
        hq_weights = self.hf_mlp(hs[:, 1 + k])[:, None]  # (N, 1, C/8)
        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        upscaled_hq = self.embedding_maskfeature(upscaled) + hq_features[image_index]
        hu, wu = upscaled.shape[-2:]
        masks_sam = (sam_weights @ upscaled.flatten(2)).view(b, k, hu, wu)
        mask_hq = (hq_weights @ upscaled_hq.flatten(2)).view(b, 1, hu, wu)
        iou = self.iou_prediction_head(hs[:, 0])  # (N, k)

        if multimask_output:
            iou, best = iou[:, 1:].max(dim=1, keepdim=True)
            mask_sam = masks_sam[:, 1:].gather(1, best[..., None, None].expand(-1, -1, hu, wu))
        else:
            iou, mask_sam = iou[:, :1], masks_sam[:, :1]
        return (mask_hq if self.hq_token_only else mask_sam + mask_hq), iou

    def extra_repr(self) -> str:
        return f"vit_dim={self.vit_dim}, hq_token_only={self.hq_token_only}"
