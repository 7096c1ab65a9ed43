"""SAM's prompt encoder: points, boxes and dense masks -> sparse and dense prompt embeddings."""

import math
from typing import Optional, Tuple

import torch
from detectron2.layers.batch_norm import LayerNorm
from torch import Tensor, nn

__all__ = ["PromptEncoder", "RandomFourierPositions"]

# Point labels understood by the encoder.
LABEL_PAD, LABEL_BACKGROUND, LABEL_FOREGROUND = -1, 0, 1


class RandomFourierPositions(nn.Module):
    """Positional encoding of normalised (x, y) by random spatial frequencies (Tancik et al.).

    The frequency matrix is a (2, C/2) buffer named ``positional_encoding_gaussian_matrix``.
    """

    def __init__(self, num_pos_feats: int = 128, scale: float = 1.0) -> None:
        super().__init__()
        self.register_buffer(
            "positional_encoding_gaussian_matrix", scale * torch.randn(2, num_pos_feats)
        )

    def encode(self, xy: Tensor) -> Tensor:
        """(..., 2) coordinates in [0, 1] -> (..., C) features [sin, cos]."""
        phase = (2.0 * xy - 1.0) @ self.positional_encoding_gaussian_matrix.to(xy.dtype)
        phase = 2.0 * math.pi * phase
        return torch.cat([phase.sin(), phase.cos()], dim=-1)

    def grid(self, hw: Tuple[int, int]) -> Tensor:
        """Encoding of every cell centre of an (H, W) grid: (C, H, W)."""
        h, w = hw
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        xy = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2)
        return self.encode(xy).permute(2, 0, 1)

    def pixels(self, coords: Tensor, image_hw: Tuple[int, int]) -> Tensor:
        """(..., 2) pixel (x, y) coordinates in an image of size ``image_hw`` -> (..., C)."""
        size = coords.new_tensor([image_hw[1], image_hw[0]], dtype=torch.float32)
        return self.encode(coords.float() / size)


class PromptEncoder(nn.Module):
    """Embeds SAM prompts.

    Sparse prompts (points and box corners) become tokens of width ``embed_dim``; a dense mask
    prompt (or the learned "no mask" embedding) becomes a (embed_dim, h, w) map aligned with the
    image embedding.
    """

    def __init__(
        self,
        embed_dim: int = 256,
        image_embedding_size: Tuple[int, int] = (64, 64),
        input_image_size: Tuple[int, int] = (1024, 1024),
        mask_in_chans: int = 16,
    ) -> None:
        """
        Args:
            embed_dim: prompt embedding width.
            image_embedding_size: (h, w) of the image embedding.
            input_image_size: (H, W) of the padded encoder input; coordinates live in this frame.
            mask_in_chans: hidden channels of the mask downscaler.
        """
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = RandomFourierPositions(embed_dim // 2)
        # 0: background point, 1: foreground point, 2: box top-left, 3: box bottom-right.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        hidden = mask_in_chans // 4
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, hidden, kernel_size=2, stride=2),
            LayerNorm(hidden),
            nn.GELU(),
            nn.Conv2d(hidden, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> Tensor:
        """Positional encoding of the image embedding grid: (1, embed_dim, h, w)."""
        return self.pe_layer.grid(self.image_embedding_size)[None]

    def _embed_points(self, coords: Tensor, labels: Tensor, pad: bool) -> Tensor:
        """(N, P, 2) pixel coords and (N, P) labels -> (N, P(+1), C) tokens."""
        if pad:  # a padding point keeps the token count fixed when no box follows
            coords = torch.cat([coords, coords.new_zeros(coords.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, labels.new_full((labels.shape[0], 1), LABEL_PAD)], dim=1)
        emb = self.pe_layer.pixels(coords + 0.5, self.input_image_size)
        learned = torch.stack(
            [
                self.point_embeddings[0].weight[0],
                self.point_embeddings[1].weight[0],
                self.not_a_point_embed.weight[0],
            ]
        )  # (3, C): background, foreground, padding
        kind = torch.where(labels == LABEL_PAD, 2, labels.clamp(0, 1)).long()
        emb = torch.where((labels == LABEL_PAD)[..., None], torch.zeros_like(emb), emb)
        return emb + learned[kind]

    def _embed_boxes(self, boxes: Tensor) -> Tensor:
        """(N, 4) XYXY pixel boxes -> (N, 2, C) corner tokens."""
        corners = self.pe_layer.pixels(boxes.reshape(-1, 2, 2) + 0.5, self.input_image_size)
        corner_kind = torch.stack(
            [self.point_embeddings[2].weight[0], self.point_embeddings[3].weight[0]]
        )
        return corners + corner_kind

    def forward(
        self,
        points: Optional[Tuple[Tensor, Tensor]],
        boxes: Optional[Tensor],
        masks: Optional[Tensor],
    ) -> Tuple[Tensor, Tensor]:
        """Embed one set of N prompts (all prompts of the set share the same kinds).

        Args:
            points: (coords (N, P, 2) XY pixels in the input frame, labels (N, P) in {-1, 0, 1}).
            boxes: (N, 4) XYXY pixels in the input frame.
            masks: (N, 1, 4h, 4w) mask logits (e.g. a previous low-res prediction).

        Returns:
            sparse (N, T, C) tokens and dense (N, C, h, w) embeddings.
        """
        n = _prompt_count(points, boxes, masks)
        device = self.no_mask_embed.weight.device
        tokens = [torch.empty(n, 0, self.embed_dim, device=device)]
        if points is not None:
            tokens.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            tokens.append(self._embed_boxes(boxes))
        sparse = torch.cat(tokens, dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(n, -1, h, w)
        return sparse, dense


def _prompt_count(
    points: Optional[Tuple[Tensor, Tensor]], boxes: Optional[Tensor], masks: Optional[Tensor]
) -> int:
    if points is not None:
        return points[0].shape[0]
    if boxes is not None:
        return boxes.shape[0]
    if masks is not None:
        return masks.shape[0]
    return 1
