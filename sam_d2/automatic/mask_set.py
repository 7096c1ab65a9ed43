"""``MaskSet``: the masks the generator found in one image, as device tensors, and their records.

A :class:`MaskSet` is what the generator works on between stages (filtering, NMS, clean-up) and
what the proposals meta-architecture consumes; :meth:`MaskSet.to_records` turns it into the
official ``SamAutomaticMaskGenerator`` output (a list of dicts).
"""

from dataclasses import dataclass, fields
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .rle import PackedRle

__all__ = ["MaskSet", "OUTPUT_MODES"]

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")


@dataclass
class MaskSet:
    """N masks of one (H, W) image with their per-mask data, all on one device.

    Attributes:
        rles: the masks, encoded (:class:`PackedRle` in the image frame).
        boxes: (N, 4) int64 XYXY, inclusive (x1, y1), image frame.
        areas: (N,) int64 mask areas in pixels.
        predicted_iou: (N,) float32, the decoder's IoU prediction.
        stability_score: (N,) float32 (NaN for a mask that is empty even at the low threshold).
        points: (N, 2) float64 (x, y) point prompt of each mask, image frame.
        crop_boxes: (N, 4) int64 XYXY (exclusive x1, y1) crop each mask was predicted in.
        low_res_logits: optional (N, 4h, 4w) float32 decoder logits of each mask (kept only on
            request, see ``AutomaticMaskGenerator(keep_low_res_logits=True)``), in the padded
            encoder frame of the crop the mask came from, before any small-region clean-up.
    """

    rles: PackedRle
    boxes: Tensor
    areas: Tensor
    predicted_iou: Tensor
    stability_score: Tensor
    points: Tensor
    crop_boxes: Tensor
    low_res_logits: Optional[Tensor] = None

    def __len__(self) -> int:
        return len(self.rles)

    @property
    def image_size(self) -> Tuple[int, int]:
        return self.rles.size

    @classmethod
    def empty(cls, image_hw: Tuple[int, int], device: torch.device) -> "MaskSet":
        i64 = dict(dtype=torch.int64, device=device)
        f32 = dict(dtype=torch.float32, device=device)
        return cls(
            rles=PackedRle.empty(image_hw, device),
            boxes=torch.zeros(0, 4, **i64),
            areas=torch.zeros(0, **i64),
            predicted_iou=torch.zeros(0, **f32),
            stability_score=torch.zeros(0, **f32),
            points=torch.zeros(0, 2, dtype=torch.float64, device=device),
            crop_boxes=torch.zeros(0, 4, **i64),
        )

    def _tensor_fields(self) -> List[str]:
        return [
            f.name for f in fields(self) if f.name != "rles" and getattr(self, f.name) is not None
        ]

    def select(self, index: Tensor) -> "MaskSet":
        """Masks ``index`` (int64 indexes or an (N,) bool mask), in that order."""
        index = torch.as_tensor(index, device=self.boxes.device)
        if index.dtype == torch.bool:
            index = index.nonzero().flatten()
        return MaskSet(
            rles=self.rles.select(index),
            **{name: getattr(self, name)[index] for name in self._tensor_fields()},
        )

    @classmethod
    def cat(cls, parts: Sequence["MaskSet"]) -> "MaskSet":
        """Concatenate mask sets of the same image."""
        if not parts:
            raise ValueError("MaskSet.cat needs at least one part")
        if len(parts) == 1:
            return parts[0]
        names = parts[0]._tensor_fields()
        if any(p._tensor_fields() != names for p in parts):
            raise ValueError("MaskSet.cat: parts differ in their optional fields")
        return cls(
            rles=PackedRle.cat([p.rles for p in parts]),
            **{name: torch.cat([getattr(p, name) for p in parts]) for name in names},
        )

    def decode_masks(self, chunk_size: int = 64, device: Optional[torch.device] = None) -> Tensor:
        """(N, H, W) bool masks on ``device`` (default: the set's device), decoded in chunks."""
        device = self.boxes.device if device is None else device
        h, w = self.image_size
        out = torch.empty(len(self), h, w, dtype=torch.bool, device=device)
        for start in range(0, len(self), chunk_size):
            idx = torch.arange(start, min(start + chunk_size, len(self)), device=self.boxes.device)
            out[start : start + len(idx)] = self.rles.decode(idx).to(device)
        return out

    def to_records(
        self, output_mode: str = "binary_mask", chunk_size: int = 64
    ) -> List[Dict[str, Any]]:
        """The official generator's output records, in this set's order.

        Each record has ``segmentation`` ((H, W) bool array, or an uncompressed / COCO RLE dict
        per ``output_mode``), ``area`` (int), ``bbox`` (XYWH of the inclusive box, ints),
        ``predicted_iou``, ``stability_score`` (floats), ``point_coords`` ([[x, y]]) and
        ``crop_box`` (XYWH ints).
        """
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if output_mode == "binary_mask":
            dense = self.decode_masks(chunk_size, torch.device("cpu")).numpy()
            segmentations: Sequence[Any] = list(dense)
        elif output_mode == "uncompressed_rle":
            segmentations = self.rles.to_uncompressed()
        else:
            segmentations = self.rles.to_coco()
        boxes = _xyxy_to_xywh(self.boxes).tolist()
        crops = _xyxy_to_xywh(self.crop_boxes).tolist()
        areas = self.areas.tolist()
        ious = self.predicted_iou.tolist()
        stabilities = self.stability_score.tolist()
        points = self.points.tolist()
        return [
            {
                "segmentation": segmentations[i],
                "area": int(areas[i]),
                "bbox": boxes[i],
                "predicted_iou": ious[i],
                "point_coords": [points[i]],
                "stability_score": stabilities[i],
                "crop_box": crops[i],
            }
            for i in range(len(self))
        ]


def _xyxy_to_xywh(boxes: Tensor) -> np.ndarray:
    b = boxes.cpu().numpy().reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
