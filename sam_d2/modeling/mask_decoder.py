"""SAM's mask decoder: two-way transformer over prompt + output tokens, then hypernetwork masks."""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers.batch_norm import LayerNorm
from torch import Tensor, nn

from .transformer import TwoWayTransformer

__all__ = ["MaskDecoder", "MLP"]


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (names ``layers.i``)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskDecoder(nn.Module):
    """Predicts masks and their IoU from an image embedding and prompt embeddings.

    Output token 0 is the single-mask output (used for unambiguous prompts); tokens 1..K are the
    multimask outputs.
    """

    def __init__(
        self,
        transformer_dim: int = 256,
        transformer: Optional[TwoWayTransformer] = None,
        num_multimask_outputs: int = 3,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer if transformer is not None else TwoWayTransformer()
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm(transformer_dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3)
            for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth
        )

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
            image_embeddings: (B, C, h, w) embeddings of B images.
            image_pe: (1, C, h, w) positional encoding of the embedding grid.
            sparse_prompt_embeddings: (N, T, C) prompt tokens of N prompts.
            dense_prompt_embeddings: (N, C, h, w).
            multimask_output: return the K multimask outputs instead of the single one.
            image_index: (N,) image of each prompt; may be omitted when B == 1.

        Returns:
            mask logits (N, K or 1, 4h, 4w) and predicted IoUs (N, K or 1).
        """
        masks, iou_pred = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            image_index,
        )
        keep = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, keep], iou_pred[:, keep]

    def predict_masks(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        image_index: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """All mask tokens' outputs: logits (N, 1 + K, 4h, 4w) and IoUs (N, 1 + K)."""
        n = sparse_prompt_embeddings.shape[0]
        if image_index is None:
            if image_embeddings.shape[0] != 1:
                raise ValueError(
                    f"MaskDecoder: {image_embeddings.shape[0]} image embeddings given without "
                    "image_index; pass which image each prompt belongs to"
                )
            image_index = torch.zeros(n, dtype=torch.long, device=image_embeddings.device)
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens[None].expand(n, -1, -1).to(sparse_prompt_embeddings.dtype)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)

        src = image_embeddings[image_index] + dense_prompt_embeddings
        pos_src = image_pe.expand(n, -1, -1, -1)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0]
        mask_tokens_out = hs[:, 1 : 1 + self.num_mask_tokens]

        upscaled = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            dim=1,
        )  # (N, 1 + K, C/8)
        bu, cu, hu, wu = upscaled.shape
        masks = (hyper_in @ upscaled.reshape(bu, cu, hu * wu)).reshape(bu, -1, hu, wu)
        return masks, self.iou_prediction_head(iou_token_out)
