"""``SamPredictor``: the official package's stateful, one-image-at-a-time API over :class:`Sam`.

Signatures and return values match ``segment_anything.SamPredictor``: ``set_image`` then any
number of ``predict`` calls with points / box / mask prompts in original image coordinates. The
resize follows the model's frame (``transform`` is :class:`~sam_d2.data.transforms.
ResizeLongestSide` for SAM, :class:`~sam_d2.data.transforms.StretchToSquare` for SAM 2), so a SAM 2
model gives what ``sam2``'s ``SAM2ImagePredictor`` gives.
"""

from typing import Any, Callable, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from sam_d2_onnx.transforms import as_rgb_uint8  # numpy-only, shared with ONNX

from .data.transforms import frame_transform
from .modeling.sam import Sam
from .prompts import PromptError, check_prompts

__all__ = ["SamPredictor"]

MaybeArray = Optional[np.ndarray]


class SamPredictor:
    """Computes an image embedding once and decodes prompts against it."""

    def __init__(self, sam_model: Sam) -> None:
        self.model = sam_model
        self.transform = frame_transform(sam_model.frame, sam_model.img_size)
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    def reset_image(self) -> None:
        """Forget the current image."""
        self.is_image_set = False
        self.features: Optional[Tensor] = None
        self.original_size: Optional[Tuple[int, int]] = None
        self.input_size: Optional[Tuple[int, int]] = None

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed an image.

        Args:
            image: (H, W, 3) uint8 array; grayscale (H, W) or (H, W, 1) is replicated to three
                channels and an alpha channel (H, W, 4) is dropped.
            image_format: "RGB" or "BGR".
        """
        image = as_rgb_uint8(image, image_format)
        tensor = torch.as_tensor(self.transform.apply_image(image), device=self.device)
        self.set_torch_image(tensor.permute(2, 0, 1)[None], image.shape[:2])

    @torch.no_grad()
    def set_torch_image(
        self, transformed_image: Tensor, original_image_size: Tuple[int, ...]
    ) -> None:
        """Embed an already resized image.

        Args:
            transformed_image: (1, 3, h, w) RGB in [0, 255], resized by ``transform``: longest
                side equal to the encoder input size (SAM), or the input square (SAM 2).
            original_image_size: (H, W) before resizing.
        """
        shape = tuple(transformed_image.shape)
        s = self.model.img_size
        stretch = self.model.frame == "stretch"
        if (
            len(shape) != 4
            or shape[:2] != (1, 3)
            or (shape[2:] != (s, s) if stretch else max(shape[2:]) != s)
        ):
            want = f"(1, 3, {s}, {s})" if stretch else f"(1, 3, h, w) with longest side {s}"
            raise ValueError(f"set_torch_image expects {want}, got {shape}")
        self.reset_image()
        self.original_size = (int(original_image_size[0]), int(original_image_size[1]))
        self.input_size = (int(transformed_image.shape[2]), int(transformed_image.shape[3]))
        self.features = self.model.encode(self.model.preprocess([transformed_image[0]]))
        self.is_image_set = True

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("no image embedded yet: call set_image(image) before predicting")

    def predict(
        self,
        point_coords: MaybeArray = None,
        point_labels: MaybeArray = None,
        box: MaybeArray = None,
        mask_input: MaybeArray = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for one prompt given in original image coordinates.

        Every prompt kind is optional, as in the official predictor; with none at all SAM decodes
        its learned "no prompt" embedding. An empty array (``point_coords`` (0, 2) with
        ``point_labels`` (0,), or a ``box`` of size 0) counts as that kind not given. (The official
        predictor instead turns empty points into one padding point, which changes the output.)

        Args:
            point_coords: (P, 2) XY pixels of the original image.
            point_labels: (P,) 1 foreground, 0 background (-1: padding, ignored).
            box: (4,) XYXY pixels of the original image.
            mask_input: (1, 256, 256) low-res logits from a previous call.
            multimask_output: return 3 masks instead of 1.
            return_logits: return logits instead of binary masks.

        Returns:
            masks (K, H, W), predicted IoUs (K,), low-res logits (K, 256, 256).

        Raises:
            PromptError: naming the prompt and quoting its values in the original image frame.
        """
        self._require_image()
        coords, labels, box_t, mask_t = _user_prompts(point_coords, point_labels, box, mask_input)
        if not all(p is None for p in (coords, labels, box_t, mask_t)):
            check_prompts(
                coords,
                labels,
                box_t,
                mask_t,
                self.original_size,
                self.model.prompt_encoder.mask_input_size,
                frame="image",
            )
        if coords is not None:
            coords = self._to_input_frame(coords)
            labels = labels.to(self.device, torch.int)
        if box_t is not None:
            # Corners scaled as points (as the official transform does): a flipped box is
            # reported above, where Detectron2's apply_box would silently reorder it.
            box_t = self._to_input_frame(box_t.reshape(1, 2, 2)).reshape(1, 4)
        if mask_t is not None:
            mask_t = mask_t.to(self.device, torch.float)
        masks, iou, low_res = self._decode(
            coords, labels, box_t, mask_t, multimask_output, return_logits
        )
        return masks[0].cpu().numpy(), iou[0].cpu().numpy(), low_res[0].cpu().numpy()

    def _to_input_frame(self, xy: Tensor) -> Tensor:
        """(..., 2) float64 original-frame XY -> float32 input frame on the device.

        Scaled in float64 and then cast, as the official ``predict`` does.
        """
        scaled = self.transform.apply_coords(xy.numpy(), self.original_size)
        return torch.as_tensor(scaled, dtype=torch.float, device=self.device)

    def predict_torch(
        self,
        point_coords: Optional[Tensor],
        point_labels: Optional[Tensor],
        boxes: Optional[Tensor] = None,
        mask_input: Optional[Tensor] = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Predict masks for B prompts already in the resized ("input") frame.

        Coordinates come from ``transform.apply_coords_torch`` / ``apply_boxes_torch`` (with
        ``original_size``), as in the official predictor. With no prompt at all, B = 1.

        Args:
            point_coords: (B, P, 2); point_labels: (B, P); boxes: (B, 4);
            mask_input: (B, 1, 256, 256).

        Returns:
            masks (B, K, H, W) bool (or logits), IoUs (B, K), low-res logits (B, K, 256, 256)
            (clamped to +-32 for SAM 2, as its predictor does).
        """
        self._require_image()
        if not all(p is None for p in (point_coords, point_labels, boxes, mask_input)):
            check_prompts(
                point_coords,
                point_labels,
                boxes,
                mask_input,
                self.input_size,
                self.model.prompt_encoder.mask_input_size,
            )
        return self._decode(
            point_coords, point_labels, boxes, mask_input, multimask_output, return_logits
        )

    @torch.no_grad()
    def _decode(
        self,
        point_coords: Optional[Tensor],
        point_labels: Optional[Tensor],
        boxes: Optional[Tensor],
        mask_input: Optional[Tensor],
        multimask_output: bool,
        return_logits: bool,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        """Decode validated input-frame prompts; shapes as in :meth:`predict_torch`."""
        low_res, iou = self.model.decode(
            self.features, point_coords, point_labels, boxes, mask_input, multimask_output
        )
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        limit = getattr(self.model.mask_decoder, "returned_logit_limit", None)  # SAM 2: 32
        if limit is not None:
            low_res = low_res.clamp(-limit, limit)
        return masks, iou, low_res

    def get_image_embedding(self) -> Tensor:
        """(1, C, h, w) embedding of the current image."""
        self._require_image()
        return self.features


def _as_tensor(name: str, value: Any, shape: str, ok: Callable[[Tuple[int, ...]], bool]) -> Tensor:
    """A float64 tensor of ``value`` (the caller's numbers, unrounded), shape-checked."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise PromptError(
            f"{name} must be a numeric array of shape {shape}, got {value!r}"
        ) from None
    if not ok(array.shape):
        raise PromptError(f"{name} must have shape {shape}, got {array.shape}")
    return torch.from_numpy(array)


def _user_prompts(
    point_coords: MaybeArray, point_labels: MaybeArray, box: MaybeArray, mask_input: MaybeArray
) -> Tuple[Optional[Tensor], ...]:
    """``predict``'s numpy prompts as float64 tensors (1, P, 2), (1, P), (1, 4), (1, 1, h, w).

    Empty point or box arrays become None (one rule: empty = not given).
    """
    coords = labels = box_t = mask_t = None
    if point_coords is not None:
        if point_labels is None:
            raise PromptError("point_labels must be supplied with point_coords")
        coords = _as_tensor("point_coords", point_coords, "(P, 2)", lambda s: s[-1:] == (2,))
        coords = coords.reshape(1, -1, 2)
        labels = _as_tensor("point_labels", point_labels, "(P,)", lambda s: len(s) <= 1)
        labels = labels.reshape(1, -1)
        if coords.shape[1] == 0 and labels.shape[1] == 0:
            coords = labels = None
    elif point_labels is not None:
        raise PromptError("point_labels were given without point_coords")
    if box is not None:
        box_t = _as_tensor("box", box, "(4,) XYXY", lambda s: int(np.prod(s)) in (0, 4))
        box_t = box_t.reshape(1, 4) if box_t.numel() else None
    if mask_input is not None:
        mask_t = _as_tensor("mask_input", mask_input, "(1, 256, 256)", lambda s: len(s) == 3)[None]
    return coords, labels, box_t, mask_t
