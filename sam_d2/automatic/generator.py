"""``AutomaticMaskGenerator``: SAM's "segment everything" mode (the SA-1B full-auto stage).

A grid of single foreground points prompts SAM on the whole image and, optionally, on layers of
overlapping crops. Every point yields the decoder's three multimask outputs. Per crop, masks are
kept when their predicted IoU exceeds ``pred_iou_thresh``, their stability score reaches
``stability_score_thresh`` and their box stays away from crop borders that are not image borders;
box NMS (``box_nms_thresh``, ranked by predicted IoU) removes duplicates. Across crops a second
box NMS (``crop_nms_thresh``) prefers masks from smaller crops. Optionally small holes and
islands are removed afterwards (a last NMS prefers masks the clean-up left unchanged).

The constructor, defaults, thresholds and output records are those of
``segment_anything.SamAutomaticMaskGenerator``. The implementation works on batches on the
model's device: masks are filtered, measured and run-length encoded as whole batches
(:class:`~sam_d2.automatic.rle.PackedRle`), logits are upscaled only for masks that passed the
IoU filter, ``points_per_batch`` at a time, and several crops / images share one encoder call.
"""

import logging
import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import batched_nms

from ..data.transforms import frame_transform
from ..modeling.sam import Sam
from ..modeling.speed import autocast, check_dtype
from .grid import crop_boxes, layer_point_grids, scale_grid_to_crop
from .mask_set import OUTPUT_MODES, MaskSet
from .masks import clean_mask, covers_image, masks_to_boxes, near_crop_edge, stability_score
from .rle import PackedRle

__all__ = ["AutomaticMaskGenerator", "check_image"]

logger = logging.getLogger(__name__)

#: Masks whose box comes this close (pixels) to an inner crop border are dropped.
CROP_EDGE_TOLERANCE = 20.0
#: Upper bound on float logits held at crop resolution at once (256 MiB): large crops of huge
#: images are upscaled fewer than ``points_per_batch`` masks at a time.
MAX_UPSCALED_PIXELS = 64 * 1024 * 1024


def check_image(image: Any, index: int = 0) -> np.ndarray:
    """Validate an (H, W, 3) uint8 RGB image and return it as a numpy array."""
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"image {index}: expected an (H, W, 3) uint8 numpy array, got {type(image).__name__}"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"image {index}: expected shape (H, W, 3) (HWC, RGB), got {image.shape}; convert "
            "grayscale / RGBA first (sam_d2.data.image_io.to_rgb_uint8)"
        )
    if image.dtype != np.uint8:
        raise ValueError(
            f"image {index}: expected dtype uint8 with values in [0, 255], got {image.dtype} "
            "(sam_d2.data.image_io.to_rgb_uint8 converts other types)"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image {index}: empty image of shape {image.shape}")
    return image


class AutomaticMaskGenerator:
    """Generates masks for everything in an image; a drop-in for ``SamAutomaticMaskGenerator``.

    Example::

        model = sam_d2.build_sam("vit_h", "sam_vit_h_4b8939.pth").cuda()
        masks = AutomaticMaskGenerator(model).generate(image)  # image: HWC uint8 RGB
    """

    def __init__(
        self,
        model: Sam,
        points_per_side: Optional[int] = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Optional[Sequence[np.ndarray]] = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        *,
        max_mask_area_ratio: Optional[float] = None,
        encoder_batch_size: int = 1,
        keep_low_res_logits: bool = False,
        dtype: str = "fp32",
    ) -> None:
        """
        Arguments, their order and defaults are the official generator's, followed by the
        keyword-only ``max_mask_area_ratio``, ``encoder_batch_size``, ``keep_low_res_logits`` and
        ``dtype``.
        A value of the wrong type or out of range raises ``ValueError`` naming the argument.

        Args:
            model: a :class:`~sam_d2.modeling.sam.Sam` (e.g. from :func:`sam_d2.build_sam`).
            points_per_side: grid points per image side on the whole image (layer 0); None
                when ``point_grids`` are given.
            points_per_batch: prompts decoded together; also the most masks upscaled to crop
                resolution at once (fewer for huge crops, see :data:`MAX_UPSCALED_PIXELS`).
            pred_iou_thresh: keep masks whose predicted IoU is above this (0 disables).
            stability_score_thresh: keep masks whose stability score reaches this (0 disables).
            stability_score_offset: logit offset of the stability score.
            box_nms_thresh: box IoU of the NMS within a crop.
            crop_n_layers: crop layers after the whole image (layer k has 4**k crops).
            crop_nms_thresh: box IoU of the NMS across crops (smaller crops win).
            crop_overlap_ratio: overlap of layer-1 crops as a fraction of the short side.
            crop_n_points_downscale_factor: layer k uses ``points_per_side / factor**k`` points.
            point_grids: explicit normalised (P_k, 2) grids, one per layer (instead of
                ``points_per_side``).
            min_mask_region_area: if > 0, fill holes and remove islands smaller than this many
                pixels, then run NMS again preferring masks that did not change.
            output_mode: "binary_mask", "uncompressed_rle" or "coco_rle" (``segmentation`` of
                the records).
            max_mask_area_ratio: if set (e.g. 0.95 as in SA-1B), drop masks covering at least
                this fraction of the image; off by default like the official generator.
            encoder_batch_size: crops (of one or several images) embedded per encoder call.
            keep_low_res_logits: also keep each mask's (4h, 4w) decoder logits in
                :attr:`MaskSet.low_res_logits` (e.g. for soft mask probabilities; 256 KiB per
                mask at the default size). Records never include them.
            dtype: compute precision of the whole generation (encoder, decoder, upscaling and
                mask measurements) under autocast: "fp32", "bf16" (CPU and GPU) or "fp16"
                (GPU). Reduced precision can flip pixels whose logit is near the threshold and
                change which masks pass the filters.
        """
        if (points_per_side is None) == (point_grids is None):
            raise ValueError("give exactly one of points_per_side and point_grids")
        crop_n_layers = _integer("crop_n_layers", crop_n_layers, 0)
        if point_grids is not None:
            grids = [_point_grid("point_grids", k, g) for k, g in enumerate(point_grids)]
            if len(grids) < crop_n_layers + 1:
                raise ValueError(
                    f"{len(grids)} point grids for {crop_n_layers + 1} layers (crop_n_layers + 1)"
                )
            self.point_grids = grids
        else:
            self.point_grids = layer_point_grids(
                _integer("points_per_side", points_per_side, 1),
                crop_n_layers,
                _integer("crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1),
            )
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, got {output_mode!r}")
        if max_mask_area_ratio is not None:
            max_mask_area_ratio = _real("max_mask_area_ratio", max_mask_area_ratio, 0.0, 1.0)
        if not isinstance(keep_low_res_logits, (bool, np.bool_)):
            raise ValueError(
                f"keep_low_res_logits must be True or False, got {keep_low_res_logits!r}"
            )
        self.model = model
        self.points_per_batch = _integer("points_per_batch", points_per_batch, 1)
        self.pred_iou_thresh = _real("pred_iou_thresh", pred_iou_thresh)
        self.stability_score_thresh = _real("stability_score_thresh", stability_score_thresh)
        self.stability_score_offset = _real("stability_score_offset", stability_score_offset, 0.0)
        self.box_nms_thresh = _real("box_nms_thresh", box_nms_thresh, 0.0, 1.0)
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = _real("crop_nms_thresh", crop_nms_thresh, 0.0, 1.0)
        self.crop_overlap_ratio = _real("crop_overlap_ratio", crop_overlap_ratio, 0.0, 1.0)
        self.crop_n_points_downscale_factor = _integer(
            "crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1
        )
        self.min_mask_region_area = _integer("min_mask_region_area", min_mask_region_area, 0)
        self.output_mode = output_mode
        self.max_mask_area_ratio = max_mask_area_ratio
        self.encoder_batch_size = _integer("encoder_batch_size", encoder_batch_size, 1)
        self.keep_low_res_logits = bool(keep_low_res_logits)
        check_dtype(dtype, model.device)
        self.dtype = dtype
        self.resize = frame_transform(model.frame, model.img_size)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def input_size(self, crop_hw: Sequence[int]) -> Tuple[int, int]:
        """(h, w) of an image or crop of size ``crop_hw`` in the model's input frame."""
        return self.model.input_size(crop_hw)

    # ------------------------------------------------------------------ public API
    def generate(self, image: np.ndarray) -> List[Dict[str, Any]]:
        """Masks of one (H, W, 3) uint8 RGB image as the official records (see
        :meth:`~sam_d2.automatic.mask_set.MaskSet.to_records`)."""
        return self.generate_batch([image])[0]

    def generate_batch(self, images: Sequence[np.ndarray]) -> List[List[Dict[str, Any]]]:
        """:meth:`generate` for several images, sharing encoder batches between them."""
        return [m.to_records(self.output_mode) for m in self.generate_mask_sets(images)]

    def generate_mask_sets(self, images: Sequence[np.ndarray]) -> List[MaskSet]:
        """The masks of each image as a :class:`MaskSet` on the model's device (no records)."""
        images = [check_image(im, i) for i, im in enumerate(images)]
        jobs: List[Tuple[int, List[int], int]] = []
        for i, image in enumerate(images):
            boxes, layers = crop_boxes(image.shape[:2], self.crop_n_layers, self.crop_overlap_ratio)
            jobs.extend((i, box, layer) for box, layer in zip(boxes, layers))
        per_image: List[List[MaskSet]] = [[] for _ in images]
        with torch.no_grad(), autocast(self.device, self.dtype):
            for start in range(0, len(jobs), self.encoder_batch_size):
                chunk = jobs[start : start + self.encoder_batch_size]
                crops = [_crop(images[i], box) for i, box, _ in chunk]
                embeddings, input_sizes = self._embed(crops)
                for k, (i, box, layer) in enumerate(chunk):
                    per_image[i].append(
                        self._process_crop(
                            embeddings[k : k + 1], input_sizes[k], box, layer, images[i].shape[:2]
                        )
                    )
            return [self._merge_crops(parts) for parts in per_image]

    # ------------------------------------------------------------------ stages
    def _embed(self, crops: List[np.ndarray]) -> Tuple[Tensor, List[Tuple[int, int]]]:
        """Resize into the model's frame (:attr:`Sam.frame`) and embed crops in one encoder call."""
        tensors = []
        for crop in crops:
            resized = np.array(self.resize.get_transform(crop).apply_image(crop), copy=True)
            tensors.append(torch.from_numpy(resized).permute(2, 0, 1))
        sizes = [(int(t.shape[1]), int(t.shape[2])) for t in tensors]
        tensors = [t.to(self.device, non_blocking=True) for t in tensors]
        if hasattr(self.model, "embed_images"):  # PromptableSam: honours its encoder dtype
            return self.model.embed_images(tensors), sizes
        return self.model.encode(self.model.preprocess(tensors)), sizes

    def _process_crop(
        self,
        embedding: Tensor,
        input_hw: Tuple[int, int],
        crop_box: List[int],
        layer: int,
        image_hw: Tuple[int, int],
    ) -> MaskSet:
        """All grid points of one crop -> filtered, NMS-ed masks in the image frame."""
        x0, y0, x1, y1 = crop_box
        crop_w, crop_h = x1 - x0, y1 - y0
        points = scale_grid_to_crop(self.point_grids[layer], crop_box)  # crop frame, float64
        to_input = np.array([[input_hw[1] / crop_w, input_hw[0] / crop_h]])
        prompts = torch.as_tensor(points * to_input, dtype=torch.float32, device=self.device)
        in_image = torch.as_tensor(points + np.array([[x0, y0]]), device=self.device)
        parts = [
            self._process_points(
                embedding,
                prompts[s : s + self.points_per_batch],
                in_image[s : s + self.points_per_batch],
                input_hw,
                crop_box,
                image_hw,
            )
            for s in range(0, len(points), self.points_per_batch)
        ]
        masks = MaskSet.cat(parts)
        keep = _nms(masks.boxes, masks.predicted_iou, self.box_nms_thresh)
        masks = masks.select(keep)
        masks.crop_boxes = torch.tensor(crop_box, device=self.device).expand(len(masks), 4)
        return masks

    def _process_points(
        self,
        embedding: Tensor,
        prompts: Tensor,
        points_in_image: Tensor,
        input_hw: Tuple[int, int],
        crop_box: List[int],
        image_hw: Tuple[int, int],
    ) -> MaskSet:
        """One batch of point prompts of a crop -> masks passing the per-mask filters."""
        model = self.model
        labels = torch.ones(len(prompts), 1, dtype=torch.int, device=self.device)
        if self.pred_iou_thresh > 0:  # masks failing the IoU filter are never upscaled
            low_res, iou, prompt = model.decode_selected(
                embedding, prompts[:, None], labels, self.pred_iou_thresh
            )
            iou, points = iou.float(), points_in_image[prompt]
        else:
            low_res, iou = model.decode(embedding, prompts[:, None], labels)
            points = points_in_image.repeat_interleave(low_res.shape[1], dim=0)
            low_res, iou = low_res.flatten(0, 1), iou.flatten().float()
        x0, y0, x1, y1 = crop_box
        crop_hw = (y1 - y0, x1 - x0)
        offset = torch.tensor([x0, y0, x0, y0], device=self.device)
        image_box = [0, 0, image_hw[1], image_hw[0]]
        threshold = model.mask_threshold
        pixels = max(crop_hw[0] * crop_hw[1], model.img_size**2)
        step = max(1, min(self.points_per_batch, MAX_UPSCALED_PIXELS // pixels))
        parts = []
        for s in range(0, len(iou), step):
            logits = model.postprocess_masks(low_res[s : s + step, None], input_hw, crop_hw)[:, 0]
            stability = stability_score(logits, threshold, self.stability_score_offset)
            masks = logits > threshold
            del logits
            boxes = masks_to_boxes(masks) + offset
            areas = masks.sum(dim=(1, 2))
            keep = ~near_crop_edge(boxes, crop_box, image_box, CROP_EDGE_TOLERANCE)
            if self.stability_score_thresh > 0:
                keep &= stability >= self.stability_score_thresh
            keep &= ~covers_image(areas, image_hw[0] * image_hw[1], self.max_mask_area_ratio)
            keep = keep.nonzero().flatten()
            parts.append(
                MaskSet(
                    rles=PackedRle.from_masks(masks[keep], tuple(image_hw), (x0, y0)),
                    boxes=boxes[keep],
                    areas=areas[keep],
                    predicted_iou=iou[s : s + step][keep],
                    stability_score=stability[keep],
                    points=points[s : s + step][keep],
                    crop_boxes=boxes.new_zeros(len(keep), 4),
                    low_res_logits=(
                        low_res[s : s + step][keep].float() if self.keep_low_res_logits else None
                    ),
                )
            )
        if parts:
            return MaskSet.cat(parts)
        empty = MaskSet.empty(tuple(image_hw), self.device)
        if self.keep_low_res_logits:
            empty.low_res_logits = low_res[:0].float()
        return empty

    def _merge_crops(self, parts: List[MaskSet]) -> MaskSet:
        """Concatenate an image's crops; NMS across crops (smaller crops win); clean-up."""
        masks = MaskSet.cat(parts)
        if len(parts) > 1:
            cb = masks.crop_boxes
            crop_area = (cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1])
            masks = masks.select(_nms(masks.boxes, 1 / crop_area, self.crop_nms_thresh))
        if self.min_mask_region_area > 0:
            masks = self._remove_small_regions(masks)
        return masks

    def _remove_small_regions(self, masks: MaskSet, chunk_size: int = 64) -> MaskSet:
        """Fill small holes / remove small islands (OpenCV, per mask), then NMS again with
        masks that did not change ranked first."""
        if len(masks) == 0:
            return masks
        changed_idx: List[Tensor] = []
        new_boxes: List[Tensor] = []
        new_areas: List[Tensor] = []
        new_rles: List[PackedRle] = []
        for start in range(0, len(masks), chunk_size):
            idx = torch.arange(start, min(start + chunk_size, len(masks)), device=self.device)
            dense = masks.rles.decode(idx).cpu().numpy()
            cleaned = [clean_mask(m, self.min_mask_region_area) for m in dense]
            changed = [j for j, (_, was_changed) in enumerate(cleaned) if was_changed]
            if changed:
                new = torch.as_tensor(
                    np.stack([cleaned[j][0] for j in changed]), device=self.device
                )
                changed_idx.append(idx[changed])
                new_boxes.append(masks_to_boxes(new))
                new_areas.append(new.sum(dim=(1, 2)))
                new_rles.append(PackedRle.from_masks(new))
        boxes, areas, rles = masks.boxes, masks.areas, masks.rles
        unchanged = torch.ones(len(masks), dtype=torch.float32, device=self.device)
        if changed_idx:
            idx = torch.cat(changed_idx)
            boxes, areas = boxes.clone(), areas.clone()
            boxes[idx] = torch.cat(new_boxes)
            areas[idx] = torch.cat(new_areas)
            rles = rles.replace(idx, PackedRle.cat(new_rles))
            unchanged[idx] = 0.0
        masks = MaskSet(
            rles=rles,
            boxes=boxes,
            areas=areas,
            predicted_iou=masks.predicted_iou,
            stability_score=masks.stability_score,
            points=masks.points,
            crop_boxes=masks.crop_boxes,
            low_res_logits=masks.low_res_logits,
        )
        thresh = max(self.box_nms_thresh, self.crop_nms_thresh)
        return masks.select(_nms(masks.boxes, unchanged, thresh))


def _integer(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int >= ``minimum``; bools, fractions and other types raise ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _real(name: str, value: Any, low: float = -math.inf, high: float = math.inf) -> float:
    """``value`` as a finite float in [low, high]; bools, strings etc. raise ValueError."""
    ok = isinstance(value, (int, float, np.integer, np.floating))
    if not ok or isinstance(value, (bool, np.bool_)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value}")
    return float(value)


def _point_grid(name: str, layer: int, grid: Any) -> np.ndarray:
    """A normalised (P, 2) point grid with coordinates in [0, 1], as float64."""
    try:
        arr = np.asarray(grid, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}[{layer}] must be a (P, 2) array of numbers") from None
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0:
        raise ValueError(f"{name}[{layer}] must have shape (P, 2) with P >= 1, got {arr.shape}")
    if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
        raise ValueError(f"{name}[{layer}] must hold normalised (x, y) in [0, 1]")
    return arr


def _crop(image: np.ndarray, box: Sequence[int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def _nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Class-agnostic box NMS; indexes of the kept boxes by decreasing score."""
    groups = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
    return batched_nms(boxes.float(), scores, groups, iou_threshold)
