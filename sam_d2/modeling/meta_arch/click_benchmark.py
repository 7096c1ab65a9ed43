"""``SamClickBenchmark``: SAM's single-point valid-mask benchmark as a meta-architecture.

SAM paper §7.1 / appendix D.1 (Fig. 9), the protocol of RITM. For every GT object of an image:

1. click the first point (:mod:`sam_d2.modeling.click_simulation`: the interior point farthest
   from the boundary, or a seeded random interior point);
2. decode all clicks so far, with the previous round's low-res logits of the scored mask as
   ``mask_inputs`` (from the second click on; ``feed_mask_logits``);
3. score the most confident output (largest predicted IoU; the first on ties); at one click SAM
   returns its 3 ambiguity-aware masks (``multimask_first``), with two or more clicks the single
   "multiple prompts" mask (``multimask_after_first`` False): SAM §3, "the fourth mask is never
   returned for a single prompt and is the only mask returned for multiple prompts", and SAM 2's
   interactive evaluation (``multimask_min_pt_num=0``, ``multimask_max_pt_num=1``);
4. record its IoU with the GT at the original image resolution whenever the number of clicks is
   in ``num_points``; at one click also record the "oracle" IoU, the best of the K outputs;
5. click the next point in the error region of the scored mask and repeat up to
   ``max(num_points)`` clicks. An object whose prediction is perfect (no error pixel left that was
   not clicked already) gets no further click and keeps its prediction (and IoU).

Each image is encoded once; every round decodes the clicks of all the image's still-active objects
in one (chunked) decoder call. Only the click sampling (distance transforms) runs per object, in
numpy, on masks cropped to the error region.

Input dicts (from :class:`sam_d2.data.point_mapper.PointEvalDatasetMapper`): ``image``,
``height``/``width`` and ``instances`` with ``gt_masks`` (M, height, width) at the original size
(``BitMasks``, ``PolygonMasks`` or a bool tensor) and optional ``object_ids`` (M,); optional
``image_id``, ``file_name``, ``dataset_name``. Every GT mask must have a pixel (the mapper drops
and counts empty ones); an image without objects is not encoded at all.

Output per image (a dict; tensors on the CPU; M' = objects evaluated, R = ``max(num_points)``):
    point_ious      (M', len(num_points)) float64   IoU of the scored mask after N clicks
    oracle_iou_1pt  (M',) float64                   best IoU of the K outputs at one click
    object_ids      (M',) int64
    point_coords    (M', R, 2) int64 XY clicks, original frame (0 where no click)
    point_labels    (M', R) int64: 1 fg, 0 bg, -1 no click (the object was already perfect)
    num_points      tuple of the N values;  image_id;  dataset_name (or None)
"""

import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from detectron2.config import CfgNode, configurable
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import BitMasks, PolygonMasks
from torch import Tensor, nn

from ..click_simulation import (
    DISTANCE_METHODS,
    Clicks,
    center_points,
    next_clicks,
    object_seed,
    random_points,
)
from ..weights import register_part_loading
from .promptable import PromptableSam

__all__ = ["SamClickBenchmark", "FIRST_POINT_MODES"]

logger = logging.getLogger(__name__)

FIRST_POINT_MODES = ("center", "random")


@META_ARCH_REGISTRY.register()
class SamClickBenchmark(nn.Module):
    """Runs the simulated-click benchmark on the GT objects of each input (module docstring).

    Evaluation only: ``forward`` in training mode raises. The per-object IoUs it returns are
    aggregated by :class:`sam_d2.evaluation.point_miou.PointMIoUEvaluator`.
    """

    @configurable
    def __init__(
        self,
        *,
        sam: PromptableSam,
        num_points: Sequence[int] = (1, 2, 3, 5, 9),
        first_point: str = "center",
        seed: int = 0,
        multimask_first: bool = True,
        multimask_after_first: bool = False,
        feed_mask_logits: bool = True,
        exclude_clicked: bool = True,
        distance_method: str = "cv2",
        max_upsample_elements: int = 1 << 26,
    ) -> None:
        """
        Args:
            sam: the SAM under test, e.g. ``SamClickBenchmark(sam=sam_d2.build_sam("vit_h",
                checkpoint))`` (its ``input_format`` is the channel order of ``"image"``).
            num_points: click counts N at which the IoU is recorded (ascending, >= 1).
            first_point: "center" (farthest from the boundary) or "random" (seeded).
            seed: seed of the "random" first point (per object, see ``object_seed``).
            multimask_first: 3 outputs at one click, the most confident scored.
            multimask_after_first: 3 outputs (most confident scored) also with >= 2 clicks
                instead of SAM's single multi-prompt output.
            feed_mask_logits: feed the previous scored low-res logits back as ``mask_inputs``.
            exclude_clicked: never click a pixel twice (RITM's ``not_clicked_map``).
            distance_method: distance transform engine of the click sampling, "cv2" (RITM's)
                or "scipy" (same clicks, slower; see ``sam_d2.modeling.click_simulation``).
            max_upsample_elements: masks upsampled at once are chunked to at most this many
                pixels (of the larger of img_size^2 and the original size; bounds memory).
        """
        super().__init__()
        points = [int(n) for n in num_points]
        if not points or points != sorted(set(points)) or points[0] < 1:
            raise ValueError(
                f"num_points must be strictly ascending integers >= 1, got {num_points}"
            )
        if first_point not in FIRST_POINT_MODES:
            raise ValueError(f"first_point must be one of {FIRST_POINT_MODES}, got {first_point!r}")
        if distance_method not in DISTANCE_METHODS:
            raise ValueError(
                f"distance_method must be one of {DISTANCE_METHODS}, got {distance_method!r}"
            )
        self.sam = sam
        self.num_points = tuple(points)
        self.first_point = first_point
        self.seed = int(seed)
        self.multimask_first = bool(multimask_first)
        self.multimask_after_first = bool(multimask_after_first)
        self.feed_mask_logits = bool(feed_mask_logits)
        self.exclude_clicked = bool(exclude_clicked)
        self.distance_method = distance_method
        self.max_upsample_elements = int(max_upsample_elements)
        register_part_loading(self, ["sam"])

    @classmethod
    def from_config(cls, cfg: CfgNode) -> Dict[str, Any]:
        pe = cfg.TEST.POINT_EVAL
        return dict(
            sam=PromptableSam(**PromptableSam.from_config(cfg)),
            num_points=tuple(pe.NUM_POINTS),
            first_point=pe.FIRST_POINT,
            seed=pe.SEED,
            multimask_first=pe.MULTIMASK_FIRST,
            multimask_after_first=pe.MULTIMASK_AFTER_FIRST,
            feed_mask_logits=pe.FEED_MASK_LOGITS,
            exclude_clicked=pe.EXCLUDE_CLICKED,
            distance_method=pe.DISTANCE_METHOD,
        )

    @property
    def device(self) -> torch.device:
        return self.sam.device

    # ------------------------------------------------------------------ overridable hooks
    def embed_images(self, images: Sequence[Tensor]) -> Tensor:
        """(B, C, h, w) embeddings of B (3, h, w) RGB images (SAM's encoder)."""
        return self.sam.embed_images(images)

    def decode_points(
        self,
        embedding: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_inputs: Optional[Tensor],
        multimask: bool,
        gt_masks: Tensor,
    ) -> Tuple[Tensor, Tensor]:
        """Decode one round of clicks of A objects of one image.

        Args:
            embedding: (1, C, h, w) image embedding.
            point_coords: (A, n, 2) XY in the resized input frame; point_labels (A, n).
            mask_inputs: (A, 1, 256, 256) previous logits, or None.
            multimask: 3 outputs (True) or 1.
            gt_masks: (A, H, W) bool GT; unused by SAM, available to test oracles.

        Returns:
            low-res logits (A, K, 256, 256) and predicted IoUs (A, K).
        """
        prompts = {
            "point_coords": point_coords,
            "point_labels": point_labels,
            "boxes": None,
            "mask_inputs": mask_inputs,
        }
        return self.sam.decode_chunked(embedding, prompts, multimask)

    def masks_at_original(
        self,
        low_res: Tensor,
        input_hw: Tuple[int, int],
        out_hw: Tuple[int, int],
        gt_masks: Tensor,
    ) -> Tensor:
        """Binary masks at the original resolution of C objects.

        Args:
            low_res: (C, K, 256, 256) logits.
            input_hw: (h, w) of the resized image; out_hw: (H, W) original size.
            gt_masks: (C, H, W) bool GT; unused by SAM, available to test oracles.

        Returns:
            (C, K, H, W) bool.
        """
        return self.sam.logits_to_masks(low_res, input_hw, out_hw, chunk_size=low_res.shape[0])

    # ------------------------------------------------------------------ forward
    def forward(self, batched_inputs: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """Detectron2 contract: list of input dicts -> one result dict per input (module doc)."""
        if self.training:
            raise RuntimeError("SamClickBenchmark only evaluates; call model.eval() first")
        if not batched_inputs:
            raise ValueError("SamClickBenchmark got an empty batch")
        images = self.sam.rgb_images(batched_inputs)
        objects = [
            self._gt_objects(i, x, img) for i, (x, img) in enumerate(zip(batched_inputs, images))
        ]
        with_objects = [i for i, (gt, _) in enumerate(objects) if gt.shape[0] > 0]
        embeddings = self.embed_images([images[i] for i in with_objects]) if with_objects else None
        results = []
        for i, x in enumerate(batched_inputs):
            gt, ids = objects[i]
            input_hw = (int(images[i].shape[1]), int(images[i].shape[2]))
            image_key = x.get("image_id", x.get("file_name", i))
            if gt.shape[0] == 0:
                out = self._empty_result(ids)
            else:
                j = with_objects.index(i)
                out = self.evaluate_objects(embeddings[j : j + 1], gt, ids, input_hw, image_key)
            out.update(
                num_points=self.num_points,
                image_id=x.get("image_id"),
                dataset_name=x.get("dataset_name"),
            )
            results.append(out)
        return results

    def _gt_objects(self, i: int, x: Dict[str, Any], image: Tensor) -> Tuple[Tensor, Tensor]:
        """GT masks (M, H, W) bool (CPU) and their ids (M,); every mask must be non-empty."""
        where = f"input {i} ({x.get('file_name', 'no file_name')})"
        if "instances" not in x:
            raise KeyError(
                f"{where} has no 'instances' with gt_masks; use "
                "sam_d2.data.point_mapper.PointEvalDatasetMapper, which keeps GT masks at test time"
            )
        inst = x["instances"]
        height, width = int(x.get("height", image.shape[1])), int(x.get("width", image.shape[2]))
        if not inst.has("gt_masks"):
            raise KeyError(f"{where}: instances have no gt_masks")
        masks = inst.gt_masks
        if isinstance(masks, PolygonMasks):
            masks = BitMasks.from_polygon_masks(masks, height, width)
        masks = masks.tensor if isinstance(masks, BitMasks) else torch.as_tensor(masks)
        masks = masks.to("cpu", torch.bool)
        if masks.dim() != 3 or tuple(masks.shape[1:]) != (height, width):
            raise ValueError(
                f"{where}: gt_masks have shape {tuple(masks.shape)}; expected (M, {height}, "
                f"{width}), the original image size (masks must not be resized with the image)"
            )
        if inst.has("object_ids"):
            ids = torch.as_tensor(inst.object_ids, dtype=torch.int64).cpu()
        else:
            ids = torch.arange(masks.shape[0], dtype=torch.int64)
        empty = np.flatnonzero(~masks.numpy().any(axis=(1, 2)))
        if empty.size:
            raise ValueError(
                f"{where}: objects {ids[empty].tolist()} have an empty GT mask; "
                "PointEvalDatasetMapper drops (and counts) those"
            )
        return masks, ids

    def _empty_result(self, ids: Tensor) -> Dict[str, Any]:
        r = self.num_points[-1]
        return {
            "point_ious": torch.zeros(0, len(self.num_points), dtype=torch.float64),
            "oracle_iou_1pt": torch.zeros(0, dtype=torch.float64),
            "object_ids": ids.new_zeros(0),
            "point_coords": torch.zeros(0, r, 2, dtype=torch.int64),
            "point_labels": torch.zeros(0, r, dtype=torch.int64),
        }

    def _first_clicks(self, gt: np.ndarray, ids: Tensor, image_key: Any) -> Clicks:
        if self.first_point == "center":
            return center_points(gt, self.distance_method)
        rngs = [object_seed(self.seed, image_key, int(k)) for k in ids]
        return random_points(gt, rngs, self.distance_method)

    def evaluate_objects(
        self,
        embedding: Tensor,
        gt: Tensor,
        ids: Tensor,
        input_hw: Tuple[int, int],
        image_key: Any,
    ) -> Dict[str, Tensor]:
        """Run the click loop for the M objects of one image (all objects decoded together).

        Args:
            embedding: (1, C, h, w) image embedding.
            gt: (M, H, W) bool non-empty GT masks on the CPU, original resolution.
            ids: (M,) object ids; input_hw: (h, w) of the resized image.
            image_key: image id (seeds the "random" first point).

        Returns:
            ``point_ious``, ``oracle_iou_1pt``, ``object_ids``, ``point_coords``,
            ``point_labels`` (module docstring).
        """
        m, height, width = gt.shape
        out_hw = (height, width)
        rounds = self.num_points[-1]
        gt_np = gt.numpy()
        gt_dev = gt.to(self.device)
        scale = torch.tensor(
            [input_hw[1] / width, input_hw[0] / height], device=self.device, dtype=torch.float32
        )

        coords = np.zeros((m, rounds, 2), dtype=np.int64)
        labels = np.full((m, rounds), -1, dtype=np.int64)
        active = np.ones(m, dtype=bool)  # objects still clicked on
        current_iou = np.zeros(m, dtype=np.float64)
        point_ious = np.zeros((m, len(self.num_points)), dtype=np.float64)
        oracle = np.zeros(m, dtype=np.float64)
        low_res_dim = tuple(self.sam.prompt_encoder.mask_input_size)
        prev_logits = torch.zeros((m, 1) + low_res_dim, device=self.device)

        clicks = self._first_clicks(gt_np, ids, image_key)
        for r in range(rounds):
            # clicks of round r (an object without a valid click is finished)
            active &= clicks.valid
            coords[active, r] = clicks.coords[active]
            labels[active, r] = clicks.labels[active]
            idx = np.flatnonzero(active)
            if idx.size:
                idx_t = torch.as_tensor(idx, device=self.device)
                everyone = idx.size == m  # skip copies of the GT masks
                gt_active = gt_dev if everyone else gt_dev[idx_t]
                multimask = self.multimask_first if r == 0 else self.multimask_after_first
                pc = torch.as_tensor(coords[idx, : r + 1], device=self.device).float() * scale
                pl = torch.as_tensor(labels[idx, : r + 1], device=self.device)
                mask_in = prev_logits[idx_t] if (self.feed_mask_logits and r > 0) else None
                low_res, iou_pred = self.decode_points(
                    embedding, pc, pl, mask_in, multimask, gt_active
                )
                best = iou_pred.argmax(dim=1)  # first maximum on ties
                chosen = low_res[torch.arange(idx.size, device=low_res.device), best]
                prev_logits[idx_t] = chosen[:, None].to(prev_logits.dtype)
                # first round: upsample every output (the oracle needs them); later: the chosen
                upsample = low_res if r == 0 else chosen[:, None]
                pick = best if r == 0 else torch.zeros_like(best)
                need_next = r + 1 < rounds
                ious, pred_np = self._score(
                    upsample, pick, gt_active, input_hw, out_hw, keep_masks=need_next
                )
                current_iou[idx] = ious[np.arange(idx.size), pick.cpu().numpy()]
                if r == 0:
                    oracle[idx] = ious.max(axis=1)
                if need_next:
                    sub_clicked = coords[idx, : r + 1] if self.exclude_clicked else None
                    gt_sub = gt_np if everyone else gt_np[idx]
                    nxt = next_clicks(gt_sub, pred_np, sub_clicked, self.distance_method)
                    clicks = _scatter_clicks(idx, nxt, m)
            if r + 1 in self.num_points:
                point_ious[:, self.num_points.index(r + 1)] = current_iou
        return {
            "point_ious": torch.from_numpy(point_ious),
            "oracle_iou_1pt": torch.from_numpy(oracle),
            "object_ids": ids.clone(),
            "point_coords": torch.from_numpy(coords),
            "point_labels": torch.from_numpy(labels),
        }

    def _score(
        self,
        low_res: Tensor,
        pick: Tensor,
        gt: Tensor,
        input_hw: Tuple[int, int],
        out_hw: Tuple[int, int],
        keep_masks: bool,
    ) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """IoU of every output with the GT at the original size, and the picked masks.

        Args:
            low_res: (A, K, 256, 256) logits; pick: (A,) index of the scored output.
            gt: (A, H, W) bool on the device.
            keep_masks: also return the picked masks (A, H, W) bool numpy (for the next click).

        Returns:
            ious (A, K) float64 and the picked masks (or None).
        """
        a, k = low_res.shape[:2]
        # postprocess_masks may first upsample to img_size^2 (SAM's pad frame), then to the original
        pixels = max(out_hw[0] * out_hw[1], self.sam.img_size**2)
        per_chunk = max(1, self.max_upsample_elements // (k * pixels))
        ious, picked = [], []
        for s in range(0, a, per_chunk):
            e = min(a, s + per_chunk)
            g = gt[s:e]
            masks = self.masks_at_original(low_res[s:e], input_hw, out_hw, g)
            area_gt = _count(g)
            iou = torch.zeros(e - s, k, dtype=torch.float64)
            for j in range(k):
                inter = _count(masks[:, j] & g)
                iou[:, j] = inter / (_count(masks[:, j]) + area_gt - inter).clamp(min=1)
            ious.append(iou)
            if keep_masks:
                sel = masks[torch.arange(e - s, device=masks.device), pick[s:e]]
                picked.append(sel.cpu().numpy())
        iou = torch.cat(ious).numpy()
        return iou, (np.concatenate(picked) if keep_masks else None)


def _count(masks: Tensor) -> Tensor:
    """(A, H, W) bool -> (A,) float64 pixel counts, on the CPU.

    numpy's ``count_nonzero`` is ~10x faster than ``Tensor.sum`` on CPU bool tensors.
    """
    if masks.device.type == "cpu":
        flat = masks.numpy().reshape(masks.shape[0], -1)
        return torch.from_numpy(np.count_nonzero(flat, axis=1).astype(np.float64))
    return masks.flatten(1).sum(1).cpu().double()


def _scatter_clicks(idx: np.ndarray, new: Clicks, m: int) -> Clicks:
    """Clicks of all M objects: ``new`` at ``idx``, none elsewhere."""
    coords = np.zeros((m, 2), dtype=np.int64)
    labels = np.full((m,), -1, dtype=np.int64)
    valid = np.zeros((m,), dtype=bool)
    distance = np.zeros((m,), dtype=np.float64)
    coords[idx], labels[idx], valid[idx], distance[idx] = (
        new.coords,
        new.labels,
        new.valid,
        new.distance,
    )
    return Clicks(coords, labels, valid, distance)
