"""``DetectorPromptedSam``: any Detectron2 detector's boxes prompt SAM (zero-shot instances).

The SAM paper's zero-shot instance segmentation (Sec. 7.4, App. D.5): ViTDet-H's boxes prompt
SAM; the most confident of SAM's masks is fed back, together with the box, to the mask decoder
once more ("one refinement iteration"), and that prediction is the instance mask. Box, score and
class stay the detector's; the mask AP then measures SAM's masks.

Per image, at inference:
    1. boxes: the detector's output (``MODEL.SAM_PROMPTED.BOX_SOURCE = "detector"``) or the
       ground truth in the input's ``"instances"`` (``"gt"``: class = gt class, score 1; an
       oracle for studying SAM alone, the detector is then not built); at most ``MAX_BOXES``
       detector boxes, highest scores first (the oracle uses every ground-truth box);
    2. SAM encodes ``"sam_image"`` (the original image resized to SAM's input, from
       :class:`sam_d2.data.mappers.DetectorPromptedSamMapper`); boxes are mapped from original
       pixels into that frame;
    3. first pass: each box alone, 3 outputs (``MULTIMASK_OUTPUT``, as SAM was trained for a
       single prompt), the one with the highest predicted IoU is kept;
    4. refinement (``REFINE``): box + that mask's low-res logits, single output (as SAM was trained
       for more than one prompt);
    5. masks are upsampled to the original size and thresholded, ``PROMPT_CHUNK_SIZE`` prompts
       at a time (bounded memory).

Inputs (one dict per image): ``"image"`` for the detector (its resize and ``INPUT.FORMAT``),
``"height"``/``"width"`` (original size), ``"sam_image"`` (3, h, w) RGB in the SAM's frame
(``max(h, w) = MODEL.SAM.IMAGE_SIZE`` for SAM, the square for SAM 2; if absent it is resampled
from ``"image"``, an approximation of the SAM's transform) and, for ``"gt"`` boxes,
``"instances"`` with ``gt_boxes`` and ``gt_classes`` in the frame of ``"image"``.

Output: ``[{"instances": Instances(height, width)}]`` with the detector's ``pred_boxes``,
``scores`` and ``pred_classes``, SAM's ``pred_masks`` (N, H, W) bool, and ``mask_scores`` (N,),
SAM's predicted IoU of each returned mask.

Weights: ``MODEL.SAM.WEIGHTS`` (``sam_vit_h_4b8939.pth``) is loaded into ``model.sam`` when the
model is built; ``MODEL.WEIGHTS`` (the detector's ``model_final_*.pkl``, or a sam_d2 checkpoint of
the whole model) is loaded afterwards by any Detectron2 checkpointer, a detector file landing in
``model.detector`` (:mod:`sam_d2.modeling.weights`). ``DefaultPredictor(cfg)`` thus runs it.
"""

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, Instances
from torch import Tensor, nn

from ..weights import register_part_loading
from .promptable import PromptableSam

__all__ = [
    "DetectorPromptedSam",
    "build_detector",
]

logger = logging.getLogger(__name__)

BOX_SOURCES = ("detector", "gt")


def build_detector(cfg: CfgNode) -> nn.Module:
    """The detector ``MODEL.SAM_PROMPTED.DETECTOR_META_ARCHITECTURE`` built from ``cfg``.

    Raises:
        ValueError: the name is not a registered meta-architecture, or names this very class.
    """
    name = cfg.MODEL.SAM_PROMPTED.DETECTOR_META_ARCHITECTURE
    if name == "DetectorPromptedSam":
        raise ValueError(
            "MODEL.SAM_PROMPTED.DETECTOR_META_ARCHITECTURE cannot be 'DetectorPromptedSam' itself"
        )
    if name not in META_ARCH_REGISTRY:
        known = sorted(k for k, _ in META_ARCH_REGISTRY)
        raise ValueError(
            f"MODEL.SAM_PROMPTED.DETECTOR_META_ARCHITECTURE={name!r} is not a registered "
            f"meta-architecture; registered: {known}"
        )
    return META_ARCH_REGISTRY.get(name)(cfg)


@META_ARCH_REGISTRY.register()
class DetectorPromptedSam(nn.Module):
    """A detector's boxes prompt SAM; the detector's boxes/scores/classes with SAM's masks.

    See the module docstring for inputs, outputs and the procedure.
    """

    @configurable
    def __init__(
        self,
        *,
        detector: Optional[nn.Module],
        sam: PromptableSam,
        box_source: str = "detector",
        max_boxes: int = 300,
        multimask_output: bool = True,
        refine: bool = True,
        detector_input_format: str = "RGB",
    ) -> None:
        """
        Args:
            detector: a Detectron2 meta-architecture (None when ``box_source == "gt"``).
            sam: the SAM model (its ``prompt_chunk_size`` bounds decoding memory).
            box_source: "detector" or "gt".
            max_boxes: most detector boxes per image, highest scores first (<= 0: no limit);
                ground-truth boxes (the oracle) are all used.
            multimask_output: first pass with 3 outputs, keep the most confident.
            refine: one more decoder pass with the kept mask's logits and the box.
            detector_input_format: channel order of ``"image"`` ("RGB" or "BGR"), used only when
                ``"sam_image"`` is absent.
        """
        super().__init__()
        if box_source not in BOX_SOURCES:
            raise ValueError(
                f"MODEL.SAM_PROMPTED.BOX_SOURCE must be one of {BOX_SOURCES}, got {box_source!r}"
            )
        if box_source == "detector" and detector is None:
            raise ValueError("box_source='detector' needs a detector")
        self.detector = detector
        self.sam = sam
        self.box_source = box_source
        self.max_boxes = max_boxes
        self.multimask_output = multimask_output
        self.refine = refine
        self.detector_input_format = detector_input_format
        register_part_loading(self, ["sam", "detector"])

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        c = cfg.MODEL.SAM_PROMPTED
        detector = build_detector(cfg) if c.BOX_SOURCE == "detector" else None
        # "sam_image" is RGB whatever the detector's INPUT.FORMAT
        sam = PromptableSam(**{**PromptableSam.from_config(cfg), "input_format": "RGB"})
        return dict(
            detector=detector,
            sam=sam,
            box_source=c.BOX_SOURCE,
            max_boxes=c.MAX_BOXES,
            multimask_output=c.MULTIMASK_OUTPUT,
            refine=c.REFINE,
            detector_input_format=cfg.INPUT.FORMAT,
        )

    @property
    def device(self) -> torch.device:
        return self.sam.device

    # ------------------------------------------------------------------------------- forward
    def forward(self, batched_inputs: List[Dict[str, Any]]) -> List[Dict[str, Instances]]:
        """Detectron2 contract: list of input dicts -> list of ``{"instances": Instances}``."""
        if self.training:
            raise NotImplementedError(
                "DetectorPromptedSam is evaluation-only; train the detector with its own "
                "META_ARCHITECTURE and SAM with PromptableSam"
            )
        if not batched_inputs:
            raise ValueError("DetectorPromptedSam got an empty batch")
        results = self.detect(batched_inputs)
        masks = self.predict_masks(batched_inputs, [r.pred_boxes.tensor for r in results])
        for inst, (pred_masks, mask_scores) in zip(results, masks):
            inst.pred_masks = pred_masks
            inst.mask_scores = mask_scores
        return [{"instances": r} for r in results]

    def detect(self, batched_inputs: List[Dict[str, Any]]) -> List[Instances]:
        """Boxes, scores and classes in original-image pixels, top ``max_boxes`` by score.

        Returns:
            per image, ``Instances((height, width))`` with ``pred_boxes``, ``scores`` and
            ``pred_classes`` (other detector outputs, e.g. its own masks, are dropped); at most
            ``max_boxes`` detector boxes, every ground-truth box.
        """
        if self.box_source == "gt":
            found = [self._gt_instances(i, x) for i, x in enumerate(batched_inputs)]
        else:
            found = [r["instances"] for r in self.detector(batched_inputs)]
        limit = self.max_boxes if self.box_source == "detector" else 0
        results = []
        for inst in found:
            out = Instances(inst.image_size)
            order = torch.argsort(inst.scores, descending=True, stable=True)
            if limit > 0:
                order = order[:limit]
            out.pred_boxes = Boxes(inst.pred_boxes.tensor[order])
            out.scores = inst.scores[order]
            out.pred_classes = inst.pred_classes[order]
            results.append(out)
        return results

    def _gt_instances(self, i: int, x: Dict[str, Any]) -> Instances:
        """Ground-truth boxes of one input, scaled from the frame of ``"image"`` to the original."""
        gt = x.get("instances")
        if gt is None or not gt.has("gt_boxes"):
            raise KeyError(
                f"input {i} ({x.get('file_name', 'no file_name')}): BOX_SOURCE='gt' needs "
                "'instances' with gt_boxes (use sam_d2.data.mappers.DetectorPromptedSamMapper)"
            )
        ih, iw = x["image"].shape[-2:] if "image" in x else gt.image_size
        h, w = int(x.get("height", ih)), int(x.get("width", iw))
        boxes = gt.gt_boxes.tensor.to(self.device).float()
        boxes = boxes * boxes.new_tensor([w / iw, h / ih, w / iw, h / ih])
        out = Instances((h, w))
        out.pred_boxes = Boxes(boxes)
        out.scores = torch.ones(len(boxes), device=self.device)
        out.pred_classes = gt.gt_classes.to(self.device)
        return out

    # ------------------------------------------------------------------------------- SAM
    def sam_images(self, batched_inputs: List[Dict[str, Any]]) -> List[Tensor]:
        """(3, h, w) RGB SAM inputs in the SAM's frame (``sam.input_size``), on the device.

        ``"sam_image"`` when the mapper made it; else ``"image"`` resized here (bilinear with
        antialiasing; rounded to integers in SAM's pad frame, whose inputs are uint8).
        """
        images = []
        for x in batched_inputs:
            if "sam_image" in x:
                images.append(x["sam_image"].to(self.device))
                continue
            img = x["image"].to(self.device)
            if self.detector_input_format == "BGR":
                img = img.flip(0)
            h = int(x.get("height", img.shape[1]))
            w = int(x.get("width", img.shape[2]))
            size = self.sam.input_size((h, w))
            if tuple(img.shape[1:]) != size:
                img = F.interpolate(
                    img[None].float(), size, mode="bilinear", align_corners=False, antialias=True
                )[0]
                if self.sam.frame == "pad":
                    img = img.round().clamp(0, 255)
            images.append(img)
        return images

    def predict_masks(
        self, batched_inputs: List[Dict[str, Any]], boxes: Sequence[Tensor]
    ) -> List[Tuple[Tensor, Tensor]]:
        """SAM masks for box prompts given in original-image pixels.

        Args:
            batched_inputs: the input dicts (``"sam_image"``, ``"height"``, ``"width"``).
            boxes: per image, (N, 4) XYXY boxes in original pixels.

        Returns:
            per image, masks (N, height, width) bool and their predicted IoUs (N,).
        """
        images = self.sam_images(batched_inputs)
        embeddings = self.sam.embed_images(images)
        out = []
        for i, (x, img, b) in enumerate(zip(batched_inputs, images, boxes)):
            input_hw = (int(img.shape[1]), int(img.shape[2]))
            out_hw = (int(x.get("height", input_hw[0])), int(x.get("width", input_hw[1])))
            sam_boxes = self.to_sam_frame(b.to(self.device).float(), out_hw, input_hw)
            low_res, iou = self.decode_boxes(embeddings[i : i + 1], sam_boxes)
            masks = self.sam.logits_to_masks(low_res, input_hw, out_hw, self.sam.prompt_chunk_size)
            out.append((masks[:, 0], iou))
        return out

    @staticmethod
    def to_sam_frame(
        boxes: Tensor, original_hw: Tuple[int, int], input_hw: Tuple[int, int]
    ) -> Tensor:
        """(N, 4) XYXY boxes from original pixels into SAM's resized frame, clipped to it."""
        (h, w), (ih, iw) = original_hw, input_hw
        scaled = boxes * boxes.new_tensor([iw / w, ih / h, iw / w, ih / h])
        return torch.stack(
            [
                scaled[:, 0].clamp(0, iw),
                scaled[:, 1].clamp(0, ih),
                scaled[:, 2].clamp(0, iw),
                scaled[:, 3].clamp(0, ih),
            ],
            dim=1,
        )

    def decode_boxes(self, embedding: Tensor, boxes: Tensor) -> Tuple[Tensor, Tensor]:
        """Most confident mask per box, then the optional refinement pass.

        Args:
            embedding: (1, C, h, w) image embedding.
            boxes: (N, 4) boxes in SAM's input frame.

        Returns:
            low-res logits (N, 1, 256, 256) and predicted IoUs (N,) of the final masks.
        """
        sam = self.sam
        low_res, iou = sam.decode_chunked(embedding, {"boxes": boxes}, self.multimask_output)
        best = iou.argmax(dim=1) if iou.shape[0] else iou.new_zeros(0, dtype=torch.long)
        rows = torch.arange(low_res.shape[0], device=low_res.device)
        low_res, iou = low_res[rows, best][:, None], iou[rows, best]
        if self.refine and boxes.shape[0]:
            prompts = {"boxes": boxes, "mask_inputs": low_res}
            low_res, iou = sam.decode_chunked(embedding, prompts, False)
            iou = iou[:, 0]
        return low_res, iou
