"""``SamPredictor``: the official package's stateful, one-image-at-a-time API over :class:`Sam`.

Signatures and return values match ``segment_anything.SamPredictor``: ``set_image`` then any
number of ``predict`` calls with points / box / mask prompts in original image coordinates.
"""

from typing import Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from .data.transforms import ResizeLongestSide
from .modeling.sam import Sam
from .prompts import check_prompts

__all__ = ["SamPredictor"]

MaybeArray = Optional[np.ndarray]


class SamPredictor:
    """Computes an image embedding once and decodes prompts against it."""

    def __init__(self, sam_model: Sam) -> None:
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.img_size)
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
        image = _as_rgb_uint8(image, image_format)
        resized = self.transform.get_transform(image).apply_image(image)
        tensor = torch.as_tensor(np.array(resized), device=self.device)
        self.set_torch_image(tensor.permute(2, 0, 1)[None], image.shape[:2])

    @torch.no_grad()
    def set_torch_image(
        self, transformed_image: Tensor, original_image_size: Tuple[int, ...]
    ) -> None:
        """Embed an already resized image.

        Args:
            transformed_image: (1, 3, h, w) RGB, longest side equal to the encoder input size.
            original_image_size: (H, W) before resizing.
        """
        if (
            transformed_image.dim() != 4
            or transformed_image.shape[:2] != (1, 3)
            or max(transformed_image.shape[2:]) != self.model.img_size
        ):
            raise ValueError(
                f"set_torch_image expects (1, 3, h, w) with longest side {self.model.img_size}, "
                f"got {tuple(transformed_image.shape)}"
            )
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

        Args:
            point_coords: (P, 2) XY pixels.
            point_labels: (P,) 1 foreground, 0 background.
            box: (4,) XYXY pixels.
            mask_input: (1, 256, 256) low-res logits from a previous call.
            multimask_output: return 3 masks instead of 1.
            return_logits: return logits instead of binary masks.

        Returns:
            masks (K, H, W), predicted IoUs (K,), low-res logits (K, 256, 256).
        """
        self._require_image()
        tf = self.transform.get_transform(np.empty(self.original_size + (0,), np.uint8))
        coords = labels = box_t = mask_t = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be supplied with point_coords")
            coords = torch.as_tensor(
                tf.apply_coords(np.array(point_coords, dtype=np.float64).reshape(-1, 2)),
                dtype=torch.float,
                device=self.device,
            )[None]
            labels = torch.as_tensor(point_labels, dtype=torch.int, device=self.device)[None]
        if box is not None:
            # Corners scaled as points (as the official transform does): a flipped box stays
            # flipped and is reported, where Detectron2's apply_box would silently reorder it.
            box_t = torch.as_tensor(
                tf.apply_coords(np.array(box, dtype=np.float64).reshape(-1, 2)),
                dtype=torch.float,
                device=self.device,
            ).reshape(1, 4)
        if mask_input is not None:
            mask_t = torch.as_tensor(mask_input, dtype=torch.float, device=self.device)[None]
        masks, iou, low_res = self.predict_torch(
            coords, labels, box_t, mask_t, multimask_output, return_logits
        )
        return masks[0].cpu().numpy(), iou[0].cpu().numpy(), low_res[0].cpu().numpy()

    @torch.no_grad()
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

        Args:
            point_coords: (B, P, 2); point_labels: (B, P); boxes: (B, 4);
            mask_input: (B, 1, 256, 256).

        Returns:
            masks (B, K, H, W) bool (or logits), IoUs (B, K), low-res logits (B, K, 256, 256).
        """
        self._require_image()
        check_prompts(
            point_coords,
            point_labels,
            boxes,
            mask_input,
            self.input_size,
            self.model.prompt_encoder.mask_input_size,
        )
        low_res, iou = self.model.decode(
            self.features, point_coords, point_labels, boxes, mask_input, multimask_output
        )
        masks = self.model.postprocess_masks(low_res, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low_res

    def get_image_embedding(self) -> Tensor:
        """(1, C, h, w) embedding of the current image."""
        self._require_image()
        return self.features


def _as_rgb_uint8(image: np.ndarray, image_format: str) -> np.ndarray:
    """Validate an image and return it as (H, W, 3) uint8 RGB."""
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype} (scale it to [0, 255] first)")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    image = image[..., :3]
    return image[..., ::-1] if image_format == "BGR" else image
