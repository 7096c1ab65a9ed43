"""``SamAutomaticProposals``: class-agnostic object proposals from SAM's automatic generator.

The meta-architecture runs :class:`~sam_d2.automatic.AutomaticMaskGenerator` on every input image
and returns its masks as Detectron2 ``Instances``, ranked and truncated to
``SAM_AUTO.MAX_PROPOSALS``. With ``configs/sam_proposals_lvis.yaml`` it reproduces the SAM paper's
LVIS mask-proposal setting: a 64 x 64 grid, no crops, no predicted-IoU / stability filtering, box
NMS 0.9, at most 1000 masks per image ranked by the mean of predicted IoU and stability.

Which image the generator sees: the generator needs the image at its original resolution (it
crops, then resizes each crop to ``MODEL.SAM.IMAGE_SIZE`` exactly as SAM does). Detectron2's
``DatasetMapper`` resizes ``"image"`` with ``ResizeShortestEdge(INPUT.MIN_SIZE_TEST, ...)`` unless
``INPUT.MIN_SIZE_TEST = 0``, in which case it leaves the image untouched. Configs of this
meta-architecture therefore set ``INPUT.MIN_SIZE_TEST: 0``, so ``"image"`` is the original
image; the meta-architecture does SAM's resize itself. If a mapper did resize the image anyway,
the masks are computed on that image and resized (bilinear on the 0/1 mask, threshold 0.5) to
``(height, width)`` of the input dict.

Input dict keys: ``image`` (3, h, w) in ``cfg.INPUT.FORMAT`` (uint8 values; float tensors are
rounded and clipped to [0, 255]); optional ``height``, ``width`` (output size, default h, w).

Output per image: ``{"instances": Instances((height, width))}`` with
    pred_masks (N, H, W) bool       masks at the output size
    scores (N,)                     the ranking score, decreasing
    pred_boxes Boxes (N,)           XYXY boxes of pred_masks (Detectron2 convention: x1, y1 are
                                    one past the last mask pixel)
    pred_classes (N,) int64 zeros   class-agnostic
    predicted_iou (N,)              the decoder's IoU prediction
    stability_score (N,)            SAM's stability score
Empty masks are dropped; N <= ``max_proposals``.
"""

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, Instances
from torch import Tensor, nn

from ...automatic.generator import AutomaticMaskGenerator
from ...automatic.mask_set import MaskSet
from ...automatic.masks import masks_to_boxes
from ..weights import register_part_loading
from .promptable import PromptableSam

__all__ = [
    "SamAutomaticProposals",
    "automatic_inputs",
    "generator_kwargs_from_cfg",
    "make_generator",
    "RANKINGS",
]

#: How proposals are ranked (and what ``scores`` holds).
RANKINGS = ("mean", "predicted_iou", "stability_score")


#: The paper's LVIS proposal setting (defaults of :class:`SamAutomaticProposals`).
LVIS_PROPOSAL_SETTING = dict(
    points_per_side=64, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.9
)


def generator_kwargs_from_cfg(cfg: CfgNode) -> Dict[str, Any]:
    """Arguments of :class:`~sam_d2.automatic.AutomaticMaskGenerator` from ``cfg.SAM_AUTO``."""
    c = cfg.SAM_AUTO
    return dict(
        points_per_side=c.POINTS_PER_SIDE,
        points_per_batch=c.POINTS_PER_BATCH,
        pred_iou_thresh=c.PRED_IOU_THRESH,
        stability_score_thresh=c.STABILITY_SCORE_THRESH,
        stability_score_offset=c.STABILITY_SCORE_OFFSET,
        box_nms_thresh=c.BOX_NMS_THRESH,
        crop_n_layers=c.CROP_N_LAYERS,
        crop_nms_thresh=c.CROP_NMS_THRESH,
        crop_overlap_ratio=c.CROP_OVERLAP_RATIO,
        crop_n_points_downscale_factor=c.CROP_N_POINTS_DOWNSCALE_FACTOR,
        min_mask_region_area=c.MIN_MASK_REGION_AREA,
        max_mask_area_ratio=c.MAX_MASK_AREA_RATIO if c.MAX_MASK_AREA_RATIO > 0 else None,
        encoder_batch_size=c.ENCODER_BATCH_SIZE,
    )


def automatic_inputs(sam: PromptableSam, batched_inputs: List[Dict[str, Any]]) -> List[np.ndarray]:
    """The (h, w, 3) uint8 RGB images of the inputs, as the automatic generator takes them.

    Float images are rounded and clipped to [0, 255].
    """
    images = []
    for image in sam.rgb_images(batched_inputs):
        if image.dtype != torch.uint8:
            image = image.float().round().clamp(0, 255).to(torch.uint8)
        images.append(np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy()))
    return images


def make_generator(sam: PromptableSam, generator_kwargs: Dict[str, Any]) -> AutomaticMaskGenerator:
    """An :class:`AutomaticMaskGenerator` on ``sam``; fails at once on bad settings.

    The generator's precision defaults to the SAM's ``decoder_dtype`` (its encoder follows
    ``encoder_dtype``).

    Raises:
        ValueError: ``generator_kwargs`` set ``model`` or ``output_mode`` (the meta-architecture
            owns them), or a setting the generator rejects.
    """
    for key in ("model", "output_mode"):
        if key in generator_kwargs:
            raise ValueError(f"generator_kwargs must not set {key!r}")
    return AutomaticMaskGenerator(sam, **{"dtype": sam.decoder_dtype, **generator_kwargs})


@META_ARCH_REGISTRY.register()
class SamAutomaticProposals(nn.Module):
    """SAM's automatic generator as a proposal model (see the module docstring). Inference only."""

    @configurable
    def __init__(
        self,
        *,
        sam: PromptableSam,
        generator_kwargs: Optional[Dict[str, Any]] = None,
        max_proposals: int = 1000,
        ranking: str = "mean",
    ) -> None:
        """
        Args:
            sam: the SAM (its ``input_format`` is the channel order of ``"image"``).
            generator_kwargs: keyword arguments of ``AutomaticMaskGenerator`` (without model and
                output_mode); defaults: the paper's LVIS setting.
            max_proposals: masks kept per image after ranking.
            ranking: "mean" (of predicted IoU and stability score, the paper's LVIS ranking),
                "predicted_iou" or "stability_score".
        """
        super().__init__()
        if ranking not in RANKINGS:
            raise ValueError(f"ranking must be one of {RANKINGS}, got {ranking!r}")
        if max_proposals < 1:
            raise ValueError(f"max_proposals must be >= 1, got {max_proposals}")
        self.sam = sam
        self.generator = make_generator(sam, {**LVIS_PROPOSAL_SETTING, **(generator_kwargs or {})})
        self.max_proposals = int(max_proposals)
        self.ranking = ranking
        register_part_loading(self, ["sam"])

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        return dict(
            sam=PromptableSam(**PromptableSam.from_config(cfg)),
            generator_kwargs=generator_kwargs_from_cfg(cfg),
            max_proposals=cfg.SAM_AUTO.MAX_PROPOSALS,
            ranking=cfg.SAM_AUTO.RANKING,
        )

    @property
    def device(self) -> torch.device:
        return self.sam.device

    def forward(self, batched_inputs: List[Dict[str, Any]]) -> List[Dict[str, Instances]]:
        """Detectron2 contract: list of input dicts -> list of ``{"instances": Instances}``."""
        if self.training:
            raise RuntimeError(
                "SamAutomaticProposals is inference-only; fine-tune SAM with PromptableSam and "
                "load the weights here"
            )
        if not batched_inputs:
            raise ValueError("SamAutomaticProposals got an empty batch")
        images = automatic_inputs(self.sam, batched_inputs)
        results = []
        for x, image, masks in zip(
            batched_inputs, images, self.generator.generate_mask_sets(images)
        ):
            in_hw = image.shape[:2]
            out_hw = (int(x.get("height", in_hw[0])), int(x.get("width", in_hw[1])))
            results.append({"instances": self.to_proposals(masks, out_hw)})
        return results

    def ranking_scores(self, masks: MaskSet) -> Tensor:
        """(N,) scores of a mask set under ``self.ranking`` (NaN stability counts as 0)."""
        stability = torch.nan_to_num(masks.stability_score, nan=0.0)
        if self.ranking == "predicted_iou":
            return masks.predicted_iou
        if self.ranking == "stability_score":
            return stability
        return (masks.predicted_iou + stability) / 2

    def to_proposals(self, masks: MaskSet, out_hw: Tuple[int, int]) -> Instances:
        """Top ``max_proposals`` non-empty masks by ranking score, as ``Instances``."""
        masks = masks.select(masks.areas > 0)
        scores = self.ranking_scores(masks)
        order = torch.argsort(scores, descending=True, stable=True)[: self.max_proposals]
        masks, scores = masks.select(order), scores[order]
        dense = masks.decode_masks(device=self.device)
        if tuple(dense.shape[1:]) != tuple(out_hw):
            dense = _resize_masks(dense, out_hw, self.sam.prompt_chunk_size)
        inst = Instances(tuple(out_hw))
        inst.pred_masks = dense
        inst.scores = scores.float()
        boxes = masks_to_boxes(dense).float()
        boxes[:, 2:] += dense.flatten(1).any(dim=1, keepdim=True).float()  # exclusive x1, y1
        inst.pred_boxes = Boxes(boxes)
        inst.pred_classes = torch.zeros(len(masks), dtype=torch.int64, device=dense.device)
        inst.predicted_iou = masks.predicted_iou.float()
        inst.stability_score = masks.stability_score.float()
        return inst


def _resize_masks(masks: Tensor, out_hw: Tuple[int, int], chunk: int) -> Tensor:
    """(N, h, w) bool -> (N, H, W) bool, bilinear on 0/1 values thresholded at 0.5, in chunks."""
    out = torch.empty((masks.shape[0],) + tuple(out_hw), dtype=torch.bool, device=masks.device)
    for s in range(0, masks.shape[0], chunk):
        part = masks[s : s + chunk, None].float()
        out[s : s + chunk] = (
            F.interpolate(part, out_hw, mode="bilinear", align_corners=False)[:, 0] > 0.5
        )
    return out
