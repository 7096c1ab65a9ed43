"""The SAM model as a pure module: encode images once, decode any number of prompts.

No config and no per-image state: :class:`sam_d2.SamPredictor` and the meta-architectures wrap it.
Coordinates given to :meth:`Sam.decode` are pixels of the resized image, the "input frame". How an
image is resized into it is the model's :attr:`Sam.frame` (:mod:`sam_d2.data.transforms`): "pad"
(SAM: longest side = ``img_size``, zero-padded to the square) or "stretch" (SAM 2: resized to the
``img_size`` square); :meth:`Sam.input_size` and :meth:`Sam.postprocess_masks` follow it.
"""

from typing import Any, Dict, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.transforms import frame_input_size
from .families import FAMILY_VARIANTS
from .image_encoder import ENCODER_PRESETS, SamImageEncoder
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam2 import Sam2ImageEncoder, adopt_official_keys
from .transformer import TwoWayTransformer

__all__ = ["Sam", "build_sam_modules", "PIXEL_MEAN", "PIXEL_STD"]

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    """Image encoder + prompt encoder + mask decoder.

    Attributes ``image_encoder``, ``prompt_encoder`` and ``mask_decoder`` match the official
    checkpoints' key prefixes.
    """

    mask_threshold: float = 0.0

    def __init__(
        self,
        image_encoder: SamImageEncoder,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: Sequence[float] = PIXEL_MEAN,
        pixel_std: Sequence[float] = PIXEL_STD,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        """Side of the square encoder input."""
        return self.image_encoder.img_size

    @property
    def frame(self) -> str:
        """How images enter the encoder: "pad" (SAM) or "stretch" (SAM 2); the encoder's own."""
        return getattr(self.image_encoder, "frame", "pad")

    def input_size(self, original_size: Sequence[int]) -> Tuple[int, int]:
        """(h, w) of an image of ``original_size`` (H, W) in the input frame, before padding."""
        return frame_input_size(
            self.frame, int(original_size[0]), int(original_size[1]), self.img_size
        )

    def preprocess(self, images: Sequence[Tensor]) -> Tensor:
        """Normalise RGB images and zero-pad them (bottom/right) to the encoder's square input.

        Args:
            images: B tensors (3, h, w), RGB in [0, 255] (uint8 or float), sides at most
                ``img_size`` (in the "stretch" frame they are ``img_size`` already; padding is
                then a no-op except for training crops).

        Returns:
            (B, 3, img_size, img_size) float tensor on the model's device.
        """
        s = self.img_size
        batch = torch.zeros(len(images), 3, s, s, device=self.device)
        for i, img in enumerate(images):
            if img.dim() != 3 or img.shape[0] != 3:
                raise ValueError(f"image {i}: expected shape (3, H, W), got {tuple(img.shape)}")
            h, w = img.shape[-2:]
            if max(h, w) > s:
                raise ValueError(
                    f"image {i}: size {h}x{w} exceeds the encoder input {s}; resize it into the "
                    f"{self.frame} frame first (sam_d2.data.transforms.frame_transform)"
                )
            img = img.to(self.device, torch.float32)
            batch[i, :, :h, :w] = (img - self.pixel_mean) / self.pixel_std
        return batch

    def encode(self, batch: Tensor) -> Tensor:
        """(B, 3, S, S) preprocessed images -> (B, C, S/16, S/16) image embeddings."""
        return self.image_encoder(batch)["image_embed"]

    def decode(
        self,
        image_embeddings: Tensor,
        point_coords: Optional[Tensor] = None,
        point_labels: Optional[Tensor] = None,
        boxes: Optional[Tensor] = None,
        mask_inputs: Optional[Tensor] = None,
        multimask_output: bool = True,
        image_index: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """Decode N prompts against B image embeddings (one batched call, no loop over prompts).

        Args:
            image_embeddings: (B, C, h, w).
            point_coords: (N, P, 2) XY pixels in the input frame; needs ``point_labels``.
            point_labels: (N, P) 1 foreground, 0 background, -1 padding (ignored).
            boxes: (N, 4) XYXY pixels in the input frame.
            mask_inputs: (N, 1, 4h, 4w) mask logits, e.g. a previous low-res prediction.
            multimask_output: return 3 masks per prompt instead of 1.
            image_index: (N,) image of each prompt (optional when B == 1).

        Returns:
            low-res mask logits (N, K, 4h, 4w) and predicted IoUs (N, K), K = 3 or 1.
        """
        points = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_coords were given without point_labels")
            points = (point_coords, point_labels)
        sparse, dense = self.prompt_encoder(points, boxes, mask_inputs)
        return self.mask_decoder(
            image_embeddings,
            self.prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask_output,
            image_index,
        )

    def decode_selected(
        self,
        image_embeddings: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        min_iou: float,
        multimask_output: bool = True,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """:meth:`decode` of point prompts on one image, keeping the outputs whose predicted IoU
        exceeds ``min_iou`` (:meth:`MaskDecoder.forward_selected`: no upscaling for the others).

        Args:
            image_embeddings: (1, C, h, w).
            point_coords, point_labels, multimask_output: as :meth:`decode`.
            min_iou: keep outputs with predicted IoU > min_iou.

        Returns:
            low-res logits (M, 4h, 4w), predicted IoUs (M,) and the prompt index of each (M,),
            in (prompt, output) order.
        """
        sparse, dense = self.prompt_encoder((point_coords, point_labels), None, None)
        return self.mask_decoder.forward_selected(
            image_embeddings,
            self.prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask_output,
            min_iou,
        )

    def postprocess_masks(
        self, masks: Tensor, input_size: Tuple[int, int], original_size: Tuple[int, int]
    ) -> Tensor:
        """Low-res logits -> logits at the original image size, per :attr:`frame`.

        "pad": bilinear to the padded ``img_size`` square, cropped to ``input_size``, bilinear to
        ``original_size`` (SAM). "stretch": one bilinear resize to ``original_size`` (SAM 2).

        Args:
            masks: (N, K, h, w) logits on the encoder frame.
            input_size: (h, w) of the resized image before padding (:meth:`input_size`).
            original_size: (H, W) of the original image.

        Returns:
            (N, K, H, W) logits.
        """
        s = self.img_size
        if self.frame == "stretch":
            if tuple(input_size) != (s, s):
                raise ValueError(
                    f"input_size {tuple(input_size)}: this model stretches images to {s}x{s} "
                    "(SAM 2's frame); resize with sam_d2.data.transforms.StretchToSquare"
                )
        else:
            masks = F.interpolate(masks, (s, s), mode="bilinear", align_corners=False)
            masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)

    def adopt_official_keys(self, state_dict: Dict[str, Any], prefix: str = "") -> None:
        """Rename, in place, an official file's keys that differ from this model's (SAM 2's
        ``sam2.1_hiera_*.pt``, :func:`~sam_d2.modeling.sam2.adopt_official_keys`); SAM's own
        files need no renaming here. Called by every load of this model, and by composed
        meta-architectures before placing a file under the part's name
        (:mod:`sam_d2.modeling.weights`)."""
        if isinstance(self.image_encoder, Sam2ImageEncoder):
            adopt_official_keys(state_dict, prefix)

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str, *args: Any) -> None:
        """``nn.Module``'s, after :meth:`adopt_official_keys` (before any load pre-hook runs)."""
        self.adopt_official_keys(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args)

    def decode_in_chunks(
        self,
        image_embeddings: Tensor,
        chunk_size: int,
        point_coords: Optional[Tensor] = None,
        point_labels: Optional[Tensor] = None,
        boxes: Optional[Tensor] = None,
        mask_inputs: Optional[Tensor] = None,
        multimask_output: bool = True,
    ) -> Tuple[Tensor, Tensor]:
        """:meth:`decode` of N prompts of one image, ``chunk_size`` prompts at a time.

        Args:
            image_embeddings: (1, C, h, w).
            chunk_size: prompts per decoder call (bounds memory: each holds a copy of the
                embedding).
            point_coords, point_labels, boxes, mask_inputs, multimask_output: as :meth:`decode`;
                the given ones share their first dimension N (N may be 0).

        Returns:
            low-res logits (N, K, 4h, 4w) and predicted IoUs (N, K).
        """
        prompts = (point_coords, point_labels, boxes, mask_inputs)
        n = next((p.shape[0] for p in prompts if p is not None), 0)
        if n == 0:
            k = self.mask_decoder.num_outputs(multimask_output)
            h, w = self.prompt_encoder.mask_input_size
            return image_embeddings.new_zeros(0, k, h, w), image_embeddings.new_zeros(0, k)
        step = max(1, int(chunk_size))
        outs = [
            self.decode(
                image_embeddings,
                *(None if p is None else p[s : s + step] for p in prompts),
                multimask_output=multimask_output,
            )
            for s in range(0, n, step)
        ]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    def logits_to_masks(
        self,
        low_res: Tensor,
        input_size: Tuple[int, int],
        original_size: Tuple[int, int],
        chunk_size: int,
    ) -> Tensor:
        """Binary masks at the original size from low-res logits, ``chunk_size`` prompts at a time.

        Args:
            low_res: (N, K, h, w) logits on the encoder frame.
            input_size: (h, w) of the resized image before padding (:meth:`input_size`).
            original_size: (H, W) of the original image.
            chunk_size: prompts upsampled at once (bounds memory).

        Returns:
            (N, K, H, W) bool, logits above ``mask_threshold``.
        """
        out = torch.empty(
            low_res.shape[:2] + tuple(original_size), dtype=torch.bool, device=low_res.device
        )
        step = max(1, int(chunk_size))
        for s in range(0, low_res.shape[0], step):
            logits = self.postprocess_masks(low_res[s : s + step], input_size, original_size)
            out[s : s + step] = logits > self.mask_threshold
        return out


def build_sam_modules(
    variant: str = "vit_b",
    img_size: int = 1024,
    prompt_embed_dim: int = 256,
    mask_in_chans: int = 16,
    decoder_depth: int = 2,
    decoder_mlp_dim: int = 2048,
    decoder_num_heads: int = 8,
    num_multimask_outputs: int = 3,
    iou_head_depth: int = 3,
    iou_head_hidden_dim: int = 256,
    drop_path_rate: float = 0.0,
    **encoder_kwargs: object,
) -> Tuple[SamImageEncoder, PromptEncoder, MaskDecoder]:
    """Build SAM's three modules from plain arguments.

    Args:
        variant: "vit_b", "vit_l", "vit_h" (official presets), a family variant of
            :data:`sam_d2.modeling.families.FAMILY_VARIANTS` (e.g. "vit_t", MobileSAM;
            "sam2.1_hiera_t", SAM 2.1), or "custom"
            (``encoder_kwargs`` give embed_dim, depth, num_heads, global_attn_indexes,
            window_size, patch_size, mlp_ratio).
        encoder_kwargs: overrides of the preset's encoder arguments.
    """
    family = FAMILY_VARIANTS.get(variant)  # MobileSAM, HQ-SAM, ...: sam_d2/modeling/families.py
    if variant == "custom" or family is not None:
        enc = dict(encoder_kwargs)
    elif variant in ENCODER_PRESETS:
        enc = {**ENCODER_PRESETS[variant], **encoder_kwargs}
    else:
        raise ValueError(
            f"unknown SAM variant {variant!r}; expected one of "
            f"{sorted(ENCODER_PRESETS) + sorted(FAMILY_VARIANTS)} or 'custom'"
        )
    decoder_options = {k: enc.pop(k) for k in family.decoder_options if k in enc} if family else {}
    patch = int(enc.get("patch_size", 16))
    grid = img_size // patch
    image_encoder = (family.build_encoder if family is not None else SamImageEncoder)(
        img_size=img_size, out_chans=prompt_embed_dim, drop_path_rate=drop_path_rate, **enc
    )
    prompt_encoder = (family.prompt_encoder_cls if family is not None else PromptEncoder)(
        embed_dim=prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(img_size, img_size),
        mask_in_chans=mask_in_chans,
    )
    mask_decoder = (family.decoder_cls if family is not None else MaskDecoder)(
        transformer_dim=prompt_embed_dim,
        transformer=TwoWayTransformer(
            depth=decoder_depth,
            embedding_dim=prompt_embed_dim,
            num_heads=decoder_num_heads,
            mlp_dim=decoder_mlp_dim,
        ),
        num_multimask_outputs=num_multimask_outputs,
        iou_head_depth=iou_head_depth,
        iou_head_hidden_dim=iou_head_hidden_dim,
        **(family.decoder_kwargs(image_encoder) if family is not None else {}),
        **decoder_options,
    )
    return image_encoder, prompt_encoder, mask_decoder
