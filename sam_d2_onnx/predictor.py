"""``SamOnnxPredictor``: sam_d2's ``SamPredictor`` interface on onnxruntime alone (no torch).

Runs the two files written by ``tools/export_onnx.py``: the image encoder (input: the resized
uint8 image; normalisation and padding happen inside the graph) and the prompt encoder + mask
decoder with the official export's inputs and outputs. Imports only numpy, Pillow and onnxruntime,
so a deployment needs neither torch nor Detectron2.
"""

import logging
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import onnxruntime as ort

from . import metadata as md
from .transforms import ResizeLongestSide, as_rgb_uint8

__all__ = ["SamOnnxPredictor", "OnnxModelError", "PromptError"]

logger = logging.getLogger(__name__)

MaybeArray = Optional[np.ndarray]
# Point labels of the decoder graph: 1 fg, 0 bg, 2/3 box corners, -1 padding.
_BOX_CORNER_LABELS = (2.0, 3.0)
_PAD_LABEL = -1.0


class OnnxModelError(ValueError):
    """An ONNX file is missing, not a SAM part, or does not belong with the other file."""


class PromptError(ValueError):
    """A prompt has the wrong shape, an unknown label, or lies outside the image."""


def _open(
    path: str,
    role: str,
    providers: Sequence[str],
    session_options: Optional[ort.SessionOptions],
) -> ort.InferenceSession:
    if not os.path.isfile(path):
        raise OnnxModelError(f"{path}: {role} ONNX file not found")
    try:
        return ort.InferenceSession(path, session_options, providers=list(providers))
    except Exception as e:  # onnxruntime raises its own exception types; keep the first line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise OnnxModelError(f"{path}: not a loadable ONNX model ({first})") from None


def _meta(session: ort.InferenceSession) -> Dict[str, str]:
    return dict(session.get_modelmeta().custom_metadata_map)


class SamOnnxPredictor:
    """Embeds an image once with the ONNX encoder and decodes prompts with the ONNX decoder.

    Mirrors :class:`sam_d2.SamPredictor`: ``set_image``, ``predict``, ``get_image_embedding``,
    ``reset_image`` and the ``transform``, ``original_size``, ``input_size`` and ``is_image_set``
    attributes. ``transform`` has the official ``apply_image`` / ``apply_coords(coords,
    original_size)`` / ``apply_boxes`` interface; embeddings are numpy arrays.
    """

    def __init__(
        self,
        encoder_path: str,
        decoder_path: str,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        variant: Optional[str] = None,
        session_options: Optional[ort.SessionOptions] = None,
    ) -> None:
        """
        Args:
            encoder_path: ``encoder.onnx`` written by sam_d2's export.
            decoder_path: ``decoder.onnx`` (or its int8 version) from the same export; an official
                ``segment_anything`` decoder export with all mask outputs is accepted too.
            providers: onnxruntime execution providers.
            variant: if given ("vit_b", "vit_l", "vit_h"), the files must be of this variant.
            session_options: onnxruntime options of both sessions (e.g. thread counts).

        Raises:
            OnnxModelError: a file is missing, is not the expected part, or the two files come
                from different models (another variant, or other weights).
        """
        self.encoder = _open(encoder_path, "encoder", providers, session_options)
        self.decoder = _open(decoder_path, "decoder", providers, session_options)
        enc, dec = _meta(self.encoder), _meta(self.decoder)
        if enc.get(md.KEY_ROLE) != md.ROLE_ENCODER:
            raise OnnxModelError(
                f"{encoder_path}: expected a sam_d2 image encoder export, found {md.describe(enc)}"
            )
        self.variant = enc.get(md.KEY_VARIANT, "?")
        if variant is not None and self.variant != variant:
            raise OnnxModelError(
                f"{encoder_path}: the encoder is {self.variant}, but {variant} was requested"
            )
        self._check_decoder(decoder_path, dec, encoder_path, enc)
        self.img_size = int(enc[md.KEY_IMG_SIZE])
        emb = self.encoder.get_outputs()[0].shape  # (1, C, h, w)
        self.mask_input_size = (4 * int(emb[2]), 4 * int(emb[3]))
        self.transform = ResizeLongestSide(self.img_size)
        self.reset_image()

    def _check_decoder(
        self, decoder_path: str, dec: Dict[str, str], encoder_path: str, enc: Dict[str, str]
    ) -> None:
        names = tuple(i.name for i in self.decoder.get_inputs())
        if names != md.DECODER_INPUTS:
            raise OnnxModelError(
                f"{decoder_path}: not a SAM decoder: inputs {list(names)}, "
                f"expected {list(md.DECODER_INPUTS)} ({md.describe(dec)})"
            )
        if md.KEY_ROLE not in dec:
            logger.warning(
                "%s has no sam_d2 metadata (an official export?): its variant and weights cannot "
                "be checked against %s",
                decoder_path,
                encoder_path,
            )
            n_masks = self.decoder.get_outputs()[0].shape[1]
            if n_masks == 1:
                raise OnnxModelError(
                    f"{decoder_path}: exported with return_single_mask; the predictor needs all "
                    "mask outputs (export without --return-single-mask)"
                )
            return
        if dec[md.KEY_ROLE] != md.ROLE_DECODER:
            raise OnnxModelError(
                f"{decoder_path}: expected a sam_d2 decoder export, found {md.describe(dec)}"
            )
        if dec.get(md.KEY_VARIANT) != enc.get(md.KEY_VARIANT):
            raise OnnxModelError(
                f"{decoder_path} is a {dec.get(md.KEY_VARIANT)} decoder but {encoder_path} is a "
                f"{enc.get(md.KEY_VARIANT)} encoder; export both from the same model"
            )
        if dec.get(md.KEY_WEIGHTS) != enc.get(md.KEY_WEIGHTS):
            raise OnnxModelError(
                f"{decoder_path} (weights {dec.get(md.KEY_WEIGHTS)}) and {encoder_path} (weights "
                f"{enc.get(md.KEY_WEIGHTS)}) come from different checkpoints; export both from "
                "the same model"
            )
        if dec.get(md.KEY_MASK_OUTPUT) != md.MASK_OUTPUT_ALL:
            raise OnnxModelError(
                f"{decoder_path}: exported with mask output {dec.get(md.KEY_MASK_OUTPUT)!r}; the "
                "predictor needs all mask outputs (export without --return-single-mask)"
            )

    def reset_image(self) -> None:
        """Forget the current image."""
        self.is_image_set = False
        self.features: Optional[np.ndarray] = None
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
        resized = np.ascontiguousarray(self.transform.apply_image(image))
        self.reset_image()
        (self.features,) = self.encoder.run(None, {"image": resized})
        self.original_size = (int(image.shape[0]), int(image.shape[1]))
        self.input_size = (int(resized.shape[0]), int(resized.shape[1]))
        self.is_image_set = True

    def get_image_embedding(self) -> np.ndarray:
        """(1, C, h, w) float32 embedding of the current image."""
        self._require_image()
        return self.features

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
            masks (K, H, W) bool (float32 logits with ``return_logits``), predicted IoUs (K,),
            low-res logits (K, 256, 256); K = 3 or 1.
        """
        self._require_image()
        coords, labels = self._sparse_prompt(point_coords, point_labels, box)
        if mask_input is not None:
            mask = np.asarray(mask_input, dtype=np.float32)
            if mask.shape != (1,) + self.mask_input_size:
                raise PromptError(
                    f"mask_input must be (1, {self.mask_input_size[0]}, {self.mask_input_size[1]})"
                    f", got {mask.shape}"
                )
            mask, has_mask = mask[None], np.ones(1, np.float32)
        elif coords.shape[1] == 0:
            raise PromptError(
                "no prompt given: pass point_coords + point_labels, box or mask_input"
            )
        else:
            mask = np.zeros((1, 1) + self.mask_input_size, np.float32)
            has_mask = np.zeros(1, np.float32)
        masks, iou, low_res = self.decoder.run(
            list(md.DECODER_OUTPUTS),
            {
                "image_embeddings": self.features,
                "point_coords": coords,
                "point_labels": labels,
                "mask_input": mask,
                "has_mask_input": has_mask,
                "orig_im_size": np.array(self.original_size, dtype=np.float32),
            },
        )
        keep = slice(1, None) if multimask_output else slice(0, 1)
        masks, iou, low_res = masks[0, keep], iou[0, keep], low_res[0, keep]
        if not return_logits:
            masks = masks > 0.0
        return masks, iou, low_res

    def _sparse_prompt(
        self, point_coords: MaybeArray, point_labels: MaybeArray, box: MaybeArray
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Points and box corners in the input frame, as the decoder wants them.

        Returns:
            coords (1, T, 2) float32 and labels (1, T) float32: the points, then the box corners
            labelled 2 and 3, or a padding point labelled -1 when there is no box (none at all
            when there is neither, i.e. a mask-only prompt).
        """
        coords = [np.zeros((0, 2))]
        labels = [np.zeros(0)]
        if point_coords is None and point_labels is not None:
            raise PromptError("point_labels were given without point_coords")
        if point_coords is not None:
            if point_labels is None:
                raise PromptError("point_labels must be supplied with point_coords")
            pts = np.asarray(point_coords, dtype=np.float64)
            lab = np.asarray(point_labels)
            if pts.ndim != 2 or pts.shape[1] != 2:
                raise PromptError(f"point_coords must be (P, 2), got {pts.shape}")
            if lab.shape != (pts.shape[0],):
                raise PromptError(f"point_labels must be ({pts.shape[0]},), got {lab.shape}")
            if not np.isin(lab, (-1, 0, 1)).all():
                raise PromptError(
                    "point_labels must be 1 (foreground), 0 (background) or -1 (padding); found "
                    f"{sorted(set(lab[~np.isin(lab, (-1, 0, 1))].tolist()))}"
                )
            coords.append(self._to_input_frame("point_coords", pts))
            labels.append(lab.astype(np.float64))
        if box is not None:
            b = np.asarray(box, dtype=np.float64)
            if b.size != 4:
                raise PromptError(f"box must be (4,) XYXY, got shape {b.shape}")
            b = b.reshape(2, 2)
            if (b[1] < b[0]).any():
                raise PromptError(f"box {b.ravel().tolist()} is not XYXY (x0<=x1, y0<=y1)")
            coords.append(self._to_input_frame("box", b))
            labels.append(np.array(_BOX_CORNER_LABELS))
        elif point_coords is not None:
            coords.append(np.zeros((1, 2)))
            labels.append(np.array([_PAD_LABEL]))
        return (
            np.concatenate(coords)[None].astype(np.float32),
            np.concatenate(labels)[None].astype(np.float32),
        )

    def _to_input_frame(self, name: str, xy: np.ndarray) -> np.ndarray:
        """(P, 2) XY in the original image -> the resized frame; must be finite and inside."""
        if not np.isfinite(xy).all():
            raise PromptError(f"{name} contain NaN or infinite values")
        h, w = self.original_size
        out = (xy[:, 0] < 0) | (xy[:, 0] > w) | (xy[:, 1] < 0) | (xy[:, 1] > h)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise PromptError(
                f"{name}[{i}] = {xy[i].tolist()} lies outside the {h}x{w} image "
                f"(x in [0, {w}], y in [0, {h}])"
            )
        return self.transform.apply_coords(xy, self.original_size)
