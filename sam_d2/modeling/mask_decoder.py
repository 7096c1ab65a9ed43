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

    def num_outputs(self, multimask_output: bool) -> int:
        """Masks returned per prompt: the multimask outputs, or the single-mask output."""
        return self.num_mask_tokens - 1 if multimask_output else 1

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

    def forward_selected(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        multimask_output: bool,
        min_iou: float,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """:meth:`forward` of one image, keeping only the outputs whose predicted IoU exceeds
        ``min_iou``; SAM's decoder upscales only the prompts with a kept output (subclasses with
        their own :meth:`forward` upscale all, then select).

        The kept masks and IoUs are those :meth:`forward` returns (same math, fewer prompts);
        an automatic generator's IoU filter costs no upscaling this way.

        Args:
            image_embeddings: (1, C, h, w).
            image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, multimask_output: as
                :meth:`forward`.
            min_iou: keep outputs with predicted IoU > min_iou.

        Returns:
            mask logits (M, 4h, 4w), predicted IoUs (M,) and the prompt of each (M,), in
            (prompt, output) order.
        """
        if image_embeddings.shape[0] != 1:
            raise ValueError(
                f"MaskDecoder.forward_selected: one image embedding expected, got "
                f"{image_embeddings.shape[0]}"
            )
        if type(self).forward is not MaskDecoder.forward:
            # a family's decoder (HQ-SAM, SAM 2) with its own forward: upscale all, then select
            masks, iou = self(
                image_embeddings,
                image_pe,
                sparse_prompt_embeddings,
                dense_prompt_embeddings,
                multimask_output,
            )
            keep = iou.float() > min_iou  # in fp32, as a float threshold is meant
            prompts = torch.arange(len(iou), device=iou.device)[:, None].expand_as(keep)
            return masks[keep], iou[keep], prompts[keep]
        hs, src, hw = self._transform(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        outputs = slice(1, None) if multimask_output else slice(0, 1)
        iou = self.iou_prediction_head(hs[:, 0])[:, outputs]
        keep = iou.float() > min_iou  # (N, K), in fp32 as a float threshold is meant
        prompts = keep.any(dim=1).nonzero()[:, 0]
        if len(prompts) == 0:
            return src.new_zeros(0, 4 * hw[0], 4 * hw[1]), iou[:0, 0], prompts
        masks = self._upscaled_masks(src[prompts], self._hypernetwork_weights(hs[prompts]), hw)
        keep = keep[prompts]
        return masks[:, outputs][keep], iou[prompts][keep], prompts[:, None].expand_as(keep)[keep]

    def predict_masks(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        image_index: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """All mask tokens' outputs: logits (N, 1 + K, 4h, 4w) and IoUs (N, 1 + K).

        ``dense_prompt_embeddings`` may be (1, C, h, w) or broadcast along N (stride 0, as the
        prompt encoder returns it without mask prompts): then, with a single image, the image
        tokens are not copied per prompt and the first transformer layer reads them once.
        """
        b = image_embeddings.shape[0]
        if image_index is None and b != 1:
            raise ValueError(
                f"MaskDecoder: {b} image embeddings given without image_index; pass which "
                "image each prompt belongs to"
            )
        dense = dense_prompt_embeddings
        if b != 1 and (dense.shape[0] == 1 or dense.stride(0) == 0):
            return self._predict_per_image(
                image_embeddings, image_pe, sparse_prompt_embeddings, dense[:1], image_index
            )
        hs, src, hw = self._transform(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense, image_index
        )
        masks = self._upscaled_masks(src, self._hypernetwork_weights(hs), hw)
        return masks, self.iou_prediction_head(hs[:, 0])

    def _transform(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        image_index: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor, Tuple[int, int]]:
        """The two-way transformer over output + prompt tokens and the image tokens.

        With a dense prompt shared by all prompts (shape (1, C, h, w) or stride 0 along N) the
        image embeddings must be one image (B == 1); they are then read once, not per prompt.

        Returns:
            output/prompt tokens (N, 1 + M + T, C), image tokens (N, h*w, C) and (h, w).
        """
        n = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens[None].expand(n, -1, -1).to(sparse_prompt_embeddings.dtype)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)
        dense = dense_prompt_embeddings
        if dense.shape[0] == 1 or dense.stride(0) == 0:  # the same dense prompt for all
            src = image_embeddings + dense[:1]  # (1, C, h, w), shared by every prompt
        elif image_index is None:
            src = image_embeddings + dense
        else:
            src = image_embeddings[image_index] + dense
        hw = (src.shape[-2], src.shape[-1])
        hs, src = self.transformer(src, image_pe, tokens)
        return hs, src, hw

    def _hypernetwork_weights(self, hs: Tensor) -> Tensor:
        """(N, 1 + M, C/8) mask weights from the transformer's output tokens (N, T', C)."""
        return torch.stack(
            [mlp(hs[:, 1 + i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )

    def _predict_per_image(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embedding: Tensor,
        image_index: Tensor,
    ) -> Tuple[Tensor, Tensor]:
        """:meth:`predict_masks` one image at a time, so each image's prompts share its tokens.

        Args:
            dense_prompt_embedding: (1, C, h, w), the same for every prompt.
        """
        n = sparse_prompt_embeddings.shape[0]
        masks: Optional[Tensor] = None
        iou = masks
        for i in torch.unique(image_index).tolist():
            sel = (image_index == i).nonzero()[:, 0]
            part_masks, part_iou = self.predict_masks(
                image_embeddings[i : i + 1],
                image_pe,
                sparse_prompt_embeddings[sel],
                dense_prompt_embedding,
            )
            if masks is None:
                masks = part_masks.new_empty((n,) + part_masks.shape[1:])
                iou = part_iou.new_empty((n,) + part_iou.shape[1:])
            masks[sel], iou[sel] = part_masks, part_iou
        return masks, iou

    def _upscaled_masks(self, tokens: Tensor, hyper_in: Tensor, hw: Tuple[int, int]) -> Tensor:
        """``output_upscaling`` then the hypernetwork product, computed channels-last.

        Each 2x2 stride-2 transposed convolution is one matmul per token producing its 2x2
        output pixels; the layer norm runs over the last (channel) axis. No (N, C, H, W)
        transposes are made until the (N, 1 + K, 4h, 4w) logits.

        Args:
            tokens: (N, h*w, C) image tokens from the transformer.
            hyper_in: (N, M, C/8) hypernetwork weights of the M mask tokens.
            hw: (h, w).

        Returns:
            (N, M, 4h, 4w) mask logits.
        """
        up1, norm, act1, up2, act2 = self.output_upscaling
        n, (h, w), m = tokens.shape[0], hw, hyper_in.shape[1]
        x = _deconv2x2(tokens, up1)  # (N, h*w, 4, C/4)
        x = act1(F.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps))
        x = act2(_deconv2x2(x, up2))  # (N, h*w, 4, 4, C/8)
        masks = torch.bmm(x.reshape(n, -1, x.shape[-1]), hyper_in.transpose(1, 2))
        # pixel (4i + 2a + c, 4j + 2b + d) sits at [n, i, j, a, b, c, d]
        masks = masks.reshape(n, h, w, 2, 2, 2, 2, m).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return masks.reshape(n, m, 4 * h, 4 * w)


def _deconv2x2(x: Tensor, deconv: nn.ConvTranspose2d) -> Tensor:
    """A 2x2, stride-2 ``ConvTranspose2d`` on channels-last input as one matmul.

    Args:
        x: (..., C_in) values at the input pixels.
        deconv: the layer (weight (C_in, C_out, 2, 2)).

    Returns:
        (..., 4, C_out): the output pixels (2a + b for row offset a, column offset b).
    """
    c_in, c_out = deconv.weight.shape[:2]
    weight = deconv.weight.permute(0, 2, 3, 1).reshape(c_in, 4 * c_out)
    out = F.linear(x, weight.t(), deconv.bias.repeat(4))
    return out.reshape(*x.shape[:-1], 4, c_out)
