"""SAM 2.1's image model (image path only, no video memory) as sam_d2's three SAM modules.

- :class:`Sam2ImageEncoder`: Hiera trunk + FPN neck (:mod:`.hiera`), SAM 2's ``no_mem_embed``
  added to the stride-16 embedding (what SAM 2 does for a single image), and the decoder's two
  1x1 convs applied once per image to the stride-4 and stride-8 FPN levels (SAM 2 precomputes
  them the same way). Hand-over to the decoder: one tensor on the embedding grid, the embedding
  followed by the two high-res maps folded space-to-depth (``pixel_unshuffle``, exact):
  (B, 256 + 32 * 16 + 64 * 4, 64, 64) = (B, 1024, 64, 64).
- :class:`Sam2PromptEncoder`: SAM's prompt encoder with SAM 2's prompt convention: a box is two
  points with labels 2 / 3 placed before the clicks, and one padding point always follows.
- :class:`Sam2MaskDecoder`: SAM's decoder with SAM 2's additions: an object-score token ahead of
  the IoU token, high-res features added inside the upscaling, sigmoid IoU predictions, and
  "dynamic multimask": at inference, a single-mask request whose mask is unstable (stability
  < 0.98 at logit +-0.05) returns the best multimask output instead (``dynamic_multimask``).

Official checkpoints (``sam2.1_hiera_*.pt``) are mapped by :func:`image_model_state_dict`: prompt
encoder and decoder renamed, ``no_mem_embed`` and the decoder's ``conv_s0`` / ``conv_s1`` moved
into the encoder, the two-way transformer's ``mlp.layers.0/1`` named ``mlp.lin1/lin2``, and the
video-only tensors (memory attention and encoder, object pointers, the object-score head) left
out — each by name, so that anything else in the file still counts as unexpected.

Frame: SAM 2 stretches every image to the square input (no padding) and maps mask logits straight
back to the original size; :attr:`Sam2ImageEncoder.frame` = ``"stretch"`` tells
:class:`~sam_d2.modeling.sam.Sam` and the transforms (:mod:`sam_d2.data.transforms`).

Loading: :func:`adopt_official_keys` renames an official file's keys in place when a SAM 2 model
loads it (``Sam._load_from_state_dict``, and the part placement of composed meta-architectures),
so every loading path (``load_state_dict``, Detectron2's ``DetectionCheckpointer``,
``SamCheckpointer``, ``MODEL.SAM.WEIGHTS``) takes ``sam2.1_hiera_*.pt`` as it is.

The variants ``sam2.1_hiera_{t,s,b+,l}`` are built by
:func:`~sam_d2.modeling.sam.build_sam_modules` through :mod:`sam_d2.modeling.families`.
"""

from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import Backbone
from torch import Tensor, nn

from .hiera import HIERA_PRESETS, FpnNeck, Hiera
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder

__all__ = [
    "Sam2ImageEncoder",
    "Sam2PromptEncoder",
    "Sam2MaskDecoder",
    "adopt_official_keys",
    "build_sam2_encoder",
    "image_model_state_dict",
]


class Sam2ImageEncoder(Backbone):
    """Hiera + FPN, ``no_mem_embed`` and the decoder's high-res projections (module docstring).

    Output ``{"image_embed": (B, d_model + 32 * 16 + 64 * 4, S/16, S/16)}`` for d_model = 256.
    """

    #: SAM 2's frame convention: images stretched to the square (:mod:`sam_d2.data.transforms`).
    frame = "stretch"
    #: Recompute each trunk block in backward instead of storing its activations (training only).
    activation_checkpointing: bool = False

    def __init__(self, *, img_size: int = 1024, d_model: int = 256, **trunk_kwargs: Any) -> None:
        """
        Args (keyword-only):
            img_size: side of the square input.
            d_model: FPN width (= prompt embedding width).
            trunk_kwargs: arguments of :class:`~sam_d2.modeling.hiera.Hiera`.
        """
        super().__init__()
        self.img_size = img_size
        self.trunk = Hiera(**trunk_kwargs)
        self.neck = FpnNeck(d_model, self.trunk.channel_list)
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, d_model))
        self.conv_s0 = nn.Conv2d(d_model, d_model // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(d_model, d_model // 4, kernel_size=1)
        channels = d_model + d_model // 8 * 16 + d_model // 4 * 4
        self._out_features = ["image_embed"]
        self._out_feature_channels = {"image_embed": channels}
        self._out_feature_strides = {"image_embed": 16}

    def forward(self, x: Tensor) -> Dict[str, Tensor]:
        """(B, 3, S, S) -> {"image_embed": (B, C_packed, S/16, S/16)} (module docstring)."""
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        s0, s1, embed = self.neck(self.trunk(x, recompute))[:3]
        embed = embed + self.no_mem_embed.view(1, -1, 1, 1)
        high_res = [F.pixel_unshuffle(self.conv_s0(s0), 4), F.pixel_unshuffle(self.conv_s1(s1), 2)]
        return {"image_embed": torch.cat([embed, *high_res], dim=1)}

    def output_shape(self) -> Dict[str, ShapeSpec]:
        return {
            "image_embed": ShapeSpec(channels=self._out_feature_channels["image_embed"], stride=16)
        }


class Sam2PromptEncoder(PromptEncoder):
    """SAM's prompt encoder with SAM 2's convention (module docstring); same parameters."""

    # Learned embedding per label: 0 background, 1 foreground, 2 / 3 box corners, -1 padding.
    def _label_embeddings(self) -> Tensor:
        rows = [e.weight[0] for e in self.point_embeddings] + [self.not_a_point_embed.weight[0]]
        return torch.stack(rows)  # (5, C); row 4 = padding

    def forward(
        self,
        points: Optional[Tuple[Tensor, Tensor]],
        boxes: Optional[Tensor],
        masks: Optional[Tensor],
    ) -> Tuple[Tensor, Tensor]:
        """As :meth:`PromptEncoder.forward`; sparse tokens are [box corners, clicks, padding]."""
        coords, labels = [], []
        if boxes is not None:
            coords.append(boxes.reshape(-1, 2, 2))
            labels.append(torch.tensor([2, 3], device=boxes.device).expand(boxes.shape[0], 2))
        if points is not None:
            coords.append(points[0])
            labels.append(points[1].to(torch.long))
        if not coords:
            return super().forward(None, None, masks)
        n = coords[0].shape[0]
        coords.append(coords[0].new_zeros(n, 1, 2))
        labels.append(torch.full((n, 1), -1, dtype=torch.long, device=coords[0].device))
        xy, lab = torch.cat(coords, dim=1), torch.cat(labels, dim=1).long()
        emb = self.pe_layer.pixels(xy + 0.5, self.input_image_size)
        pad = (lab == -1)[..., None]
        sparse = torch.where(pad, torch.zeros_like(emb), emb)
        sparse = sparse + self._label_embeddings()[torch.where(lab == -1, 4, lab)]
        _, dense = super().forward(None, None, masks) if masks is not None else (None, None)
        if dense is None:
            h, w = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(n, -1, h, w)
        return sparse, dense


class Sam2MaskDecoder(MaskDecoder):
    """SAM's mask decoder with SAM 2's additions (module docstring).

    Expects image embeddings from :class:`Sam2ImageEncoder` (high-res maps folded behind the
    embedding channels).
    """

    #: SAM 2's predictor hands back its low-res logits clamped to +-32 (the masks it returns are
    #: computed before); :class:`~sam_d2.SamPredictor` does the same for this decoder.
    returned_logit_limit: float = 32.0

    def __init__(
        self,
        *,
        dynamic_multimask: bool = True,
        stability_delta: float = 0.05,
        stability_thresh: float = 0.98,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            dynamic_multimask: at inference, replace an unstable single mask by the best
                multimask output (module docstring; on in SAM 2's ``build_sam2`` by default).
            stability_delta, stability_thresh: its logit offset and stability threshold.
            kwargs: arguments of :class:`MaskDecoder`.
        """
        super().__init__(**kwargs)
        self.obj_score_token = nn.Embedding(1, self.transformer_dim)
        self.dynamic_multimask = dynamic_multimask
        self.stability_delta = stability_delta
        self.stability_thresh = stability_thresh

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        multimask_output: bool,
        image_index: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """As :meth:`MaskDecoder.forward`, for :class:`Sam2ImageEncoder` embeddings.

        Returns:
            mask logits (N, 3 or 1, 4h, 4w) and predicted IoUs in [0, 1] (N, 3 or 1).
        """
        c = self.transformer_dim
        n = sparse_prompt_embeddings.shape[0]
        if image_index is None:
            if image_embeddings.shape[0] != 1:
                raise ValueError(
                    f"Sam2MaskDecoder: {image_embeddings.shape[0]} image embeddings given "
                    "without image_index; pass which image each prompt belongs to"
                )
            image_index = torch.zeros(n, dtype=torch.long, device=image_embeddings.device)
        expected = c + c // 8 * 16 + c // 4 * 4
        if image_embeddings.shape[1] != expected:
            raise ValueError(
                f"Sam2MaskDecoder: image embeddings of {image_embeddings.shape[1]} channels, "
                f"expected {expected} (embedding + high-res maps, as Sam2ImageEncoder returns)"
            )
        feats = image_embeddings[image_index]
        embed = feats[:, :c]
        s0 = F.pixel_shuffle(feats[:, c : c + c // 8 * 16], 4)
        s1 = F.pixel_shuffle(feats[:, c + c // 8 * 16 :], 2)

        output_tokens = torch.cat(
            [self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight], dim=0
        )
        output_tokens = output_tokens[None].expand(n, -1, -1).to(sparse_prompt_embeddings.dtype)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)
        src = embed + dense_prompt_embeddings
        b, _, h, w = src.shape
        hs, src = self.transformer(src, image_pe.expand(n, -1, -1, -1), tokens)
        k = self.num_mask_tokens
        weights = torch.stack(
            [mlp(hs[:, 2 + i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # (N, k, C/8)
        up1, norm, act1, up2, act2 = self.output_upscaling
        x = act1(norm(up1(src.transpose(1, 2).reshape(b, c, h, w)) + s1))
        x = act2(up2(x) + s0)
        hu, wu = x.shape[-2:]
        masks = (weights @ x.flatten(2)).view(b, k, hu, wu)
        iou = self.iou_prediction_head(hs[:, 1]).sigmoid()
        if multimask_output:
            return masks[:, 1:], iou[:, 1:]
        if self.training or not self.dynamic_multimask:
            return masks[:, :1], iou[:, :1]
        return self._dynamic_single_mask(masks, iou)

    def _dynamic_single_mask(self, masks: Tensor, iou: Tensor) -> Tuple[Tensor, Tensor]:
        """Single-mask output, or the best multimask output where it is unstable."""
        logits = masks[:, 0].flatten(1)
        inter = (logits > self.stability_delta).sum(-1).float()
        union = (logits > -self.stability_delta).sum(-1).float()
        stable = torch.where(union > 0, inter / union, torch.ones_like(union))
        stable = stable >= self.stability_thresh
        best = iou[:, 1:].argmax(dim=1) + 1
        pick = torch.where(stable, torch.zeros_like(best), best)
        rows = torch.arange(masks.shape[0], device=masks.device)
        return masks[rows, pick][:, None], iou[rows, pick][:, None]


def build_sam2_encoder(
    preset: str, *, img_size: int = 1024, out_chans: int = 256, drop_path_rate: float = 0.0
) -> Sam2ImageEncoder:
    """SAM 2.1's image encoder for a Hiera preset ("hiera_t", "hiera_s", "hiera_b+", "hiera_l").

    Args:
        preset: key of :data:`~sam_d2.modeling.hiera.HIERA_PRESETS`.
        img_size: side of the square input (a multiple of 32 for the Hiera windows).
        out_chans: FPN width; SAM 2's prompt encoder and decoder take 256.
        drop_path_rate: stochastic depth of the trunk.
    """
    if preset not in HIERA_PRESETS:
        raise ValueError(
            f"unknown SAM 2.1 preset {preset!r}; expected one of {sorted(HIERA_PRESETS)}"
        )
    return Sam2ImageEncoder(
        img_size=img_size, d_model=out_chans, drop_path_rate=drop_path_rate, **HIERA_PRESETS[preset]
    )


# Tensors of SAM 2's video path (memory, object pointers, object-presence head), by name.
_VIDEO_ONLY = (
    "memory_attention.",
    "memory_encoder.",
    "maskmem_tpos_enc",
    "no_mem_pos_enc",
    "no_obj_ptr",
    "no_obj_embed_spatial",
    "mask_downsample.",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
    "sam_mask_decoder.pred_obj_score_head.",
)
_RENAMES = (
    ("sam_mask_decoder.conv_s0.", "image_encoder.conv_s0."),
    ("sam_mask_decoder.conv_s1.", "image_encoder.conv_s1."),
    ("sam_mask_decoder.", "mask_decoder."),
    ("sam_prompt_encoder.", "prompt_encoder."),
    ("no_mem_embed", "image_encoder.no_mem_embed"),
)


def image_model_state_dict(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """An official SAM 2 / 2.1 state dict in sam_d2's image-model layout (module docstring).

    Keys already in sam_d2's layout pass unchanged.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith(_VIDEO_ONLY):
            continue
        for old, new in _RENAMES:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        if key.startswith("mask_decoder.transformer.layers.") and ".mlp.layers." in key:
            key = key.replace(".mlp.layers.0.", ".mlp.lin1.").replace(
                ".mlp.layers.1.", ".mlp.lin2."
            )
        out[key] = value
    return out


def adopt_official_keys(state_dict: Dict[str, Any], prefix: str = "") -> bool:
    """Rename, in place, the keys of an official SAM 2 file under ``prefix`` to the image model's
    (:func:`image_model_state_dict`); the file is recognised by its ``sam_mask_decoder.`` /
    ``sam_prompt_encoder.`` keys.

    Args:
        state_dict: the state dict being loaded (modified in place).
        prefix: where the SAM 2 model sits in it ("" for the whole file, "sam." in a composed
            meta-architecture).

    Returns:
        whether the keys were an official file's (and renamed).
    """
    heads = (f"{prefix}sam_mask_decoder.", f"{prefix}sam_prompt_encoder.")
    if not any(k.startswith(heads) for k in state_dict):
        return False
    own = {k[len(prefix) :]: state_dict.pop(k) for k in list(state_dict) if k.startswith(prefix)}
    state_dict.update({prefix + k: v for k, v in image_model_state_dict(own).items()})
    return True
