"""``SamEdgeDetector``: zero-shot edge detection with SAM (paper §7.2, App. D.2).

Per image: a 16 x 16 grid of single-point prompts gives 768 masks (3 per point), kept without
predicted-IoU or stability filtering, de-duplicated by box NMS; their unthresholded probability maps
(sigmoid of the logits, at the original resolution) go through
:func:`sam_d2.modeling.edge_map.sam_edge_map`: Sobel filter, responses kept only on each mask's
outer boundary, pixel-wise maximum, linear normalisation to [0, 1], edge NMS and thinning.

The generator needs the original image, so configs of this model set ``INPUT.MIN_SIZE_TEST: 0``
(Detectron2's mapper then leaves ``"image"`` untouched); other input keys (``edge_gt_file`` of
BSDS500) pass through to the evaluator.

Output per image: ``{"edges": Tensor (H, W) float in [0, 1]}`` at ``(height, width)``.
"""

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import Tensor, nn

from ...automatic.mask_set import MaskSet
from ..edge_map import sam_edge_map
from ..weights import register_part_loading
from .promptable import PromptableSam
from .proposals import automatic_inputs, generator_kwargs_from_cfg, make_generator

__all__ = ["SamEdgeDetector", "BSDS_EDGE_SETTING"]

#: The paper's edge setting (defaults of :class:`SamEdgeDetector`): a 16 x 16 grid (768 masks),
#: no predicted-IoU / stability filtering, box NMS (0.7: the paper gives no value).
BSDS_EDGE_SETTING = dict(
    points_per_side=16, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.7
)


@META_ARCH_REGISTRY.register()
class SamEdgeDetector(nn.Module):
    """SAM's automatic masks turned into an edge map (see the module docstring)."""

    @configurable
    def __init__(
        self,
        *,
        sam: PromptableSam,
        generator_kwargs: Optional[Dict[str, Any]] = None,
        mask_threshold_prob: float = 0.5,
        boundary_radius: int = 1,
        nms: bool = True,
        thinning: bool = True,
    ) -> None:
        """
        Args:
            sam: the SAM (its ``input_format`` is the channel order of ``"image"``).
            generator_kwargs: keyword arguments of ``AutomaticMaskGenerator`` over
                :data:`BSDS_EDGE_SETTING` (no crops).
            mask_threshold_prob: probability above which a pixel belongs to a mask (defines the
                mask's boundary band).
            boundary_radius: half-width of the boundary band in which Sobel responses are kept.
            nms, thinning: edge NMS and morphological thinning of the final map.
        """
        super().__init__()
        kwargs = {**BSDS_EDGE_SETTING, **(generator_kwargs or {}), "keep_low_res_logits": True}
        if kwargs.get("crop_n_layers", 0):
            raise ValueError("SamEdgeDetector works on the whole image: set crop_n_layers = 0")
        self.sam = sam
        self.generator = make_generator(sam, kwargs)
        self.edge_kwargs = dict(
            mask_threshold=mask_threshold_prob,
            boundary_radius=boundary_radius,
            nms=nms,
            thinning=thinning,
        )
        register_part_loading(self, ["sam"])

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        e = cfg.TEST.EDGES
        return dict(
            sam=PromptableSam(**PromptableSam.from_config(cfg)),
            generator_kwargs=generator_kwargs_from_cfg(cfg),
            mask_threshold_prob=e.MASK_THRESHOLD,
            boundary_radius=e.BOUNDARY_RADIUS,
            nms=e.NMS,
            thinning=e.THINNING,
        )

    @property
    def device(self) -> torch.device:
        return self.sam.device

    def mask_probabilities(
        self, masks: MaskSet, input_hw: Tuple[int, int], image_hw: Tuple[int, int]
    ) -> Tensor:
        """(N, H, W) sigmoid of the kept masks' logits at the image resolution."""
        logits = masks.low_res_logits[:, None]
        return self.sam.postprocess_masks(logits, input_hw, image_hw)[:, 0].sigmoid()

    def forward(self, batched_inputs: List[Dict[str, Any]]) -> List[Dict[str, Tensor]]:
        """Detectron2 contract: list of input dicts -> list of ``{"edges": (H, W)}``."""
        if self.training:
            raise RuntimeError("SamEdgeDetector is inference-only")
        if not batched_inputs:
            raise ValueError("SamEdgeDetector got an empty batch")
        images = automatic_inputs(self.sam, batched_inputs)
        results = []
        for x, image, masks in zip(
            batched_inputs, images, self.generator.generate_mask_sets(images)
        ):
            image_hw = image.shape[:2]
            input_hw = self.generator.input_size(image_hw)
            probs = self.mask_probabilities(masks, input_hw, image_hw)
            edges = sam_edge_map(probs, **self.edge_kwargs)
            out_hw = (int(x.get("height", image_hw[0])), int(x.get("width", image_hw[1])))
            if tuple(out_hw) != tuple(image_hw):
                edges = F.interpolate(edges[None, None], out_hw, mode="bilinear")[0, 0]
            results.append({"edges": edges.clamp(0, 1)})
        return results
