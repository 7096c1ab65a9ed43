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

from typing import Any, Dict, List

import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY
from torch import Tensor

from ...automatic.mask_set import MaskSet
from ..edge_map import sam_edge_map
from .proposals import SamAutomaticProposals

__all__ = ["SamEdgeDetector"]


@META_ARCH_REGISTRY.register()
class SamEdgeDetector(SamAutomaticProposals):
    """SAM's automatic masks turned into an edge map (see the module docstring)."""

    @configurable
    def __init__(
        self,
        *,
        mask_threshold_prob: float = 0.5,
        boundary_radius: int = 1,
        nms: bool = True,
        thinning: bool = True,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            mask_threshold_prob: probability above which a pixel belongs to a mask (defines the
                mask's boundary band).
            boundary_radius: half-width of the boundary band in which Sobel responses are kept.
            nms, thinning: edge NMS and morphological thinning of the final map.
            kwargs: arguments of :class:`SamAutomaticProposals` (the generator settings).
        """
        super().__init__(**kwargs)
        self.generator_kwargs["keep_low_res_logits"] = True
        if self.generator_kwargs.get("crop_n_layers", 0):
            raise ValueError("SamEdgeDetector works on the whole image: set crop_n_layers = 0")
        self.edge_kwargs = dict(
            mask_threshold=mask_threshold_prob,
            boundary_radius=boundary_radius,
            nms=nms,
            thinning=thinning,
        )

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        ret = super().from_config(cfg)
        e = cfg.TEST.EDGES
        ret.update(
            mask_threshold_prob=e.MASK_THRESHOLD,
            boundary_radius=e.BOUNDARY_RADIUS,
            nms=e.NMS,
            thinning=e.THINNING,
        )
        return ret

    def mask_probabilities(self, masks: MaskSet, input_hw: tuple, image_hw: tuple) -> Tensor:
        """(N, H, W) sigmoid of the kept masks' logits at the image resolution."""
        logits = masks.low_res_logits[:, None]
        return self.postprocess_masks(logits, input_hw, image_hw)[:, 0].sigmoid()

    def forward(self, batched_inputs: List[Dict[str, Any]]) -> List[Dict[str, Tensor]]:
        """Detectron2 contract: list of input dicts -> list of ``{"edges": (H, W)}``."""
        if self.training:
            raise RuntimeError("SamEdgeDetector is inference-only")
        if not batched_inputs:
            raise ValueError("SamEdgeDetector got an empty batch")
        images = [self._uint8_rgb(i, img) for i, img in enumerate(self.rgb_images(batched_inputs))]
        generator = self.make_generator()
        results = []
        for x, image, masks in zip(batched_inputs, images, generator.generate_mask_sets(images)):
            image_hw = image.shape[:2]
            input_hw = generator.input_size(image_hw)
            probs = self.mask_probabilities(masks, input_hw, image_hw)
            edges = sam_edge_map(probs, **self.edge_kwargs)
            out_hw = (int(x.get("height", image_hw[0])), int(x.get("width", image_hw[1])))
            if tuple(out_hw) != tuple(image_hw):
                edges = F.interpolate(edges[None, None], out_hw, mode="bilinear")[0, 0]
            results.append({"edges": edges.clamp(0, 1)})
        return results
